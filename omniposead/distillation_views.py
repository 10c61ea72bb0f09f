"""The reverse-distillation student's training set (issue 33, OmniAD's two augmentations, each a switch of
anomaly.reverse_distillation.DistillationOptions):

* always: the NeRF's training split (the anomaly-free photographs; the held-out views stay out);
* rd_nerf_views = N: N renders of the class's frozen NeRF at new poses between and around the training views
  (novel_poses);
* rd_aligned: the NeRF's anomaly-free renders at the poses our pipeline estimated for the test queries (the
  cameras of the queries, found by pose estimation; only renders are used, never a test pixel).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from anomaly.reverse_distillation import DistillationOptions


def novel_poses(poses: np.ndarray, count: int, seed: int, spread: float = 0.5) -> np.ndarray:
    """`count` camera-to-world poses [count,4,4] between and around `poses` [N,4,4] (N >= 2): each one starts at a
    seed-drawn training camera a, and turns about the world origin (the object's centre) towards the training
    camera b whose direction is nearest a's, by a fraction t drawn in [-spread, 1 + spread] of the turn that takes a
    to b (t outside [0, 1]: around, beyond either camera); its distance from the origin moves from a's towards b's
    by the same t. A camera that looks at the origin keeps looking at it."""
    poses = np.asarray(poses, dtype=np.float64)
    if len(poses) < 2:
        raise ValueError("novel_poses needs at least two training poses")
    rng = np.random.default_rng(seed)
    centres = poses[:, :3, 3]
    radii = np.linalg.norm(centres, axis=1)
    directions = centres / np.maximum(radii, 1e-9)[:, None]
    cosine = directions @ directions.T
    np.fill_diagonal(cosine, -np.inf)
    out = np.tile(np.eye(4), (count, 1, 1))
    for i in range(count):
        a = int(rng.integers(len(poses)))
        b = int(np.argmax(cosine[a]))
        t = float(rng.uniform(-spread, 1.0 + spread))
        turn = Rotation.from_matrix(poses[b, :3, :3] @ poses[a, :3, :3].T).as_rotvec()
        world = Rotation.from_rotvec(t * turn).as_matrix()
        radius = radii[a] + t * (radii[b] - radii[a])
        out[i, :3, :3] = world @ poses[a, :3, :3]
        out[i, :3, 3] = world @ directions[a] * max(radius, 1e-6)
    return out


def distillation_images(opts: DistillationOptions, train_images: np.ndarray, train_poses: np.ndarray,
                        render: Callable[[np.ndarray], np.ndarray], estimated_poses: np.ndarray | None,
                        seed: int) -> tuple[np.ndarray, dict[str, int]]:
    """(images [M,H,W,3] in [0,1], how many came from each source) for one student: the training photographs,
    plus rd_nerf_views renders at novel_poses of `train_poses`, plus (rd_aligned) renders at `estimated_poses`
    [Q,4,4], the poses the pipeline estimated for the test queries. `render(pose [4,4]) -> [H,W,3]` is the frozen
    NeRF's anomaly-free render."""
    parts = {"training views": np.asarray(train_images, dtype=np.float32)}
    if opts.rd_nerf_views:
        parts["NeRF views"] = np.stack([render(p) for p in novel_poses(train_poses, opts.rd_nerf_views, seed)])
    if opts.rd_aligned:
        if estimated_poses is None or not len(estimated_poses):
            raise ValueError("rd_aligned needs the poses the pipeline estimated for the test queries")
        parts["aligned renders"] = np.stack([render(p) for p in np.asarray(estimated_poses)])
    images = np.concatenate([p.astype(np.float32) for p in parts.values()])
    return images, {name: len(p) for name, p in parts.items()}
