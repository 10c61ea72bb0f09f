"""A last, photometric polish of a query's pose against anomaly-free training photographs (direct alignment).

iNeRF aligns the query with the NeRF's render, which blurs the detail a printed mark or a small part carries; its
pose stays a fraction of a degree off, and at 400 px that misplaces the fine detail of the reference by a pixel.
The training photographs keep that detail and their poses are known: points of their surfaces (each view's NeRF
depth) are projected into the query at the pose being refined, and the query's colour there is compared with the
photograph's. Only a view's textured pixels (a strong image gradient), away from the edges of its depth map, take
part, and a robust loss leaves out what the photographs cannot show (a defect, a highlight, an occlusion).
Pure tensor functions; the twist is applied as iNeRF's is (inerf.se3.apply_correction, world frame).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from common.camera import Intrinsics
from inerf.se3 import apply_correction
from nerf.reprojection import SourceView, backproject, project


@dataclass(frozen=True)
class AlignmentPoints:
    """Surface points [N, 3] of training photographs with their (smoothed) colours [N, 3]."""
    points: Tensor
    colours: Tensor


def _smooth(image: Tensor) -> Tensor:
    """[H, W, 3] -> the 3x3 box mean (border replicated): a wider basin for a pixel-sized start error."""
    x = F.pad(image.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(x, 3, stride=1)[0].permute(1, 2, 0)


def alignment_points(view: SourceView, intrinsics: Intrinsics, count: int, depth_edge: float = 0.01) -> AlignmentPoints:
    """The `count` pixels of `view` with the strongest colour gradient, among those whose NeRF depth is solid and
    varies by less than `depth_edge` (relative) over their 3x3 neighbourhood of the depth map: their world points
    and smoothed colours."""
    height, width = view.image.shape[:2]
    depth = F.interpolate(view.depth[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    padded = F.pad(depth[None, None], (1, 1, 1, 1), mode="replicate")
    high = F.max_pool2d(padded, 3, stride=1)[0, 0]
    low = -F.max_pool2d(-padded, 3, stride=1)[0, 0]
    flat = (low > 0) & (high - low <= depth_edge * depth)
    smooth = _smooth(view.image)
    gy, gx = torch.zeros_like(smooth), torch.zeros_like(smooth)
    gy[1:-1], gx[:, 1:-1] = smooth[2:] - smooth[:-2], smooth[:, 2:] - smooth[:, :-2]
    strength = torch.where(flat, (gx.square() + gy.square()).sum(-1), torch.full_like(depth, -1.0))
    order = torch.argsort(strength.flatten(), descending=True, stable=True)[:count]
    order = order[strength.flatten()[order] > 0]
    points = backproject(depth, view.c2w, intrinsics).reshape(-1, 3)[order]
    return AlignmentPoints(points, smooth.reshape(-1, 3)[order])


def photometric_polish(query: Tensor, c2w: Tensor, targets: Sequence[AlignmentPoints], intrinsics: Intrinsics,
                       steps: int, lr: float, huber: float = 0.1, keep: float = 1.0) -> tuple[Tensor, float, float]:
    """(polished c2w [4, 4], robust loss before, after): the pose of `query` [H, W, 3] that best explains the
    photographs' `targets` where they project, by `steps` Adam steps on a world-frame twist from `c2w` (the step
    size halved for the second half). The loss is the Huber loss (`huber`) of the colour differences, averaged over
    the best-fitting `keep` share of the points that project inside the query (a trimmed loss: where a part is
    missing, the photographs' points on it project onto what the query shows behind it, and an untrimmed loss
    follows them)."""
    height, width = query.shape[:2]
    image = _smooth(query).permute(2, 0, 1)[None]
    points = torch.cat([t.points for t in targets])
    colours = torch.cat([t.colours for t in targets])
    if not len(points):
        return c2w, float("nan"), float("nan")
    twist = torch.zeros(6, dtype=c2w.dtype, device=c2w.device, requires_grad=True)
    optimizer = torch.optim.Adam([twist], lr=lr)

    def loss_at(pose: Tensor) -> Tensor:
        grid, z = project(points, pose, intrinsics, height, width)
        inside = (grid.abs() < 1.0).all(-1) & (z > 0)
        seen = F.grid_sample(image, grid[None, None], mode="bilinear", padding_mode="border",
                             align_corners=False)[0, :, 0].T
        error = F.huber_loss(seen, colours, reduction="none", delta=huber).sum(-1)
        if keep >= 1.0 or not inside.any():
            return (error * inside).sum() / inside.sum().clamp_min(1)
        error = error[inside]
        return error.topk(max(1, int(keep * len(error))), largest=False).values.mean()

    with torch.no_grad():
        before = float(loss_at(c2w))
    for step in range(steps):
        if step == steps // 2:
            for group in optimizer.param_groups:
                group["lr"] = lr / 2
        optimizer.zero_grad()
        loss = loss_at(apply_correction(twist, c2w))
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        polished = apply_correction(twist, c2w)
        after = float(loss_at(polished))
    if not after <= before:
        return c2w, before, before
    return polished.detach(), before, after
