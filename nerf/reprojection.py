"""A reference made of real pixels: anomaly-free training photographs warped to another camera with the NeRF's depth.

The NeRF blurs fine detail; the training views are photographs that keep it. Each pixel of the target camera that
the NeRF sees as solid (opacity >= min_acc) is lifted to its 3-D surface point with the NeRF's depth, projected into
a training view and coloured from it when that view sees the point: the view's own NeRF depth there agrees with the
point's depth (a z-buffer test, relative `tolerance`). Of the views that see it, the colour closest to the NeRF's
is taken (a highlight one view caught is passed over); a pixel no view sees, and the background, keep the NeRF's
colour. Pure tensor functions in the shared camera convention
(nerf.rays: camera looks down -z; depth is measured along the optical axis, so a point is o + depth * d).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from common.camera import Intrinsics
from nerf.rays import image_rays


@dataclass(frozen=True)
class SourceView:
    """One training photograph with what warping needs: image [H, W, 3], its NeRF depth [h, w] (surface depth,
    already divided by opacity; it may be smaller than the image: it is looked up in the same normalised image
    coordinates), camera-to-world [4, 4]."""
    image: Tensor
    depth: Tensor
    c2w: Tensor


def surface_depth(depth: Tensor, acc: Tensor, min_acc: float = 0.5) -> Tensor:
    """The NeRF's expected depth divided by its opacity (the depth of the surface a ray meets); 0 where the ray
    stays below `min_acc` (background)."""
    return torch.where(acc >= min_acc, depth / acc.clamp_min(1e-6), torch.zeros_like(depth))


def backproject(depth: Tensor, c2w: Tensor, intrinsics: Intrinsics) -> Tensor:
    """World points [H, W, 3] of the pixels of camera `c2w` at `depth` [H, W] (along the optical axis)."""
    rays_o, rays_d = image_rays(c2w, depth.shape[0], depth.shape[1], intrinsics)
    return rays_o + depth[..., None] * rays_d


def project(points: Tensor, c2w: Tensor, intrinsics: Intrinsics, height: int, width: int) -> tuple[Tensor, Tensor]:
    """(grid [..., 2] in grid_sample's normalised coordinates (align_corners=False), depth [...] along the optical
    axis; <= 0 behind the camera) of world `points` [..., 3] seen by camera `c2w`."""
    local = ((points - c2w[:3, 3])[..., None, :] * c2w[:3, :3].T).sum(-1)   # R^T (X - o), camera frame
    z = -local[..., 2]
    safe = torch.where(z > 1e-6, z, torch.ones_like(z))
    u = intrinsics.fx * local[..., 0] / safe + intrinsics.cx                 # pixel i's centre is at i + 0.5
    v = -intrinsics.fy * local[..., 1] / safe + intrinsics.cy
    return torch.stack((2.0 * u / width - 1.0, 2.0 * v / height - 1.0), dim=-1), z


def _sample(image: Tensor, grid: Tensor, mode: str) -> Tensor:
    """image [H, W, C] sampled at grid [h, w, 2] -> [h, w, C]."""
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid[None], mode=mode, padding_mode="border",
                        align_corners=False)
    return out[0].permute(1, 2, 0)


def warp_view(points: Tensor, view: SourceView, intrinsics: Intrinsics, tolerance: float,
              depth: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(colour [H, W, 3], seen [H, W] bool) of world `points` [H, W, 3] in `view`: seen where the point projects
    inside the image, in front of the camera, on a surface the view's NeRF depth (or `depth` in its place) puts
    within `tolerance` x depth."""
    height, width = view.image.shape[:2]
    grid, z = project(points, view.c2w, intrinsics, height, width)
    inside = (grid.abs() <= 1.0).all(-1) & (z > 0)
    their_depth = _sample((view.depth if depth is None else depth)[..., None], grid, "nearest")[..., 0]
    seen = inside & (their_depth > 0) & ((z - their_depth).abs() <= tolerance * z)
    return _sample(view.image, grid, "bilinear"), seen


