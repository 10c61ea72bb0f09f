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
from common.rotations import rotation_error_deg
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
    # The work done for each query [B]: rays rendered (the steps' and the two evaluations'), and the field
    # evaluations they cost (MLP samples: fewer than rays x samples per ray where the occupancy grid skips)
    rays: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


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


Rows = slice | torch.Tensor     # the queries of one render call: a slice of the batch, or their indices


def _photometric_loss(renderer, twist, init, dirs, targets, pixels, rows: Rows, samples: torch.Tensor,
                      march: int) -> torch.Tensor:
    """Per-query MSE [b] of the rays `pixels[rows]` rendered from exp(twist) @ init (their field evaluations are
    added to `samples [B]`)."""
    return _ray_errors(renderer, twist, init, dirs, targets, pixels, rows, samples, march).mean(dim=1)


def trimmed_mean(errors: torch.Tensor, trim: float) -> torch.Tensor:
    """Mean [b] of each row of `errors` [b, n] without its `trim` share of largest values."""
    keep = max(1, round(errors.shape[1] * (1.0 - trim)))
    return errors.sort(dim=1).values[:, :keep].mean(dim=1)


def _ray_errors(renderer, twist, init, dirs, targets, pixels, rows: Rows, samples: torch.Tensor,
                march: int = 0) -> torch.Tensor:
    """Squared colour error [b, n] (mean over RGB) of each ray `pixels[rows]` rendered from exp(twist) @ init; the
    field evaluations of each query's rays are added to `samples [B]` (no host sync). `march` > 0: the coarse
    march of an active occupancy grid (inerf_march_samples; 0 = the renderer's training march)."""
    pix = pixels[rows]                                        # [b, n, 2]
    b, n = pix.shape[:2]
    poses = apply_correction(twist[rows], init[rows])         # [b, 4, 4]
    d = dirs[pix[..., 0], pix[..., 1]]                        # [b, n, 3]
    rays_o, rays_d = rays_from_poses(poses[:, None], d)       # [b, n, 3] each
    kw = {"march_samples": march} if march else {}
    out = renderer.render_rays(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), perturb=False, **kw)
    rgb = out["rgb"].float().reshape(b, n, 3)
    if "samples" in out:                                      # a stand-in renderer may not count them
        samples[rows] += out["samples"].detach().reshape(b, n).sum(dim=1).to(samples.dtype)
    batch_idx = (torch.arange(rows.start, rows.start + b, device=pix.device) if isinstance(rows, slice)
                 else rows)[:, None]
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
    samples = torch.zeros(b, dtype=torch.float64, device=device)
    optimizer = torch.optim.Adam([twist], lr=learning_rate(opts, first_step))
    curves = torch.zeros(b, steps, device=device)
    march = opts.inerf_march_samples
    # Converged queries stop (inerf_converge_deg): `active` [B] on the host, `stopped` its complement on the device
    # (None while every query is active), the steps each one ran, and the render calls of the active ones (the
    # batch's slices while every query is active, as before)
    active, steps_run, calls = np.ones(b, dtype=bool), np.zeros(b, dtype=np.int64), groups
    stopped, last_check = None, None

    params = list(renderer.parameters()) if hasattr(renderer, "parameters") else []
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            initial = _evaluate(renderer, twist, init, dirs, targets, eval_pixels, groups, samples, march).mean(dim=1)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(opts, first_step + step)
            pixels = sampler.sample(n_rays)
            if stopped is not None:                                # a stopped query's curve keeps its last loss
                curves[stopped, step] = curves[stopped, step - 1]
            if active.any():
                optimizer.zero_grad(set_to_none=True)
                for rows in calls:
                    per_query = _photometric_loss(renderer, twist, init, dirs, targets, pixels, rows, samples, march)
                    per_query.sum().backward()
                    curves[rows, step] = per_query.detach()
                held = twist.detach().clone() if stopped is not None else None
                optimizer.step()
                if stopped is not None:                            # Adam's momentum must not move a stopped query
                    with torch.no_grad():
                        twist.copy_(torch.where(stopped[:, None], held, twist))
                steps_run += active
            if opts.inerf_converge_deg > 0 and first_step + step + 1 >= opts.inerf_lr_hold \
                    and (step + 1) % opts.inerf_converge_window == 0 and active.any():
                now = apply_correction(twist.detach(), init).cpu().numpy()
                if last_check is not None:
                    active &= ~(pose_change_deg(last_check, now) < opts.inerf_converge_deg)
                    if not active.all():
                        calls = _calls(active, n_rays, opts.inerf_chunk, device)
                        stopped = torch.from_numpy(~active).to(device)
                last_check = now
            if on_step is not None:
                on_step()
        with torch.no_grad():
            final_errors = _evaluate(renderer, twist, init, dirs, targets, eval_pixels, groups, samples, march)
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
        rays=(steps_run + 2) * n_rays,
        samples=samples.round().cpu().numpy().astype(np.int64),
    )


def _evaluate(renderer, twist, init, dirs, targets, pixels, groups, samples: torch.Tensor,
              march: int) -> torch.Tensor:
    """Squared colour errors [B, n] of the fixed evaluation rays."""
    return torch.cat([_ray_errors(renderer, twist, init, dirs, targets, pixels, sl, samples, march)
                      for sl in groups])


def _calls(active: np.ndarray, rays_per_query: int, chunk: int, device) -> list[torch.Tensor]:
    """The render calls of the active queries: their indices, in groups of at most `chunk` rays (_groups)."""
    rows = torch.from_numpy(np.flatnonzero(active)).to(device)
    return [rows[sl] for sl in _groups(len(rows), rays_per_query, chunk)]


def pose_change_deg(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """How far each camera moved [B], in degrees: the larger of its rotation and the angle its centre moved
    as seen from the origin (the object's centre), for poses [B, 4, 4]."""
    rotation = rotation_error_deg(after, before)
    c0, c1 = before[:, :3, 3].astype(np.float64), after[:, :3, 3].astype(np.float64)
    radius = np.maximum(np.linalg.norm(c0, axis=1), 1e-9)
    return np.maximum(rotation, np.degrees(np.linalg.norm(c1 - c0, axis=1) / radius))
