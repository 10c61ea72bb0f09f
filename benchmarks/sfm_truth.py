"""Recovered poses against the truth, shared by the two structure-from-motion benchmarks
(bench_sfm_poses, bench_sfm_pipeline): the similarity alignment, the errors after it, their table."""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np

from common.rotations import rotation_angle_deg
from mad.sfm.geometry import umeyama

TRUE_POSES = "transforms_true.json"   # where a benchmark keeps the generator's transforms.json


def pose_errors(true_path: Path, est_path: Path) -> dict:
    """Recovered vs true camera-to-world poses (frames matched by file_path) after the similarity
    (Umeyama, on camera centres) that best aligns them: rotation error = angle of R_true^T (S R_est),
    position error = |s S c_est + t - c_true| in % of the true camera radius, plus the focal error."""
    true = json.loads(Path(true_path).read_text())
    est = json.loads(Path(est_path).read_text())
    t_frames = {f["file_path"]: np.array(f["transform_matrix"]) for f in true["frames"]}
    e_frames = {f["file_path"]: np.array(f["transform_matrix"]) for f in est["frames"]}
    common = sorted(set(t_frames) & set(e_frames))
    if len(common) < 3:
        raise SystemExit(f"{est_path}: only {len(common)} frames in common with {true_path}")
    pt = np.stack([t_frames[k] for k in common])
    pe = np.stack([e_frames[k] for k in common])
    s, rot, t = umeyama(pe[:, :3, 3], pt[:, :3, 3])   # true ~ s rot est + t
    radius = float(np.linalg.norm(pt[:, :3, 3], axis=1).mean())
    pos = np.linalg.norm(s * pe[:, :3, 3] @ rot.T + t - pt[:, :3, 3], axis=1) / radius * 100
    ang = rotation_angle_deg(np.swapaxes(pt[:, :3, :3], 1, 2) @ rot @ pe[:, :3, :3])
    stats = lambda x: {"median": float(np.median(x)), "p90": float(np.percentile(x, 90)),  # noqa: E731
                       "max": float(x.max())}
    out = {"views": len(t_frames), "recovered": len(common), "registered_percent": 100.0 * len(common) / len(t_frames),
           "rotation_deg": stats(ang), "position_percent_of_radius": stats(pos),
           "rotation_over_90deg": int((ang > 90).sum()),
           "similarity": {"scale": s, "rotation": rot.tolist(), "translation": t.tolist()}}
    if "camera_angle_x" in true and "fl_x" in est:
        focal = 0.5 * est["w"] / math.tan(0.5 * true["camera_angle_x"])
        out["focal_error_percent"] = 100 * (est["fl_x"] - focal) / focal
        out["principal_point"] = [est["cx"], est["cy"]]
    return out


def pose_table(rows: list[dict]) -> str:
    """Markdown table of rows {"class", "report" (colmap_report.json), "errors" (pose_errors)}."""
    lines = ["| class | registered | rot. median / p90 / max (deg) | position median / max (% radius) | focal err "
             "| reproj. (px) | suspicious | SfM wall (features + matching + mapping) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, rep, t = r["errors"], r["report"], r["report"]["timings_s"]
        lines.append(f"| {r['class']} | {rep['registered']}/{rep['views']} | {e['rotation_deg']['median']:.3f} / "
                     f"{e['rotation_deg']['p90']:.3f} / {e['rotation_deg']['max']:.3f} | "
                     f"{e['position_percent_of_radius']['median']:.3f} / {e['position_percent_of_radius']['max']:.3f} "
                     f"| {e.get('focal_error_percent', float('nan')):+.2f} % | "
                     f"{rep['mean_reprojection_error_px']:.3f} | {len(rep['suspicious'])} | {t['sfm_total_s']:.1f} s "
                     f"({t['extract_s']:.1f} + {t['match_s']:.1f} + {t['map_s']:.1f}) |")
    return "\n".join(lines)


def run_info(argv: list[str]) -> dict:
    """Machine, date and command line, recorded with every benchmark's figures."""
    return {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "argv": list(argv)}
