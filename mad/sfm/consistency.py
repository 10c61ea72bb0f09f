"""Flipped-view check of a reconstruction: each registered view against its strongest matched partners.

On near-symmetric objects COLMAP can register a view with a flipped orientation or on the wrong side.
The verified matches between two views (found before mapping, knowing nothing of the model) must agree
with the epipolar geometry the recovered poses imply; a flipped view disagrees with most partners.
Pure numpy: the matches come in as pixel arrays (mad.sfm.colmap reads them from the database).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.rotations import rotation_angle_deg
from mad.sfm.geometry import skew


@dataclass(frozen=True)
class MatchedPair:
    """The verified inlier matches of two views: pixel positions xy1 <-> xy2 [m,2], and the relative
    rotation cam2_from_cam1 [3,3] the two-view geometry estimated (None when not stored)."""
    image1: int
    image2: int
    xy1: np.ndarray
    xy2: np.ndarray
    rotation: np.ndarray | None = None


@dataclass(frozen=True)
class ViewConsistency:
    agreement: float    # median over the strongest partners of the fraction of matches within max_px
    rot_deg: float      # median disagreement of the recovered and two-view relative rotations (nan: none)
    partners: int


def sampson_px(xy1: np.ndarray, xy2: np.ndarray, fundamental: np.ndarray) -> np.ndarray:
    """Sampson distance in pixels of correspondences xy1 <-> xy2 [m,2] under F (x2^T F x1 = 0)."""
    h1 = np.concatenate([xy1, np.ones((len(xy1), 1))], 1)
    h2 = np.concatenate([xy2, np.ones((len(xy2), 1))], 1)
    fx1 = h1 @ fundamental.T
    ftx2 = h2 @ fundamental
    num = (h2 * fx1).sum(1) ** 2
    den = fx1[:, 0] ** 2 + fx1[:, 1] ** 2 + ftx2[:, 0] ** 2 + ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-300))


def fundamental_from_poses(cam1_from_world: np.ndarray, cam2_from_world: np.ndarray, k_mat: np.ndarray) -> np.ndarray:
    """F of two OpenCV cameras [R|t] (3x4) sharing the calibration K."""
    r1, t1 = cam1_from_world[:, :3], cam1_from_world[:, 3]
    r2, t2 = cam2_from_world[:, :3], cam2_from_world[:, 3]
    r21 = r2 @ r1.T
    k_inv = np.linalg.inv(k_mat)
    return k_inv.T @ skew(t2 - r21 @ t1) @ r21 @ k_inv


def neighbour_consistency(pairs: list[MatchedPair], cam_from_world: dict[int, np.ndarray], k_mat: np.ndarray,
                          top_k: int = 8, max_px: float = 2.0) -> dict[int, ViewConsistency]:
    """Per registered view, over its `top_k` partners with the most verified matches:
      * agreement: the fraction of the pair's matches with Sampson distance < max_px under the fundamental
        matrix the recovered poses and intrinsics imply;
      * rot_deg: the angle between the recovered relative rotation and the two-view estimate (made with
        the prior intrinsics, so a few degrees are normal).
    A view registered flipped or on the wrong side has agreement near 0 and rot_deg of tens of degrees."""
    per_view: dict[int, list[tuple[int, float, float]]] = {}
    for pair in pairs:
        if pair.image1 not in cam_from_world or pair.image2 not in cam_from_world:
            continue
        c1, c2 = cam_from_world[pair.image1], cam_from_world[pair.image2]
        agree = float((sampson_px(pair.xy1, pair.xy2, fundamental_from_poses(c1, c2, k_mat)) < max_px).mean())
        recovered = c2[:, :3] @ c1[:, :3].T
        rot = rotation_angle_deg(pair.rotation @ recovered.T) if pair.rotation is not None else math.nan
        for view in (pair.image1, pair.image2):
            per_view.setdefault(view, []).append((len(pair.xy1), agree, rot))
    out = {}
    for view, entries in per_view.items():
        top = sorted(entries, key=lambda e: -e[0])[:top_k]
        rots = [r for _, _, r in top if not math.isnan(r)]
        out[view] = ViewConsistency(agreement=float(np.median([a for _, a, _ in top])),
                                    rot_deg=float(np.median(rots)) if rots else math.nan, partners=len(top))
    return out


def suspicious_views(consistency: dict[int, ViewConsistency], c2w: dict[int, np.ndarray], half_fov_deg: float,
                     min_agreement: float = 0.5, max_rot_deg: float = 20.0) -> set[int]:
    """Registered views (keys of `c2w`, normalised OpenGL camera-to-world with the object at the origin)
    that fail the neighbour check, have no verified partner, or whose optical axis misses the origin by
    more than the half field of view."""
    bad = set()
    for view, pose in c2w.items():
        c = consistency.get(view)
        if c is None or c.agreement < min_agreement or (not math.isnan(c.rot_deg) and c.rot_deg > max_rot_deg):
            bad.add(view)
        look, to_centre = -pose[:3, 2], -pose[:3, 3] / np.linalg.norm(pose[:3, 3])
        if math.degrees(math.acos(float(np.clip(look @ to_centre, -1, 1)))) > half_fov_deg:
            bad.add(view)
    return bad
