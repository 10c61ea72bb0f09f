"""Camera rays in the shared convention (Blender/OpenGL camera: looks down -z, x right, y up).

Pixel (row j, column i) centre in the camera frame: d = ((i + 0.5 - cx)/fx, -(j + 0.5 - cy)/fy, -1)
(common.camera.Intrinsics; a centred camera has cx = W/2, cy = H/2, fx = fy = focal).
World: rays_d = R @ d, rays_o = camera centre. rays_d is NOT normalised: t is depth along the optical axis.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from common.camera import Intrinsics


def camera_directions(height: int, width: int, intrinsics: Intrinsics, device=None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """[H, W, 3] camera-frame ray directions through the pixel centres (z = -1)."""
    k = intrinsics
    i = (torch.arange(width, device=device, dtype=dtype) + 0.5 - k.cx) / k.fx
    j = (torch.arange(height, device=device, dtype=dtype) + 0.5 - k.cy) / k.fy
    x = i[None, :].expand(height, width)
    y = -j[:, None].expand(height, width)
    return torch.stack((x, y, -torch.ones_like(x)), dim=-1)


def rays_from_poses(c2w: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate camera-frame `dirs [..., 3]` by `c2w [..., 4, 4]` (batch dims broadcast) -> (rays_o, rays_d).

    Written as an elementwise product + sum, not a matmul, so TF32 matmul settings on CUDA
    cannot lower the precision of the rays. Differentiable w.r.t. c2w (iNeRF relies on it).
    """
    rays_d = (c2w[..., :3, :3] * dirs[..., None, :]).sum(dim=-1)
    rays_o = torch.broadcast_to(c2w[..., :3, 3], rays_d.shape)
    return rays_o, rays_d


def image_rays(c2w: Tensor, height: int, width: int, intrinsics: Intrinsics) -> tuple[Tensor, Tensor]:
    """All rays of one [4, 4] camera: (rays_o [H, W, 3], rays_d [H, W, 3]) on c2w's device."""
    dirs = camera_directions(height, width, intrinsics, device=c2w.device, dtype=c2w.dtype)
    return rays_from_poses(c2w, dirs)


def ray_box_interval(rays_o: Tensor, rays_d: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """(t_enter [R], t_exit [R]): where the rays o + t d (`rays_o`, `rays_d` [R, 3]) enter the first and leave the last
    of the axis-aligned boxes [lo, hi] (`lo`, `hi` [K, 3]) they cross (slab test, Kay and Kajiya 1986); t_enter >
    t_exit for a ray that crosses none. Every point of a ray inside a box lies in [t_enter, t_exit]. A direction
    component of zero is taken as a tiny one of the same sign, so such a ray is inside that slab for all t or none."""
    if len(lo) == 0:
        return rays_o.new_full(rays_o.shape[:1], math.inf), rays_o.new_full(rays_o.shape[:1], -math.inf)
    tiny = torch.finfo(rays_d.dtype).tiny ** 0.5
    d = torch.where(rays_d.abs() < tiny, torch.where(rays_d < 0, -tiny, tiny), rays_d)[:, None, :]
    t_lo, t_hi = (lo[None] - rays_o[:, None, :]) / d, (hi[None] - rays_o[:, None, :]) / d       # [R, K, 3]
    enter, leave = torch.minimum(t_lo, t_hi).amax(dim=-1), torch.maximum(t_lo, t_hi).amin(dim=-1)
    crossed = leave >= enter
    return torch.where(crossed, enter, math.inf).amin(dim=-1), torch.where(crossed, leave, -math.inf).amax(dim=-1)
