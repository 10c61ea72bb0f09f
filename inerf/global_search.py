"""The global pose fallback and the pose confidence.

A refined pose whose photometric loss stays far above what this NeRF reaches on correct poses is lost:
iNeRF converged in the wrong basin (retrieval put it on the wrong side, and no start was near). Such a
query is compared with a dense set of viewpoints rendered from the frozen NeRF at low resolution (camera
positions covering the sphere at the training cameras' distance, looking at the origin with the training
cameras' mean up vector, times in-plane rolls), by the squared difference of blurred low-resolution
images (the blur tolerates the offset that remains between a candidate and the true view); the best few
distinct candidates are refined by iNeRF and the result with the lowest loss is kept. The candidate
renders depend only on the NeRF and these settings, so a class renders them once (`CandidateViews`,
cached by the caller).

The confidence of a pose is its final loss relative to `threshold`, the loss level above which a pose is
called unsure; the threshold is calibrated on views whose true poses are known (omniposead.pose_calibration).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from common.camera import Intrinsics
from common.rotations import rotation_error_deg
from inerf.estimate import PoseEstimate, further_starts, work_of
from inerf.optimize import refine_poses
from inerf.options import InerfOptions
from nerf.rays import camera_directions, rays_from_poses


def fibonacci_directions(n: int) -> np.ndarray:
    """[n, 3] unit vectors spread evenly over the sphere (golden-angle spiral)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def look_at_origin(position: np.ndarray, up: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """[4,4] OpenGL camera-to-world at `position` looking at the origin (camera -z towards it), its image
    up as close to `up` as possible, then turned by `roll_deg` about the optical axis."""
    back = position / np.linalg.norm(position)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-6:                      # looking along `up`: any right vector will do
        right = np.cross(np.array([1.0, 0.0, 0.0]) if abs(back[0]) < 0.9 else np.array([0.0, 1.0, 0.0]), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    pose = np.eye(4)
    pose[:3, :3] = np.stack([c * right + s * cam_up, -s * right + c * cam_up, back], axis=1)
    pose[:3, 3] = position
    return pose


def candidate_poses(train_poses: np.ndarray, n_positions: int, rolls_deg: tuple[float, ...]) -> np.ndarray:
    """[n_positions * len(rolls), 4, 4] viewpoints over the whole sphere at the training cameras' median
    distance from the origin, up = the training cameras' mean image-up vector."""
    train_poses = np.asarray(train_poses, dtype=np.float64)
    radius = float(np.median(np.linalg.norm(train_poses[:, :3, 3], axis=1)))
    up = train_poses[:, :3, 1].mean(axis=0)
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
    return np.stack([look_at_origin(radius * d, up, roll) for d in fibonacci_directions(n_positions)
                     for roll in rolls_deg]).astype(np.float32)


def low_res(images: np.ndarray, size: tuple[int, int], sigma: float = 1.0) -> np.ndarray:
    """Images [N,H,W,3] area-resampled to size (h, w) and Gaussian-blurred (sigma in low-res pixels)."""
    h, w = size
    out = np.stack([cv2.resize(np.asarray(im, dtype=np.float32), (w, h), interpolation=cv2.INTER_AREA)
                    for im in images])
    if sigma > 0:
        out = np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in out])
    return out


