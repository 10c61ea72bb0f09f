"""Fine pose by iNeRF: optimise a world-frame SE(3) correction of the coarse pose against a frozen NeRF.

`refine_poses` refines a batch of queries together: one twist per query (all zeros at the start),
one Adam optimiser over the [B, 6] twist tensor (Adam is elementwise, so the queries stay
independent), and every step renders the sampled rays of ALL queries in one `render_rays` call
(or in groups of at most ``inerf_chunk`` rays, gradients accumulated) so the GPU stays busy.
Losses are kept on the device and copied to the host once at the end.

`estimate_poses` is the full coarse-to-fine step: retrieval top-1 (or top-k restarts) -> iNeRF.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from common.errors import DataError
from inerf.sampling import PixelSampler
from inerf.se3 import apply_correction
from nerf.rays import camera_directions, rays_from_poses


@dataclass
class PoseRefinement:
    poses: np.ndarray          # [B, 4, 4] float32 refined camera-to-world
    final_loss: np.ndarray     # [B] photometric MSE at the refined pose (fixed evaluation pixels)
    loss_curves: np.ndarray    # [B, steps] MSE at the pose BEFORE each step's update (column 0 = start)
    initial_loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [B] same pixels as final_loss, at the start pose
    sampling: list[str] = field(default_factory=list)  # strategy actually used per query (fallbacks show as "random")


def _opt(cfg, name, default):
    return getattr(cfg, name, default)


def _lr_at(cfg, step: int) -> float:
    """iNeRF schedule: lr * decay^(step / decay_every) (reference code: 0.01 * 0.8^(k/100))."""
    every = max(int(_opt(cfg, "inerf_lr_decay_every", 100)), 1)
    return float(cfg.inerf_lr) * float(_opt(cfg, "inerf_lr_decay", 0.8)) ** (step / every)


def _groups(batch: int, rays_per_query: int, chunk: int) -> list[slice]:
    """Split the queries into as few near-equal groups as keep each render call under `chunk` rays
    (whole queries per call; a single query above `chunk` still gets its own call)."""
    if chunk <= 0 or batch * rays_per_query <= chunk:
        return [slice(0, batch)]
    per_group = max(1, chunk // max(rays_per_query, 1))
    n_groups = -(-batch // per_group)
    bounds = np.linspace(0, batch, n_groups + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _photometric_loss(renderer, twist, init, dirs, targets, pixels, sl: slice) -> torch.Tensor:
    """Per-query MSE [b] of the rays `pixels[sl]` rendered from exp(twist) @ init."""
    pix = pixels[sl]                                          # [b, n, 2]
    b, n = pix.shape[:2]
    poses = apply_correction(twist[sl], init[sl])             # [b, 4, 4]
    d = dirs[pix[..., 0], pix[..., 1]]                        # [b, n, 3]
    rays_o, rays_d = rays_from_poses(poses[:, None], d)       # [b, n, 3] each
    out = renderer.render_rays(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), perturb=False)
    rgb = out["rgb"].float().reshape(b, n, 3)
    batch_idx = torch.arange(sl.start, sl.start + b, device=pix.device)[:, None]
    target = targets[batch_idx, pix[..., 0], pix[..., 1]]     # [b, n, 3]
    return ((rgb - target) ** 2).mean(dim=(1, 2))


def refine_poses(renderer, images, init_poses, focal: float, cfg, device, progress: bool = False) -> PoseRefinement:
    """iNeRF on a batch: images [B,H,W,3] float in [0,1], init_poses [B,4,4] camera-to-world.

    The NeRF stays frozen (its parameters are temporarily excluded from autograd) and is queried
    with ``perturb=False``. Rays: cfg.inerf_rays per query per step, drawn with cfg.inerf_sampling.
    """
    device = torch.device(device)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B,H,W,3], got {images.shape}")
    b, h, w = images.shape[:3]
    steps = int(cfg.inerf_steps)
    n_rays = int(cfg.inerf_rays)
    seed = int(_opt(cfg, "seed", 0))

    targets = torch.from_numpy(images).to(device)
    init = torch.as_tensor(np.asarray(init_poses), dtype=torch.float32, device=device).reshape(b, 4, 4)
    dirs = camera_directions(h, w, float(focal), device=device)
    sampler = PixelSampler(images, strategy=_opt(cfg, "inerf_sampling", "interest_regions"),
                           kernel_size=int(_opt(cfg, "kernel_size", 5)), dil_iter=int(_opt(cfg, "dil_iter", 3)),
                           detector=_opt(cfg, "inerf_detector", "sift"),
                           min_points=int(_opt(cfg, "inerf_min_keypoints", 8)), seed=seed, device=device)
    # Fixed evaluation pixels (depend only on the image and the seed) so the final losses of
    # restarts from different coarse poses of the same query are comparable.
    eval_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    eval_pixels = sampler.sample(n_rays, generator=eval_gen)
    groups = _groups(b, n_rays, int(_opt(cfg, "inerf_chunk", 0)))

    twist = torch.zeros(b, 6, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([twist], lr=_lr_at(cfg, 0))
    curves = torch.zeros(b, steps, device=device)

    params = list(renderer.parameters()) if hasattr(renderer, "parameters") else []
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            initial = _evaluate(renderer, twist, init, dirs, targets, eval_pixels, groups)
        for step in tqdm(range(steps), desc="iNeRF", leave=False, disable=not progress):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, step)
            pixels = sampler.sample(n_rays)
            optimizer.zero_grad(set_to_none=True)
            for sl in groups:
                per_query = _photometric_loss(renderer, twist, init, dirs, targets, pixels, sl)
                per_query.sum().backward()
                curves[sl, step] = per_query.detach()
            optimizer.step()
        with torch.no_grad():
            final = _evaluate(renderer, twist, init, dirs, targets, eval_pixels, groups)
            poses = apply_correction(twist.detach(), init)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)

    return PoseRefinement(
        poses=poses.cpu().numpy().astype(np.float32),
        final_loss=final.cpu().numpy().astype(np.float32),
        loss_curves=curves.cpu().numpy().astype(np.float32),
        initial_loss=initial.cpu().numpy().astype(np.float32),
        sampling=[c.strategy for c in sampler.candidates],
    )


def _evaluate(renderer, twist, init, dirs, targets, pixels, groups) -> torch.Tensor:
    return torch.cat([_photometric_loss(renderer, twist, init, dirs, targets, pixels, sl) for sl in groups])


def estimate_poses(renderer, database, train_views, images, cfg, device, progress: bool = True) -> list[dict]:
    """Coarse (retrieval top-1) + fine (iNeRF) pose of every query image.

    images: [N,H,W,3] float in [0,1] (or a list of [H,W,3]) at the training resolution.
    With cfg.inerf_topk_restarts = k > 1, iNeRF starts from each of the k nearest training views
    and the result with the lowest final loss is kept (k = 1 is the paper's method).
    Returns one dict per image: coarse_pose, refined_pose ([4,4] float32 arrays), retrieval_index,
    retrieval_distance, topk_indices, topk_distances, restart_rank (which neighbour won),
    initial_loss, final_loss, loss_curve ([steps] array), sampling (strategy used).
    """
    images = np.stack([np.asarray(im, dtype=np.float32) for im in images]) if len(images) else np.zeros((0,))
    if len(images) == 0:
        return []
    h, w = images.shape[1:3]
    if (h, w) != (train_views.height, train_views.width):
        raise DataError(f"query images are {h}x{w} but the training views (and the NeRF) are "
                        f"{train_views.height}x{train_views.width}; load both with the same half_res")
    restarts = max(1, int(_opt(cfg, "inerf_topk_restarts", 1)))
    k = max(restarts, int(_opt(cfg, "retrieval_topk", 1)))
    topk_idx, topk_dist = database.query(images, k=k)
    restarts = min(restarts, topk_idx.shape[1])
    train_poses = np.asarray(train_views.poses, dtype=np.float32)

    jobs = [(q, r) for q in range(len(images)) for r in range(restarts)]
    batch = max(1, int(_opt(cfg, "inerf_batch", 16)))
    best: dict[int, tuple[int, PoseRefinement, int]] = {}
    bar = tqdm(total=len(jobs), desc="pose (retrieval + iNeRF)", unit="query", disable=not progress)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        q_idx = np.array([q for q, _ in chunk])
        inits = train_poses[[topk_idx[q, r] for q, r in chunk]]
        result = refine_poses(renderer, images[q_idx], inits, train_views.focal, cfg, device)
        for j, (q, r) in enumerate(chunk):
            if q not in best or result.final_loss[j] < best[q][1].final_loss[best[q][2]]:
                best[q] = (r, result, j)
        bar.update(len(chunk))
    bar.close()

    out = []
    for q in range(len(images)):
        r, result, j = best[q]
        out.append({
            "coarse_pose": train_poses[topk_idx[q, 0]].copy(),
            "refined_pose": result.poses[j],
            "retrieval_index": int(topk_idx[q, 0]),
            "retrieval_distance": float(topk_dist[q, 0]),
            "topk_indices": [int(i) for i in topk_idx[q]],
            "topk_distances": [float(d) for d in topk_dist[q]],
            "restart_rank": int(r),
            "start_pose": train_poses[topk_idx[q, r]].copy(),
            "initial_loss": float(result.initial_loss[j]),
            "final_loss": float(result.final_loss[j]),
            "loss_curve": result.loss_curves[j],
            "sampling": result.sampling[j],
        })
    return out
