"""Rotation angles (pure numpy), shared by pose estimation, pose accuracy and structure-from-motion."""
from __future__ import annotations

import numpy as np


def rotation_angle_deg(r: np.ndarray) -> np.ndarray:
    """The angle of rotation matrices [...,3,3] in degrees, accurate near 0 and 180 degrees too:
    atan2(|axis part|, trace part), where arccos((trace - 1) / 2) loses half the digits near 0."""
    r = np.asarray(r, dtype=np.float64)[..., :3, :3]
    axis = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], axis=-1)
    cos2 = np.trace(r, axis1=-2, axis2=-1) - 1.0          # 2 cos(angle)
    sin2 = np.linalg.norm(axis, axis=-1)                   # 2 sin(angle)
    return np.degrees(np.arctan2(sin2, cos2))


def rotation_error_deg(est: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations, in degrees. Accepts [...,3,3] or [...,4,4] poses."""
    r_est = np.asarray(est, dtype=np.float64)[..., :3, :3]
    r_true = np.asarray(true, dtype=np.float64)[..., :3, :3]
    return rotation_angle_deg(np.swapaxes(r_est, -1, -2) @ r_true)
