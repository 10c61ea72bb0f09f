"""The flipped-view check of a reconstruction: stage 1 (mad/sfm/consistency.py) names the suspects, views
abnormal for this capture; stage 2, the decisive test, settles each one on its 2D-3D matches.

Stage 2: the suspect's keypoints matched (verified two-view matches) to keypoints of trusted views
(registered, not suspects) that belong to 3D points seen by at least two trusted views, so that no
suspect's own triangulation plays a part. Two hypotheses compete with the recovered pose: a fresh estimate
from these matches (pycolmap LO-RANSAC + refinement) and the recovered pose carried 180 degrees around
the object's vertical axis (the view from the other side that a near-symmetric object suggests),
refined. Each is scored by its inliers (reprojection error < max_error_px), the same rule for all:
  * cleared: the recovered pose has min_inliers and no hypothesis has min_gain times its inliers;
  * repaired: a hypothesis has, and with it the view agrees with its trusted partners (no longer an
    outlier of the capture): the view keeps the new pose;
  * left out: otherwise (too few 2D-3D matches, no pose fits them, or the better pose still disagrees),
    and a view that would be repaired when repairs are off.
Suspects are settled in rounds: a view whose pose a round verifies is trusted in the next, at that pose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from common.rotations import rotation_angle_deg
from mad.sfm.consistency import (
    FlipLimits,
    MatchedPair,
    Spread,
    ViewConsistency,
    capture_spreads,
    neighbour_consistency,
    outlier_reason,
    reprojection_inliers,
    suspect_views,
)
from mad.sfm.geometry import c2w_from_cam_from_world, normalise_poses, turned_about_axis

CLEARED, REPAIRED, LEFT_OUT = "cleared", "repaired", "left out"


@dataclass(frozen=True)
class CheckSettings:
    """The check's thresholds (mad.options.SfmOptions gives the defaults)."""
    limits: FlipLimits = field(default_factory=FlipLimits)
    max_error_px: float = 4.0   # reprojection error of a 2D-3D inlier
    min_inliers: int = 30       # inliers a pose needs to count as verified
    min_gain: float = 1.5       # a hypothesis replaces the recovered pose with this many times its inliers
    repair: bool = True         # False: a view that would be repaired is left out
    seed: int = 0               # RANSAC seed


@dataclass(frozen=True)
class Verdict:
    """What the check decided for one suspect, and why."""
    outcome: str                 # CLEARED, REPAIRED or LEFT_OUT
    suspicion: str               # why stage 1 named the view
    finding: str                 # what the 2D-3D test found
    matches: int                 # 2D-3D matches with trusted views' points
    inliers_recovered: int
    inliers_best: int            # of the best competing hypothesis (0: none)
    turned_deg: float            # rotation from the recovered pose to that hypothesis (nan: none)
    cam_from_world: np.ndarray   # the pose the view keeps (repaired: the new one)
    verified_pose: np.ndarray | None = None   # the pose the 2D-3D test verified (None: none), set too when
                                              # repairs are off, so that the view can vouch for others

    @property
    def reason(self) -> str:
        return f"{self.suspicion}; {self.finding}"

    def line(self, name: str) -> str:
        """One line for the console and the report: outcome, view, why."""
        return f"{self.outcome} {name}: {self.reason}"

    def summary(self) -> dict:
        return {"outcome": self.outcome, "suspicion": self.suspicion, "finding": self.finding,
                "matches_2d3d": self.matches, "inliers_recovered": self.inliers_recovered,
                "inliers_best": self.inliers_best, "turned_deg": round(self.turned_deg, 3)}


@dataclass
class CheckResult:
    consistency: dict[int, ViewConsistency]   # stage 1, every registered view
    rot: Spread                               # the capture's rotation disagreement
    agreement: Spread                         # the capture's epipolar agreement
    verdicts: dict[int, Verdict]              # stage 2, every suspect

    def with_outcome(self, outcome: str) -> list[int]:
        return sorted(v for v, d in self.verdicts.items() if d.outcome == outcome)


