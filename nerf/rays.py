"""Camera rays in the shared convention (Blender/OpenGL camera: looks down -z, x right, y up).

Pixel (row j, column i) centre in the camera frame: d = ((i + 0.5 - W/2)/f, -(j + 0.5 - H/2)/f, -1).
World: rays_d = R @ d, rays_o = camera centre. rays_d is NOT normalised: t is depth along the optical axis.
"""
from __future__ import annotations

import torch
from torch import Tensor


def camera_directions(height: int, width: int, focal: float, device=None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """[H, W, 3] camera-frame ray directions through the pixel centres (z = -1)."""
    i = (torch.arange(width, device=device, dtype=dtype) + 0.5 - 0.5 * width) / focal
    j = (torch.arange(height, device=device, dtype=dtype) + 0.5 - 0.5 * height) / focal
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


def image_rays(c2w: Tensor, height: int, width: int, focal: float) -> tuple[Tensor, Tensor]:
    """All rays of one [4, 4] camera: (rays_o [H, W, 3], rays_d [H, W, 3]) on c2w's device."""
    dirs = camera_directions(height, width, focal, device=c2w.device, dtype=c2w.dtype)
    return rays_from_poses(c2w, dirs)
