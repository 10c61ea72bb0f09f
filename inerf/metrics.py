"""Pose-error measures (pure numpy): relative translation error and error summaries (the rotation error is
common.rotations.rotation_error_deg)."""
from __future__ import annotations

import numpy as np


def translation_error_frac(est: np.ndarray, true: np.ndarray) -> np.ndarray:
    """||t_est - t_true|| / ||t_true||: camera-position error as a fraction of the camera distance
    from the world origin (where the object sits). Accepts [...,4,4] poses or [...,3] positions."""
    est = np.asarray(est, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    t_est = est[..., :3, 3] if est.shape[-2:] == (4, 4) else est
    t_true = true[..., :3, 3] if true.shape[-2:] == (4, 4) else true
    return np.linalg.norm(t_est - t_true, axis=-1) / np.maximum(np.linalg.norm(t_true, axis=-1), 1e-12)


def summarise(rot_err_deg, trans_err_frac, threshold_deg: float = 2.0, failure_deg: float = 5.0) -> dict:
    """Median, 90th percentile, mean of the errors; the share of rotation errors under `threshold_deg` and
    the share over `failure_deg` (a failed pose: its reference shows the object visibly turned)."""
    rot = np.asarray(rot_err_deg, dtype=np.float64).reshape(-1)
    trans = np.asarray(trans_err_frac, dtype=np.float64).reshape(-1)
    if rot.size == 0:
        return {"n": 0}
    return {
        "n": int(rot.size),
        "rot_median_deg": float(np.median(rot)),
        "rot_p90_deg": float(np.percentile(rot, 90)),
        "rot_mean_deg": float(np.mean(rot)),
        f"share_under_{threshold_deg:g}deg": float(np.mean(rot < threshold_deg)),
        f"share_over_{failure_deg:g}deg": float(np.mean(rot > failure_deg)),
        "trans_median_frac": float(np.median(trans)),
        "trans_p90_frac": float(np.percentile(trans, 90)),
        "trans_mean_frac": float(np.mean(trans)),
    }