class _TrustedPoints:
    """The 3D points of a reconstruction seen by at least two trusted views, looked up by keypoint."""

    def __init__(self, rec, trusted: set[int]):
        self.rec, self.trusted = rec, trusted
        self._ids: dict[int, np.ndarray] = {}
        self._xyz: dict[int, np.ndarray | None] = {}

    def point_ids(self, image_id: int) -> np.ndarray:
        """Per keypoint of the image, the id of its 3D point (-1: none)."""
        if image_id not in self._ids:
            self._ids[image_id] = np.array([p.point3D_id if p.has_point3D() else -1
                                            for p in self.rec.images[image_id].points2D], dtype=np.int64)
        return self._ids[image_id]

    def xyz(self, point_id: int) -> np.ndarray | None:
        if point_id not in self._xyz:
            point = self.rec.points3D[point_id]
            seen = {e.image_id for e in point.track.elements} & self.trusted
            self._xyz[point_id] = np.asarray(point.xyz, dtype=np.float64) if len(seen) >= 2 else None
        return self._xyz[point_id]

    def matches_2d3d(self, view: int, pairs: list[MatchedPair]) -> tuple[np.ndarray, np.ndarray]:
        """The view's keypoints matched to trusted views' supported 3D points: (xy [m,2], xyz [m,3]),
        one row per distinct (keypoint, point)."""
        rows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for pair in pairs:
            if view == pair.image1:
                other, mine, theirs, xy = pair.image2, pair.idx1, pair.idx2, pair.xy1
            elif view == pair.image2:
                other, mine, theirs, xy = pair.image1, pair.idx2, pair.idx1, pair.xy2
            else:
                continue
            if other not in self.trusted:
                continue
            for k, pid, q in zip(mine, self.point_ids(other)[theirs], xy, strict=True):
                if pid >= 0 and (int(k), int(pid)) not in rows and (x := self.xyz(int(pid))) is not None:
                    rows[int(k), int(pid)] = (q, x)
        if not rows:
            return np.zeros((0, 2)), np.zeros((0, 3))
        xy, xyz = zip(*rows.values(), strict=True)
        return np.stack(xy), np.stack(xyz)


def _hypotheses(recovered: np.ndarray, xy: np.ndarray, xyz: np.ndarray, camera, k_mat: np.ndarray,
                centre: np.ndarray, vertical: np.ndarray, settings: CheckSettings) -> dict[str, np.ndarray]:
    """The poses competing with the recovered one: a fresh RANSAC estimate, the refined mirrored pose."""
    import pycolmap

    est = pycolmap.AbsolutePoseEstimationOptions()
    est.ransac.max_error = settings.max_error_px
    est.ransac.random_seed = settings.seed
    out = {}
    found = pycolmap.estimate_and_refine_absolute_pose(xy, xyz, camera, est)
    if found is not None:
        out["re-estimated"] = np.asarray(found["cam_from_world"].matrix())
    mirrored = turned_about_axis(recovered, centre, vertical, 180.0)
    mask = reprojection_inliers(mirrored, k_mat, xy, xyz, settings.max_error_px)
    refined = (pycolmap.refine_absolute_pose(pycolmap.Rigid3d(mirrored), xy, xyz, mask, camera)
               if mask.sum() >= 6 else None)
    out["mirrored"] = np.asarray(refined["cam_from_world"].matrix()) if refined is not None else mirrored
    return out


