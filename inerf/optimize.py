"""Fine pose by iNeRF: optimise a world-frame SE(3) correction of the coarse pose against a frozen NeRF.

`refine_poses` refines a batch of queries together: one twist per query (all zeros at the start),
one Adam optimiser over the [B, 6] twist tensor (Adam is elementwise, so the queries stay
independent), and every step renders the sampled rays of ALL queries in one `render_rays` call
(or in groups of at most ``inerf_chunk`` rays, gradients accumulated) so the GPU stays busy.
Losses are kept on the device and copied to the host once at the end.

The coarse-to-fine step (retrieval, then this refinement) is inerf.estimate.estimate_poses.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from common.camera import Intrinsics
from inerf.options import InerfOptions
from inerf.sampling import PixelSampler
from inerf.se3 import apply_correction
from nerf.rays import camera_directions, rays_from_poses


@dataclass
class PoseRefinement:
    poses: np.ndarray          # [B, 4, 4] float32 refined camera-to-world
    final_loss: np.ndarray     # [B] photometric MSE at the refined pose (fixed evaluation pixels)
    loss_curves: np.ndarray    # [B, steps] MSE at the pose BEFORE each step's update (column 0 = start)
    # [B] photometric MSE on the same pixels as final_loss, at the start pose
    initial_loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    sampling: list[str] = field(default_factory=list)  # strategy actually used per query (fallbacks show as "random")
    # [B] the final loss without the worst-fitting share of rays (pose_confidence_trim): a defect makes a few
    # rays fit badly, a wrong pose most of them; the pose confidence is judged on this one
    final_trimmed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def learning_rate(opts: InerfOptions, step: int) -> float:
    """iNeRF schedule: lr * decay^(max(step - hold, 0) / decay_every) (reference code, hold 0: 0.01 * 0.8^(k/100))."""
    decaying = max(step - opts.inerf_lr_hold, 0)
    return float(opts.inerf_lr) * float(opts.inerf_lr_decay) ** (decaying / max(opts.inerf_lr_decay_every, 1))


def _groups(batch: int, rays_per_query: int, chunk: int) -> list[slice]:
    """Split the queries into as few near-equal groups as keep each render call under `chunk` rays
    (whole queries per call; a single query above `chunk` still gets its own call)."""
    if chunk <= 0 or batch * rays_per_query <= chunk:
        return [slice(0, batch)]
    per_group = max(1, chunk // max(rays_per_query, 1))
    n_groups = -(-batch // per_group)
    bounds = np.linspace(0, batch, n_groups + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _photometric_loss(renderer, twist, init, dirs, targets, pixels, sl: slice) -> torch.Tensor:
    """Per-query MSE [b] of the rays `pixels[sl]` rendered from exp(twist) @ init."""
    return _ray_errors(renderer, twist, init, dirs, targets, pixels, sl).mean(dim=1)


def trimmed_mean(errors: torch.Tensor, trim: float) -> torch.Tensor:
    """Mean [b] of each row of `errors` [b, n] without its `trim` share of largest values."""
    keep = max(1, round(errors.shape[1] * (1.0 - trim)))
    return errors.sort(dim=1).values[:, :keep].mean(dim=1)


def _ray_errors(renderer, twist, init, dirs, targets, pixels, sl: slice) -> torch.Tensor:
    """Squared colour error [b, n] (mean over RGB) of each ray `pixels[sl]` rendered from exp(twist) @ init."""
    pix = pixels[sl]                                          # [b, n, 2]
    b, n = pix.shape[:2]
    poses = apply_correction(twist[sl], init[sl])             # [b, 4, 4]
    d = dirs[pix[..., 0], pix[..., 1]]                        # [b, n, 3]
    rays_o, rays_d = rays_from_poses(poses[:, None], d)       # [b, n, 3] each
    out = renderer.render_rays(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), perturb=False)
    rgb = out["rgb"].float().reshape(b, n, 3)
    batch_idx = torch.arange(sl.start, sl.start + b, device=pix.device)[:, None]
    target = targets[batch_idx, pix[..., 0], pix[..., 1]]     # [b, n, 3]
    return ((rgb - target) ** 2).mean(dim=2)


def refine_poses(renderer, images, init_poses, intrinsics: Intrinsics, opts: InerfOptions, device, seed: int = 0, *,
                 steps: int | None = None, first_step: int = 0,
                 on_step: Callable[[], None] | None = None) -> PoseRefinement:
    """iNeRF on a batch: images [B,H,W,3] float in [0,1], init_poses [B,4,4] camera-to-world, all seen
    through the camera `intrinsics`.

    The NeRF stays frozen (its parameters are temporarily excluded from autograd) and is queried
    with ``perturb=False``. Rays: opts.inerf_rays per query per step, drawn with opts.inerf_sampling;
    `seed` drives the ray sampling. `steps` (default opts.inerf_steps) steps are run with the learning
    rate of steps first_step, first_step + 1, ... (to continue an earlier refinement from its pose);
    `on_step` is called after each one (a progress bar's update).
    """
    device = torch.device(device)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B,H,W,3], got {images.shape}")
    b, h, w = images.shape[:3]
    steps = int(opts.inerf_steps if steps is None else steps)
    n_rays = int(opts.inerf_rays)

    targets = torch.from_numpy(images).to(device)
    init = torch.as_tensor(np.asarray(init_poses), dtype=torch.float32, device=device).reshape(b, 4, 4)
    dirs = camera_directions(h, w, intrinsics, device=device)
    sampler = PixelSampler(images, strategy=opts.inerf_sampling, kernel_size=opts.kernel_size,
                           dil_iter=opts.dil_iter, detector=opts.inerf_detector,
                           min_points=opts.inerf_min_keypoints, seed=seed, device=device)
    # Fixed evaluation pixels (depend only on the image and the seed, not on the batch) so the final
    # losses of restarts from different coarse poses of the same query are comparable.
    eval_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    eval_pixels = sampler.sample(n_rays, generator=eval_gen, same_draw=True)
    groups = _groups(b, n_rays, opts.inerf_chunk)

    twist = torch.zeros(b, 6, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([twist], lr=learning_rate(opts, first_step))
    curves = torch.zeros(b, steps, device=device)

    params = list(renderer.parameters()) if hasattr(renderer, "parameters") else []
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            initial = _evaluate(renderer, twist, init, dirs, targets, eval_pixels, groups).mean(dim=1)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(opts, first_step + step)
            pixels = sampler.sample(n_rays)
            optimizer.zero_grad(set_to_none=True)
            for sl in groups:
                per_query = _photometric_loss(renderer, twist, init, dirs, targets, pixels, sl)
                per_query.sum().backward()
                curves[sl, step] = per_query.detach()
            optimizer.step()
            if on_step is not None:
                on_step()
        with torch.no_grad():
            final_errors = _evaluate(renderer, twist, init, dirs, targets, eval_pixels, groups)
            final, final_trimmed = final_errors.mean(dim=1), trimmed_mean(final_errors, opts.pose_confidence_trim)
            poses = apply_correction(twist.detach(), init)
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)

    return PoseRefinement(
        poses=poses.cpu().numpy().astype(np.float32),
        final_loss=final.cpu().numpy().astype(np.float32),
        loss_curves=curves.cpu().numpy().astype(np.float32),
        initial_loss=initial.cpu().numpy().astype(np.float32),
        final_trimmed=final_trimmed.cpu().numpy().astype(np.float32),
        sampling=[c.strategy for c in sampler.candidates],
    )


def _evaluate(renderer, twist, init, dirs, targets, pixels, groups) -> torch.Tensor:
    """Squared colour errors [B, n] of the fixed evaluation rays."""
    return torch.cat([_ray_errors(renderer, twist, init, dirs, targets, pixels, sl) for sl in groups])
