"""The class's pose-unsure threshold, calibrated on views whose true poses are known, and the cached
candidate views of the global pose fallback (inerf.global_search).

Calibration: the held-out training views (the trainer's split; never test images) are refined by iNeRF
with the class's settings from their true poses turned `pose_calibration_offset` degrees about the object
(a typical retrieval error). Their final losses (without the worst-fitting rays, pose_confidence_trim) are
what this NeRF reaches on correct poses of views it was not trained on; threshold = pose_unsure_factor x
their median. Saved in ckpts/<dataset>/<class>/pose_calibration.json under a fingerprint of the NeRF's
weights and the iNeRF options (recomputed when either changes). The candidate renders are saved in
pose_candidates.pt the same way.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.fingerprint import digest
from common.io import save_torch, write_json
from common.progress import progress_bar
from inerf.global_search import CandidateViews
from inerf.optimize import refine_poses
from mad.loader import TrainViews
from mad.sfm.geometry import axis_angle
from nerf.trainer import evenly_chosen, heldout_view_indices
from omniposead.config import OmniposeConfig

CALIBRATION_NAME = "pose_calibration.json"
CANDIDATES_NAME = "pose_candidates.pt"


@dataclass
class PoseCalibration:
    threshold: float          # final iNeRF loss above which a pose is unsure
    median_loss: float        # median final loss of the calibration views
    losses: list[float]       # per calibration view
    views: list[int]          # training-view indices used
    heldout: bool             # False: no held-out split, the views were seen in training (optimistic)
    fingerprint: str

    def record(self) -> dict:
        return dataclasses.asdict(self)


def turned_about_origin(pose: np.ndarray, degrees: float, seed: int) -> np.ndarray:
    """The camera moved on its sphere: rotated `degrees` about the origin around a seeded random axis."""
    rot = axis_angle(np.random.default_rng(seed).normal(size=3), degrees)
    out = np.asarray(pose, dtype=np.float64).copy()
    out[:3, :4] = rot @ out[:3, :4]
    return out.astype(np.float32)


def calibration_fingerprint(cfg: OmniposeConfig, nerf_digest: str, views: list[int]) -> str:
    return digest([("nerf", nerf_digest), ("inerf", json.dumps(cfg.inerf.identity(), sort_keys=True)),
                   ("views", views), ("seed", cfg.run.seed)])


def calibration_views(cfg: OmniposeConfig, n_views: int) -> tuple[list[int], bool]:
    """(at most pose_calibration_views of the held-out views, evenly chosen; whether they were seen in training)."""
    count = cfg.inerf.pose_calibration_views
    indices, seen = heldout_view_indices(n_views, cfg.train.holdout_every, count)
    return evenly_chosen(indices, count), seen


def calibrate(cfg: OmniposeConfig, views: TrainViews, renderer, nerf_digest: str, device) -> PoseCalibration:
    """Refine the calibration views from turned starts; threshold = factor x median final loss."""
    opts = cfg.inerf
    indices, seen = calibration_views(cfg, len(views.images))
    starts = np.stack([turned_about_origin(views.poses[i], opts.pose_calibration_offset, cfg.run.seed + i)
                       for i in indices])
    losses = []
    for begin in range(0, len(indices), opts.inerf_batch):
        chunk = indices[begin:begin + opts.inerf_batch]
        result = refine_poses(renderer, views.images[chunk], starts[begin:begin + len(chunk)], views.intrinsics,
                              opts, device, seed=cfg.run.seed)
        losses += [float(x) for x in result.final_trimmed]
    median = float(np.median(losses))
    return PoseCalibration(opts.pose_unsure_factor * median, median, losses, indices, not seen,
                           calibration_fingerprint(cfg, nerf_digest, indices))


def load_or_calibrate(cfg: OmniposeConfig, views: TrainViews, renderer, nerf_digest: str, device) -> PoseCalibration:
    """The class's calibration from its checkpoint folder when its fingerprint matches, else computed and saved."""
    indices, seen = calibration_views(cfg, len(views.images))
    path = Path(cfg.run.ckpt_dir) / CALIBRATION_NAME
    wanted = calibration_fingerprint(cfg, nerf_digest, indices)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") == wanted:
                return PoseCalibration(**saved)
        except (ValueError, TypeError):
            pass                                        # unreadable or of another version: recompute
    if seen:
        warnings.warn(f"holdout_every = 0: the pose threshold of {cfg.run.class_name} is calibrated on views the "
                      "NeRF was trained on (lower losses than new views): more poses may be called unsure",
                      stacklevel=2)
    calibration = calibrate(cfg, views, renderer, nerf_digest, device)
    write_json(path, calibration.record())
    return calibration


def candidates_fingerprint(cfg: OmniposeConfig, nerf_digest: str, views: TrainViews) -> str:
    opts = cfg.inerf
    return digest([("nerf", nerf_digest), ("positions", opts.fallback_positions), ("rolls", list(opts.fallback_rolls)),
                   ("size", opts.fallback_size), ("train_poses", np.asarray(views.poses, dtype=np.float32)),
                   ("image", (views.height, views.width)), ("intrinsics", repr(views.intrinsics))])


def load_or_render_candidates(cfg: OmniposeConfig, views: TrainViews, renderer, nerf_digest: str, device,
                              progress: bool = True) -> CandidateViews:
    """The fallback's candidate renders from the checkpoint folder when their fingerprint matches, else
    rendered (once per class and NeRF) and saved atomically; loaded weights-only."""
    path = Path(cfg.run.ckpt_dir) / CANDIDATES_NAME
    wanted = candidates_fingerprint(cfg, nerf_digest, views)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("fingerprint") == wanted:
                return CandidateViews.from_state(state)
        except Exception:  # noqa: BLE001 - a damaged or foreign cache is rebuilt
            pass
    bar = (lambda poses: progress_bar(poses, desc=f"{cfg.run.class_name} pose candidates", unit="batch", leave=False)) \
        if progress else None
    candidates = CandidateViews.render(renderer, views.poses, views.height, views.width, views.intrinsics,
                                       cfg.inerf, device, progress=bar)
    save_torch(path, {**candidates.state(), "fingerprint": wanted})
    return candidates