def view_spread(points: Tensor, views: Sequence[SourceView], intrinsics: Intrinsics,
                tolerance: float) -> tuple[Tensor, Tensor]:
    """(spread [H, W], count [H, W]) of world `points` [H, W, 3] in the warped `views`: how far apart the colours of
    the views that see each point are (the mean over those views of the absolute difference from their mean colour,
    summed over RGB; 0 where fewer than two see it), and how many see it. Anomaly-free photographs of the same
    surface point agree; where they do not (a view that sees past an edge its depth misplaces, a highlight one view
    caught, a print the depth shifts), no colour of theirs is a safe reference."""
    warped = [warp_view(points, view, intrinsics, tolerance) for view in views]
    seen = torch.stack([s for _, s in warped]).float()[..., None]          # [V, H, W, 1]
    colours = torch.stack([c for c, _ in warped])                          # [V, H, W, 3]
    count = seen.sum(0)
    mean = (colours * seen).sum(0) / count.clamp_min(1.0)
    spread = ((colours - mean).abs().sum(-1, keepdim=True) * seen).sum(0)[..., 0] / count[..., 0].clamp_min(1.0)
    count = count[..., 0]
    return torch.where(count >= 2, spread, torch.zeros_like(spread)), count


def consistent_depth(depth: Tensor, c2w: Tensor, views: Sequence[SourceView], intrinsics: Intrinsics,
                     tolerance: float, steps: int, step: float, window: int = 5) -> Tensor:
    """The target's surface `depth` [H, W] (0 = background) moved, per pixel, to the one of depth x (1 + k step),
    k in [-steps, steps], at which the warped `views` agree best: the smallest mean absolute difference of their
    colours from their mean over a window x window box, among the pixels at least two views see. The NeRF's
    depth is a little off on fine detail, and each view then shows the surface shifted its own way; the depth at
    which the photographs agree puts their detail back in place. Only the training photographs are compared
    (never the query), so nothing of a defect can be explained away; where fewer than two views see a pixel, or
    where no offset does better than the NeRF's depth (a surface without texture), the depth stays."""
    solid = depth > 0
    best_cost = torch.full_like(depth, float("inf"))
    best = torch.zeros_like(depth)
    for k in sorted(range(-steps, steps + 1), key=abs):          # the NeRF's own depth first: ties keep it
        trial = depth * (1.0 + k * step)
        spread, count = view_spread(backproject(trial, c2w, intrinsics), views, intrinsics, tolerance)
        valid = solid & (count >= 2)
        cost = torch.where(valid, _window_mean(spread, valid, window), torch.full_like(depth, float("inf")))
        better = cost < best_cost
        best_cost = torch.where(better, cost, best_cost)
        best = torch.where(better, trial, best)
    return torch.where(solid & torch.isfinite(best_cost), best, depth)


def reprojected_reference(nerf_rgb: Tensor, depth: Tensor, c2w: Tensor, views: Iterable[SourceView],
                          intrinsics: Intrinsics, tolerance: float, match: Tensor | None = None,
                          window: int = 1, shift: int = 0, nerf_competes: bool = False,
                          fill_views: Iterable[SourceView] = (), band: int = 0) -> tuple[Tensor, Tensor]:
    """(reference [H, W, 3], from_views [H, W] bool): each pixel of the target camera whose surface point (`depth`:
    the target's surface depth, 0 on the background) some of `views` see takes the colour, among theirs, closest to
    `match` [H, W, 3] there (default: the NeRF's `nerf_rgb`); the other pixels keep the NeRF's colour. The closest,
    not the nearest view's: a specular highlight or a reflection that one view caught and the target did not is
    passed over when another view saw the surface without it, while detail the NeRF blurs is the same in every
    view. `window` > 1 compares the colours' mean absolute difference over a window x window box (the pixels the view
    sees) instead of one pixel, so neighbouring pixels tend to come from the same view. `shift` > 0 also tries each
    warped view moved by up to `shift` pixels along each image axis (a block match: the NeRF's depth at a thin part
    or an edge misplaces the warp by a pixel or two). `nerf_competes` lets the NeRF's own colour compete on every
    solid pixel (where the warp of every view is wrong, the blur may be the closer). `fill_views` are tried, the same
    way, only on the solid pixels none of `views` sees (what the nearest views' cameras cannot see of a
    disocclusion, the next views' may), before the NeRF's colour is left there. `band` > 0 also tries the views on
    the background pixels within `band` pixels of the surface, at the depth of the nearest surface around, against
    the NeRF's colour there (a silhouette the NeRF draws a pixel or two short keeps the photographs' colour
    where they show the object); their from_views is True only where a view's colour won."""
    match = nerf_rgb if match is None else match
    edge = torch.zeros_like(depth, dtype=torch.bool)
    if band > 0:
        grown = _nearest_surface_depth(depth, band)
        edge = (depth <= 0) & (grown > 0)
        depth = torch.where(edge, grown, depth)
    points = backproject(depth, c2w, intrinsics)
    reference, solid = nerf_rgb.clone(), depth > 0
    best = torch.full(depth.shape, float("inf"), device=depth.device)
    for fill, group in ((False, views), (True, fill_views)):
        open_pixels = solid & ~torch.isfinite(best) if fill else solid
        if fill and not open_pixels.any():
            break
        for view in group:
            warped, seen_warped = warp_view(points, view, intrinsics, tolerance)
            if band > 0:     # the view's own silhouette is as short as the target's: its depth grown the same
                grown_seen = warp_view(points, view, intrinsics, tolerance, _nearest_surface_depth(view.depth, band))[1]
                seen_warped = torch.where(edge, grown_seen, seen_warped)
            for colour, seen in _shifted(warped, seen_warped, shift):
                error = _window_mean((colour - match).abs().sum(-1), seen & solid, window)
                take = seen & open_pixels & (error < best)
                reference[take] = colour[take]
                best = torch.where(take, error, best)
    from_views = torch.isfinite(best)
    competing = solid if nerf_competes else edge
    if competing.any():
        error = _window_mean((nerf_rgb - match).abs().sum(-1), solid, window)
        keep = competing & (error < best)
        reference[keep] = nerf_rgb[keep]
        from_views = from_views & ~keep
    return reference, from_views


