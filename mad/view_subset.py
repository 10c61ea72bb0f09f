"""Training on a subset of the views (the dense-to-sparse view study): which views, by one fixed rule.

`--train_views` is a fraction in (0, 1] (round(fraction x N) views, at least 1) or a whole count > 1 of the
class's N training views. The rule is farthest-point sampling on the camera centres:

1. the first view is drawn by the seed: ``np.random.default_rng(seed).integers(N)``;
2. each next view is the one whose camera centre is farthest (Euclidean) from the nearest view already
   chosen; ties go to the lowest index;
3. the chosen indices are returned in ascending order, so the subset keeps the views' order and the
   trainer's hold-out rule (every holdout_every-th view, nerf.trainer.split_views) applies to the subset.

The same seed and views give the same subset on every machine (numpy's PCG64 and float64 distances). The
pipeline applies it right after loading (omniposead.pipeline.class_train_views), so the NeRF, the retrieval
database, iNeRF's start views, the pose calibration and the residual fit all see only the subset.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from common.errors import DataError
from mad.loader import TrainViews


def subset_size(train_views: float, n_views: int) -> int:
    """How many of `n_views` views `train_views` asks for (a fraction in (0, 1] or a whole count > 1)."""
    if train_views <= 0:
        raise DataError(f"train_views must be > 0, got {train_views}")
    if train_views <= 1:
        return max(1, min(n_views, round(train_views * n_views)))
    count = int(train_views)
    if count != train_views:
        raise DataError(f"train_views = {train_views}: a count must be a whole number (or give a fraction <= 1)")
    if count > n_views:
        raise DataError(f"train_views = {count} but the class has only {n_views} training views")
    return count


def farthest_point_indices(centres: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` indices of the points `centres` [N,3] by farthest-point sampling from a seed-drawn start,
    ascending (the module's rule)."""
    centres = np.asarray(centres, dtype=np.float64)
    n = len(centres)
    if not 1 <= count <= n:
        raise ValueError(f"cannot choose {count} of {n} views")
    chosen = [int(np.random.default_rng(seed).integers(n))]
    nearest = np.linalg.norm(centres - centres[chosen[0]], axis=1)
    for _ in range(count - 1):
        nearest[chosen] = -1.0                      # never pick a chosen view again (argmax: lowest index on ties)
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        np.minimum(nearest, np.linalg.norm(centres - centres[nxt], axis=1), out=nearest)
    return np.array(sorted(chosen), dtype=np.int64)


def select_train_views(views: TrainViews, train_views: float, seed: int) -> TrainViews:
    """`views` itself with all views (train_views = 1), else the subset chosen by the module's rule."""
    n = len(views.images)
    count = subset_size(train_views, n)
    if count == n:
        return views
    idx = farthest_point_indices(views.poses[:, :3, 3], count, seed)
    return dataclasses.replace(views, images=views.images[idx], poses=views.poses[idx],
                               paths=[views.paths[i] for i in idx] if views.paths else [])
