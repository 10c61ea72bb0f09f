"""Recovered poses against the truth, shared by the two structure-from-motion benchmarks
(bench_sfm_poses, bench_sfm_pipeline): the similarity alignment, the errors after it, the account of
the views (kept, left out, repaired, kept but wrong), their tables."""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np

from common.rotations import rotation_angle_deg
from mad.layout import natural_key
from mad.sfm.geometry import umeyama

TRUE_POSES = "transforms_true.json"   # where a benchmark keeps the generator's transforms.json


def robust_similarity(src: np.ndarray, dst: np.ndarray, rounds: int = 3) -> tuple[float, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """The similarity dst ~ s R src + t (Umeyama on camera centres [N,3]) refitted on the centres it
    places within max(3 x the median error, 5 % of their spread) of their truth, so that a few views on
    the wrong side (150-200 % of the radius off) do not tilt the alignment of the others.
    Returns (s, R, t, mask of the centres used)."""
    use = np.ones(len(src), dtype=bool)
    size = float(np.linalg.norm(dst - dst.mean(0), axis=1).mean())
    for _ in range(rounds):
        s, rot, t = umeyama(src[use], dst[use])
        err = np.linalg.norm(s * src @ rot.T + t - dst, axis=1)
        keep = err <= max(3 * float(np.median(err)), 0.05 * size)
        if keep.sum() < 3 or (keep == use).all():
            break
        use = keep
    return s, rot, t, use


def into_recovered_frame(pose: np.ndarray, similarity: dict) -> np.ndarray:
    """A true camera-to-world pose [4, 4] moved into the recovered frame by pose_errors' similarity
    (true ~ s R recovered + t): what the recovered poses would say of that camera, were they exact."""
    s, rot, t = similarity["scale"], np.array(similarity["rotation"]), np.array(similarity["translation"])
    out = np.array(pose, dtype=float)
    out[:3, :3] = rot.T @ out[:3, :3]
    out[:3, 3] = rot.T @ (out[:3, 3] - t) / s
    return out


def pose_errors(true_path: Path, est_path: Path) -> dict:
    """Recovered vs true camera-to-world poses (frames matched by file_path) after the similarity
    (robust_similarity, on camera centres) that best aligns them: rotation error = angle of
    R_true^T (S R_est), position error = |s S c_est + t - c_true| in % of the true camera radius, per
    view and summarised, plus the focal error."""
    true = json.loads(Path(true_path).read_text())
    est = json.loads(Path(est_path).read_text())
    t_frames = {f["file_path"]: np.array(f["transform_matrix"]) for f in true["frames"]}
    e_frames = {f["file_path"]: np.array(f["transform_matrix"]) for f in est["frames"]}
    common = sorted(set(t_frames) & set(e_frames))
    if len(common) < 3:
        raise SystemExit(f"{est_path}: only {len(common)} frames in common with {true_path}")
    pt = np.stack([t_frames[k] for k in common])
    pe = np.stack([e_frames[k] for k in common])
    s, rot, t, used = robust_similarity(pe[:, :3, 3], pt[:, :3, 3])   # true ~ s rot est + t
    radius = float(np.linalg.norm(pt[:, :3, 3], axis=1).mean())
    pos = np.linalg.norm(s * pe[:, :3, 3] @ rot.T + t - pt[:, :3, 3], axis=1) / radius * 100
    ang = rotation_angle_deg(np.swapaxes(pt[:, :3, :3], 1, 2) @ rot @ pe[:, :3, :3])
    stats = lambda x: {"median": float(np.median(x)), "p90": float(np.percentile(x, 90)),  # noqa: E731
                       "max": float(x.max())}
    out = {"views": len(t_frames), "recovered": len(common), "registered_percent": 100.0 * len(common) / len(t_frames),
           "rotation_deg": stats(ang), "position_percent_of_radius": stats(pos),
           "rotation_over_90deg": int((ang > 90).sum()),
           "similarity": {"scale": s, "rotation": rot.tolist(), "translation": t.tolist(),
                          "fitted_on": int(used.sum())},
           "per_view": {k: {"rotation_deg": round(float(a), 4), "position_percent": round(float(q), 4)}
                        for k, a, q in zip(common, ang, pos, strict=True)}}
    if "camera_angle_x" in true and "fl_x" in est:
        focal = 0.5 * est["w"] / math.tan(0.5 * true["camera_angle_x"])
        out["focal_error_percent"] = 100 * (est["fl_x"] - focal) / focal
        out["principal_point"] = [est["cx"], est["cy"]]
    return out


def view_account(report: dict, errors: dict, off_deg: tuple[float, ...] = (2.0, 5.0), min_kept: float = 0.95) -> dict:
    """What became of a capture's views (report: colmap_report.json, errors: pose_errors of the
    transforms.json written): kept, left out (unregistered, by the flipped-view check), repaired, the kept
    views whose rotation is off by more than each of `off_deg`, and the acceptance of issue 21: no kept
    view off by more than the largest, and at least `min_kept` of the views kept, a repaired view
    counting only when within the smallest."""
    rot = {k.rsplit("/", 1)[-1]: v["rotation_deg"] for k, v in errors["per_view"].items()}
    off = {f"kept_off_over_{d:g}deg": sorted((n for n, r in rot.items() if r > d), key=natural_key) for d in off_deg}
    repaired_off = [n for n in report["repaired"] if rot.get(n, math.inf) > min(off_deg)]
    counted = len(rot) - len(repaired_off)
    return {"views": report["views"], "kept": len(rot), "unregistered": report["unregistered"],
            "left_out": [] if report["left_out_kept"] else report["left_out"], "repaired": report["repaired"],
            **off, f"repaired_off_over_{min(off_deg):g}deg": repaired_off,
            "kept_counted_percent": 100.0 * counted / report["views"],
            "accepted": not off[f"kept_off_over_{max(off_deg):g}deg"] and counted >= min_kept * report["views"]}


def pose_table(rows: list[dict]) -> str:
    """Markdown table of rows {"class", "report" (colmap_report.json), "errors" (pose_errors)}."""
    lines = [("| class | registered | rot. median / p90 / max (deg) | position median / max (% radius) | focal err "
              "| reproj. (px) | left out / repaired | SfM wall (features + matching + mapping) |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, rep, t = r["errors"], r["report"], r["report"]["timings_s"]
        lines.append(f"| {r['class']} | {rep['registered']}/{rep['views']} | {e['rotation_deg']['median']:.3f} / "
                     f"{e['rotation_deg']['p90']:.3f} / {e['rotation_deg']['max']:.3f} | "
                     f"{e['position_percent_of_radius']['median']:.3f} / {e['position_percent_of_radius']['max']:.3f} "
                     f"| {e.get('focal_error_percent', float('nan')):+.2f} % | "
                     f"{rep['mean_reprojection_error_px']:.3f} | {len(rep['left_out'])} / {len(rep['repaired'])} | "
                     f"{t['sfm_total_s']:.1f} s ({t['extract_s']:.1f} + {t['match_s']:.1f} + {t['map_s']:.1f}) |")
    return "\n".join(lines)


def account_table(rows: list[dict]) -> str:
    """Markdown table of rows {"class", "account" (view_account)}: the issue-21 figures."""
    lines = [("| class | views | kept | unregistered | left out by the check | repaired | kept off > 2 deg "
              "| kept off > 5 deg | kept (repaired within 2 deg) | accepted |"), "|---" * 10 + "|"]
    for r in rows:
        a = r["account"]
        lines.append(f"| {r['class']} | {a['views']} | {a['kept']} | {len(a['unregistered'])} | {len(a['left_out'])} | "
                     f"{len(a['repaired'])} | {len(a['kept_off_over_2deg'])} | {len(a['kept_off_over_5deg'])} | "
                     f"{a['kept_counted_percent']:.1f} % | {'yes' if a['accepted'] else 'NO'} |")
    return "\n".join(lines)


def run_info(argv: list[str]) -> dict:
    """Machine, date and command line, recorded with every benchmark's figures."""
    return {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "argv": list(argv)}