def background_on_rim(reference: Tensor, depth: Tensor, match: Tensor, width: int,
                      background: float) -> tuple[Tensor, Tensor]:
    """(reference [H, W, 3], taken [H, W] bool): on the surface pixels (`depth` > 0) within `width` pixels (a
    (2 width + 1)^2 box) of the background, the plain `background` colour replaces the reference's where it is
    closer to `match` [H, W, 3] (the query), pixel by pixel. A NeRF draws the outline a pixel or two too wide, with
    a dark fringe of its blur; what in the query is not the background colour (a burr outside the outline, a
    stain) is never matched by it."""
    empty = (depth <= 0).float()[None, None]
    rim = (F.max_pool2d(empty, 2 * width + 1, stride=1, padding=width)[0, 0] > 0) & (depth > 0)
    plain = torch.full_like(reference, background)
    taken = rim & ((plain - match).abs().sum(-1) < (reference - match).abs().sum(-1))
    return torch.where(taken[..., None], plain, reference), taken


def _nearest_surface_depth(depth: Tensor, radius: int) -> Tensor:
    """[H, W]: the smallest surface depth (> 0) within a (2 radius + 1)^2 box of each pixel, 0 where there is none."""
    far = torch.where(depth > 0, depth, torch.full_like(depth, float("inf")))
    nearest = -F.max_pool2d(-far[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
    return torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))


def _shifted(colour: Tensor, seen: Tensor, shift: int):
    """(colour, seen) of [H, W, 3] / [H, W] moved by every (dy, dx) in [-shift, shift]^2, the unmoved first; what a
    move brings in from outside the image is not seen."""
    yield colour, seen
    height, width = seen.shape
    padded = F.pad(colour.permute(2, 0, 1), (shift, shift, shift, shift)).permute(1, 2, 0)
    padded_seen = F.pad(seen, (shift, shift, shift, shift))
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            if dy or dx:
                rows, cols = slice(shift + dy, shift + dy + height), slice(shift + dx, shift + dx + width)
                yield padded[rows, cols], padded_seen[rows, cols]


def _window_mean(error: Tensor, valid: Tensor, window: int) -> Tensor:
    """error [H, W] averaged over the `valid` pixels of a window x window box centred on each pixel (the border
    replicated): the pixels a view does not see carry no colour of the surface and take no part."""
    if window <= 1:
        return error
    pad, weight = window // 2, valid.float()
    sums = [F.avg_pool2d(F.pad(x[None, None], (pad, window - 1 - pad, pad, window - 1 - pad), mode="replicate"),
                         window, stride=1)[0, 0] for x in (error * weight, weight)]
    return sums[0] / sums[1].clamp_min(1e-12)