def _decide(view: int, suspicion: str, points: _TrustedPoints, pairs: list[MatchedPair],
            cam_from_world: dict[int, np.ndarray], camera, k_mat: np.ndarray, result: CheckResult,
            centre: np.ndarray, vertical: np.ndarray, settings: CheckSettings) -> Verdict:
    """Stage 2 for one suspect (see the module docstring)."""
    recovered = cam_from_world[view]
    xy, xyz = points.matches_2d3d(view, pairs)

    def inliers(pose: np.ndarray) -> int:
        return int(reprojection_inliers(pose, k_mat, xy, xyz, settings.max_error_px).sum())

    if len(xy) < settings.min_inliers:
        return Verdict(LEFT_OUT, suspicion, f"only {len(xy)} 2D-3D matches with the trusted views' points, too "
                       f"few to verify its pose ({settings.min_inliers} needed)", len(xy), 0, 0, math.nan, recovered)
    n_rec = inliers(recovered)
    name, best = max(_hypotheses(recovered, xy, xyz, camera, k_mat, centre, vertical, settings).items(),
                     key=lambda kv: inliers(kv[1]))
    n_best = inliers(best)
    turned = float(rotation_angle_deg(best[:, :3] @ recovered[:, :3].T))
    facts = (f"of {len(xy)} 2D-3D matches the recovered pose fits {n_rec}, the {name} pose {n_best} "
             f"(turned {turned:.1f} deg)")
    outcome, verified = LEFT_OUT, None
    if n_best >= max(settings.min_gain * n_rec, settings.min_inliers):
        partner_pairs = [p for p in pairs if view in (p.image1, p.image2)
                         and ({p.image1, p.image2} - {view}) <= points.trusted]
        again = neighbour_consistency(partner_pairs, {**cam_from_world, view: best}, k_mat).get(view)
        still = outlier_reason(again, result.rot, result.agreement, settings.limits)
        if still is None:
            facts += (f"; with it the view agrees with its partners (epipolar agreement {again.agreement:.2f}, "
                      f"rotation disagreement {again.rot_deg:.1f} deg)")
            verified = best
            if settings.repair:
                outcome = REPAIRED
            else:
                facts += ", but repairs are off"
        else:
            facts += f", but with it the view still disagrees with its partners: {still}"
    elif n_rec >= settings.min_inliers:
        outcome, verified, facts = CLEARED, recovered, f"{facts}: the recovered pose stands"
    else:
        facts += f": no pose fits {settings.min_inliers}"
    return Verdict(outcome, suspicion, facts, len(xy), n_rec, n_best, turned,
                   best if outcome == REPAIRED else recovered, verified)


def check_views(rec, pairs: list[MatchedPair], settings: CheckSettings = CheckSettings()) -> CheckResult:
    """The flipped-view check of every registered view of `rec` (a pycolmap.Reconstruction with one shared
    pinhole camera), given the verified matches `pairs` (mad.sfm.colmap.read_matched_pairs). Suspects are
    settled in rounds: the views whose pose a round verifies (cleared, repaired) are trusted in the next,
    at that pose, which retries the views left out (a correct view whose partners were all suspects gets
    its 2D-3D matches that way)."""
    registered = sorted(i for i, img in rec.images.items() if img.has_pose)
    cam_from_world = {i: np.asarray(rec.images[i].cam_from_world().matrix()) for i in registered}
    camera = rec.cameras[rec.images[registered[0]].camera_id]
    k_mat = np.asarray(camera.calibration_matrix())
    consistency = neighbour_consistency(pairs, cam_from_world, k_mat)
    rot, agreement = capture_spreads(consistency, settings.limits)
    result = CheckResult(consistency, rot, agreement, {})
    c2w, norm = normalise_poses(np.stack([c2w_from_cam_from_world(cam_from_world[i]) for i in registered]), 1.0)
    half_fov = math.degrees(math.atan(0.5 * max(camera.width / camera.focal_length_x,
                                                camera.height / camera.focal_length_y)))
    pending = suspect_views(consistency, dict(zip(registered, c2w, strict=True)), half_fov, settings.limits)
    trusted = set(registered) - set(pending)
    centre = np.asarray(norm["centre"])
    vertical = np.asarray(norm["rotation"]).T @ np.array([0.0, 0.0, 1.0])   # the mean camera up
    while pending:
        points = _TrustedPoints(rec, trusted)
        decided = {view: _decide(view, suspicion, points, pairs, cam_from_world, camera, k_mat, result, centre,
                                 vertical, settings) for view, suspicion in pending.items()}
        result.verdicts.update(decided)
        settled = {view for view, verdict in decided.items() if verdict.verified_pose is not None}
        if not settled:
            break
        trusted |= settled
        cam_from_world.update({view: decided[view].verified_pose for view in settled})
        pending = {view: suspicion for view, suspicion in pending.items() if view not in settled}
    return result
