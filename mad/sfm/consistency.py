"""Flipped-view check, first stage: each registered view against its strongest matched partners.

On near-symmetric objects COLMAP can register a view with a flipped orientation or on the wrong side.
The verified matches between two views (found before mapping, knowing nothing of the model) must agree
with the epipolar geometry the recovered poses imply; a flipped view disagrees with most partners. How
much disagreement is normal depends on the capture (image size, texture, the prior focal length), so a
view is a suspect when it is an outlier against the capture's own median and spread (robust z-score),
or fails the fixed limits. Suspects go on to the decisive 2D-3D test (mad/sfm/view_check.py).
Pure numpy: the matches come in as pixel arrays (mad.sfm.colmap reads them from the database).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import median_abs_deviation

from common.rotations import rotation_angle_deg
from mad.sfm.geometry import skew


@dataclass(frozen=True)
class MatchedPair:
    """The verified inlier matches of two views: pixel positions xy1 <-> xy2 [m,2], the relative
    rotation cam2_from_cam1 [3,3] the two-view geometry estimated (None when not stored), and the
    keypoint indices idx1 <-> idx2 [m] of the matches (None when not known)."""
    image1: int
    image2: int
    xy1: np.ndarray
    xy2: np.ndarray
    rotation: np.ndarray | None = None
    idx1: np.ndarray | None = None
    idx2: np.ndarray | None = None


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


@dataclass(frozen=True)
class Spread:
    """A capture's typical value of a statistic and its robust spread: the median and the MAD scaled to a
    normal sigma, at least `floor` (so that a clean capture with a tiny spread does not flag noise)."""
    median: float
    scale: float

    @classmethod
    def of(cls, values, floor: float) -> Spread:
        x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
        if not len(x):
            return cls(math.nan, floor)
        return cls(float(np.median(x)), max(float(median_abs_deviation(x, scale="normal")), floor))

    def z(self, value: float) -> float:
        """Robust z-score of `value`: how many spreads it lies above the median."""
        return (value - self.median) / self.scale


@dataclass(frozen=True)
class FlipLimits:
    """When a view's consistency makes it a suspect (mad.options.SfmOptions sfm_flip_* give the defaults)."""
    z_max: float = 3.5             # robust z-score against the capture
    rot_floor_deg: float = 1.0     # least spread of the rotation disagreement
    agreement_floor: float = 0.03  # least spread of the epipolar agreement
    min_agreement: float = 0.5     # fixed limits, whatever the capture
    max_rot_deg: float = 20.0


def capture_spreads(consistency: dict[int, ViewConsistency], limits: FlipLimits) -> tuple[Spread, Spread]:
    """(rotation disagreement, epipolar agreement) spreads over the capture's views."""
    return (Spread.of([c.rot_deg for c in consistency.values()], limits.rot_floor_deg),
            Spread.of([c.agreement for c in consistency.values()], limits.agreement_floor))


def outlier_reason(c: ViewConsistency | None, rot: Spread, agreement: Spread, limits: FlipLimits) -> str | None:
    """Why a view's consistency with its partners is abnormal for this capture (None: it is not)."""
    if c is None:
        return "no verified partner"
    reasons = []
    if not math.isnan(c.rot_deg):
        z = rot.z(c.rot_deg)
        if z > limits.z_max or c.rot_deg > limits.max_rot_deg:
            reasons.append(f"rotation disagreement {c.rot_deg:.1f} deg (capture median {rot.median:.1f}, "
                           f"robust z {z:.1f})")
    z = -agreement.z(c.agreement)
    if z > limits.z_max or c.agreement < limits.min_agreement:
        reasons.append(f"epipolar agreement {c.agreement:.2f} (capture median {agreement.median:.2f}, "
                       f"robust z {z:.1f})")
    return "; ".join(reasons) or None


def suspect_views(consistency: dict[int, ViewConsistency], c2w: dict[int, np.ndarray], half_fov_deg: float,
                  limits: FlipLimits = FlipLimits()) -> dict[int, str]:
    """Registered views (keys of `c2w`, normalised OpenGL camera-to-world with the object at the origin)
    that are outliers of the capture (outlier_reason), have no verified partner, or whose optical axis
    misses the origin by more than the half field of view; each with the reason."""
    rot, agreement = capture_spreads(consistency, limits)
    out = {}
    for view, pose in c2w.items():
        reasons = [outlier_reason(consistency.get(view), rot, agreement, limits)]
        look, to_centre = -pose[:3, 2], -pose[:3, 3] / np.linalg.norm(pose[:3, 3])
        miss = math.degrees(math.acos(float(np.clip(look @ to_centre, -1, 1))))
        if miss > half_fov_deg:
            reasons.append(f"optical axis misses the object by {miss:.0f} deg")
        reasons = [r for r in reasons if r]
        if reasons:
            out[view] = "; ".join(reasons)
    return out


def reprojection_inliers(cam_from_world: np.ndarray, k_mat: np.ndarray, xy: np.ndarray, xyz: np.ndarray,
                         max_px: float) -> np.ndarray:
    """Which 2D-3D correspondences xy [m,2] <-> xyz [m,3] a pose [R|t] (pinhole K) reprojects within
    max_px, in front of the camera."""
    cam = xyz @ cam_from_world[:, :3].T + cam_from_world[:, 3]
    depth = cam[:, 2]
    proj = cam[:, :2] / np.where(np.abs(depth) > 1e-12, depth, 1e-12)[:, None] @ k_mat[:2, :2].T + k_mat[:2, 2]
    return (depth > 0) & (np.linalg.norm(proj - xy, axis=1) < max_px)
