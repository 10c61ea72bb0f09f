"""Coarse-to-fine pose of query images: nearest training views by retrieval, then iNeRF refinement.

With `inerf_topk_restarts = k > 1`, iNeRF starts from each of the k nearest training views and the
result with the lowest final photometric loss is kept (k = 1 is the paper's method).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from common.errors import DataError
from inerf.optimize import PoseRefinement, refine_poses
from inerf.options import InerfOptions


@dataclass
class PoseEstimate:
    """The pose of one query: where retrieval started it and where iNeRF ended."""
    coarse_pose: np.ndarray        # [4,4] float32: the nearest training view's pose
    refined_pose: np.ndarray       # [4,4] float32: after iNeRF
    retrieval_index: int           # training view of the coarse pose
    retrieval_distance: float      # its squared descriptor distance
    topk_indices: list[int]        # the k nearest training views
    topk_distances: list[float]
    restart_rank: int              # which neighbour's refinement won (0 = the nearest)
    start_pose: np.ndarray         # [4,4] the winning refinement's start
    initial_loss: float            # photometric MSE at the start (fixed evaluation pixels)
    final_loss: float              # and at the refined pose
    loss_curve: np.ndarray         # [steps] MSE before each step's update
    sampling: str                  # ray sampling strategy actually used

    def record(self) -> dict:
        """The JSON-ready fields the pipeline writes per image."""
        return {
            "coarse_pose": np.asarray(self.coarse_pose).tolist(),
            "refined_pose": np.asarray(self.refined_pose).tolist(),
            "retrieval_index": int(self.retrieval_index),
            "retrieval_distance": float(self.retrieval_distance),
            "inerf_final_loss": float(self.final_loss),
        }


def estimate_poses(renderer, database, train_views, images, opts: InerfOptions, device, *, retrieval_topk: int = 1,
                   seed: int = 0, progress: bool = True) -> list[PoseEstimate]:
    """Coarse (retrieval) + fine (iNeRF) pose of every query image.

    images: [N,H,W,3] float in [0,1] (or a list of [H,W,3]) at the training resolution.
    database: anything with `query(images, k) -> (indices [N,k], distances [N,k])` (retrieval.database).
    """
    images = np.stack([np.asarray(im, dtype=np.float32) for im in images]) if len(images) else np.zeros((0,))
    if len(images) == 0:
        return []
    h, w = images.shape[1:3]
    if (h, w) != (train_views.height, train_views.width):
        raise DataError(f"query images are {h}x{w} but the training views (and the NeRF) are "
                        f"{train_views.height}x{train_views.width}; load both with the same downscale")
    restarts = opts.inerf_topk_restarts
    topk_idx, topk_dist = database.query(images, k=max(restarts, retrieval_topk))
    restarts = min(restarts, topk_idx.shape[1])
    train_poses = np.asarray(train_views.poses, dtype=np.float32)

    jobs = [(q, r) for q in range(len(images)) for r in range(restarts)]
    best: dict[int, tuple[int, PoseRefinement, int]] = {}
    bar = tqdm(total=len(jobs), desc="pose (retrieval + iNeRF)", unit="query", disable=not progress)
    for start in range(0, len(jobs), opts.inerf_batch):
        chunk = jobs[start:start + opts.inerf_batch]
        q_idx = np.array([q for q, _ in chunk])
        inits = train_poses[[topk_idx[q, r] for q, r in chunk]]
        result = refine_poses(renderer, images[q_idx], inits, train_views.intrinsics, opts, device, seed=seed)
        for j, (q, r) in enumerate(chunk):
            if q not in best or result.final_loss[j] < best[q][1].final_loss[best[q][2]]:
                best[q] = (r, result, j)
        bar.update(len(chunk))
    bar.close()

    out = []
    for q in range(len(images)):
        r, result, j = best[q]
        out.append(PoseEstimate(
            coarse_pose=train_poses[topk_idx[q, 0]].copy(),
            refined_pose=result.poses[j],
            retrieval_index=int(topk_idx[q, 0]),
            retrieval_distance=float(topk_dist[q, 0]),
            topk_indices=[int(i) for i in topk_idx[q]],
            topk_distances=[float(d) for d in topk_dist[q]],
            restart_rank=int(r),
            start_pose=train_poses[topk_idx[q, r]].copy(),
            initial_loss=float(result.initial_loss[j]),
            final_loss=float(result.final_loss[j]),
            loss_curve=result.loss_curves[j],
            sampling=result.sampling[j],
        ))
    return out