def low_res_shape(height: int, width: int, size: int) -> tuple[int, int, int]:
    """(factor, h, w): the integer downscale that brings the longer side to about `size` pixels."""
    factor = max(1, round(max(height, width) / max(size, 1)))
    return factor, max(1, height // factor), max(1, width // factor)


@dataclass
class CandidateViews:
    """The NeRF rendered at the fallback's candidate viewpoints, at low resolution (blurred)."""
    poses: np.ndarray     # [M,4,4] float32
    images: np.ndarray    # [M,h,w,3] float32, blurred like the queries are

    @functools.cached_property
    def angles(self) -> np.ndarray:
        """[M, M] camera-rotation angles between the candidates, degrees (for picking distinct ones)."""
        return rotation_error_deg(self.poses[:, None], self.poses[None])

    @classmethod
    def render(cls, renderer, train_poses: np.ndarray, height: int, width: int, intrinsics: Intrinsics,
               opts: InerfOptions, device, progress=None, rays_per_call: int = 32768) -> CandidateViews:
        """Render the candidates, many views per render_rays call (a low-res view has few rays), at most
        the renderer's chunk of rays at once."""
        factor, h, w = low_res_shape(height, width, opts.fallback_size)
        poses = candidate_poses(train_poses, opts.fallback_positions, tuple(opts.fallback_rolls))
        device = torch.device(device)
        dirs = camera_directions(h, w, intrinsics.downscaled(factor), device=device)
        per_call = max(1, min(rays_per_call, getattr(renderer, "chunk", rays_per_call)) // (h * w))
        starts = range(0, len(poses), per_call)
        renders = []
        for begin in (progress(starts) if progress else starts):
            c2w = torch.as_tensor(poses[begin:begin + per_call], device=device)
            rays_o, rays_d = rays_from_poses(c2w[:, None, None], dirs[None])
            with torch.no_grad():
                rgb = renderer.render_rays(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3))["rgb"]
            renders.append(rgb.float().clamp(0.0, 1.0).reshape(-1, h, w, 3).cpu().numpy())
        return cls(poses, low_res(np.concatenate(renders), (h, w), sigma=1.0))

    def ranked(self, query: np.ndarray) -> np.ndarray:
        """Candidate indices, most similar to the query [H,W,3] first."""
        small = low_res(query[None], self.images.shape[1:3], sigma=1.0)[0]
        return np.argsort(((self.images - small[None]) ** 2).mean(axis=(1, 2, 3)), kind="stable")

    def state(self) -> dict:
        return {"poses": torch.from_numpy(self.poses), "images": torch.from_numpy(self.images)}

    @classmethod
    def from_state(cls, state: dict) -> CandidateViews:
        return cls(state["poses"].numpy(), state["images"].numpy())


def judged_loss(estimate: PoseEstimate) -> float:
    """The loss a pose's confidence is judged on: without the worst-fitting rays when known."""
    return float(estimate.final_loss if estimate.confidence_loss is None else estimate.confidence_loss)


def lost_queries(estimates: list[PoseEstimate], threshold: float) -> list[int]:
    """The queries whose judged loss is above the threshold."""
    return [q for q, e in enumerate(estimates) if judged_loss(e) > threshold]


def global_fallback(renderer, candidates: CandidateViews, images: np.ndarray, estimates: list[PoseEstimate],
                    threshold: float, intrinsics: Intrinsics, opts: InerfOptions, device,
                    seed: int = 0) -> list[PoseEstimate]:
    """The estimates with every lost query (loss above `threshold`) refined again from its best candidate
    viewpoints (opts.fallback_refine of them, at least inerf_restart_min_angle apart); a query keeps the
    fallback's pose only when its judged loss is lower. `fallback_tried` is set on every lost query."""
    lost = lost_queries(estimates, threshold)
    out = list(estimates)
    if not lost:
        return out
    jobs = [(q, c) for q in lost
            for c in further_starts(candidates.ranked(images[q]), candidates.angles, [], opts.fallback_refine,
                                    opts.inerf_restart_min_angle)]
    results = []
    for begin in range(0, len(jobs), opts.inerf_batch):
        chunk = jobs[begin:begin + opts.inerf_batch]
        refined = refine_poses(renderer, images[[q for q, _ in chunk]],
                               np.stack([candidates.poses[c] for _, c in chunk]), intrinsics, opts, device,
                               seed=seed)
        results += [(refined, row) for row in range(len(chunk))]
    for q in lost:
        best = min((j for j, (qq, _) in enumerate(jobs) if qq == q),
                   key=lambda j: float(results[j][0].final_trimmed[results[j][1]]), default=None)
        rays, samples = work_of([results[j] for j, (qq, _) in enumerate(jobs) if qq == q])
        estimate = dataclasses.replace(out[q], fallback_tried=True, work_rays=out[q].work_rays + rays,
                                       work_samples=out[q].work_samples + samples)
        if best is not None:
            refined, row = results[best]
            if float(refined.final_trimmed[row]) < judged_loss(estimate):
                estimate = dataclasses.replace(
                    estimate, refined_pose=refined.poses[row], start_pose=candidates.poses[jobs[best][1]],
                    final_loss=float(refined.final_loss[row]), confidence_loss=float(refined.final_trimmed[row]),
                    loss_curve=refined.loss_curves[row], fallback_used=True)
        out[q] = estimate
    return out


def with_confidence(estimates: list[PoseEstimate], threshold: float) -> list[PoseEstimate]:
    """The estimates with loss_ratio = judged loss / threshold set (above 1: the pose is unsure)."""
    return [dataclasses.replace(e, loss_ratio=judged_loss(e) / threshold if threshold > 0 else math.inf)
            for e in estimates]
