"""Structure-from-motion poses against the truth, and the pipeline on recovered versus true poses.

    python benchmarks/bench_colmap.py --seeds 0 1 2                      # textured, 400 px, 100 views
    python benchmarks/bench_colmap.py --seeds 0 --flat                   # the flat-coloured object
    python benchmarks/bench_colmap.py --pipeline_config configs/synthetic/sfm_demo.txt

Poses (--seeds): per seed, a generated class (train views only) at --size px with --n_train views;
its transforms.json is set aside, `mad.colmap_poses` recovers the poses from the images, and they are
compared with the truth after the similarity (Umeyama, on camera centres) that best aligns them:
rotation error = angle of R_true^T (S R_est), position error = |s S c_est + t - c_true| in % of the
true camera radius; plus the focal length error and the SfM wall time (features, matching, mapping).
Then the flipped-view check's sensitivity: four registered views are corrupted the way near-symmetric
objects fool SfM (moved to the opposite side, rolled upside down, turned a quarter about the vertical)
plus one small error (rotated by 3 degrees: also wrong for a NeRF, the epipolar test catches it while the
two-view rotation test alone would not), and the check is run again; no uncorrupted view may be flagged.

Pipeline (--pipeline_config): the config's class (true poses, generated if missing), a copy of it
without transforms.json whose poses come from mad.colmap_poses (<class>_colmap, same images), and a
control (<class>_aligned): the TRUE poses and intrinsics moved into the recovered frame by the alignment
similarity, so that it differs from the true run only by the frame (origin, orientation, scale) and from
the recovered run only by the SfM errors. The whole pipeline (anomaly_nerf_lego.py) runs on the three with
the config's settings, and the AUROCs are printed side by side. Figures go to <root>/colmap_benchmark.json
(poses) or <output_root>/<dataset>/colmap_benchmark.json (pipeline); other flags (--seed, --output_root, ...)
pass through to the pipeline.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from common.errors import exit_on_user_error  # noqa: E402
from common.io import write_json  # noqa: E402
from mad.colmap_poses import recover_poses, summary_lines  # noqa: E402
from mad.options import SfmOptions, SynthOptions  # noqa: E402
from common.rotations import rotation_angle_deg  # noqa: E402
from mad.sfm.colmap import read_matched_pairs  # noqa: E402
from mad.sfm.consistency import neighbour_consistency, suspicious_views  # noqa: E402
from mad.sfm.geometry import (  # noqa: E402
    c2w_from_cam_from_world,
    cam_from_world_from_c2w,
    normalise_poses,
    umeyama,
)
from mad.synth.generate import generate_class  # noqa: E402

TRUE_POSES = "transforms_true.json"


def pose_errors(true_path: Path, est_path: Path) -> dict:
    """Recovered vs true camera-to-world poses (frames matched by file_path) after a similarity alignment."""
    true = json.loads(true_path.read_text())
    est = json.loads(est_path.read_text())
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
    ang = np.array([rotation_angle_deg(a[:3, :3].T @ rot @ b[:3, :3]) for a, b in zip(pt, pe)])
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


def axis_angle(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = math.radians(degrees)
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def flip_check(class_dir: Path, report: dict, seed: int = 0) -> dict:
    """Corrupt four registered views of the finished reconstruction and run the flipped-view check."""
    import pycolmap

    work = class_dir / "colmap"
    best = max(report["models"], key=lambda k: report["models"][k])
    rec = pycolmap.Reconstruction(work / "sparse" / best)
    cam_from_world = {i: np.asarray(img.cam_from_world().matrix()) for i, img in rec.images.items() if img.has_pose}
    names = {i: rec.images[i].name for i in cam_from_world}
    camera = next(iter(rec.cameras.values()))
    ids = sorted(cam_from_world)
    c2w = {i: c2w_from_cam_from_world(cam_from_world[i]) for i in ids}
    _, norm = normalise_poses(np.stack([c2w[i] for i in ids]), 1.0)
    centre, up = np.asarray(norm["centre"]), np.asarray(norm["rotation"]).T @ np.array([0.0, 0.0, 1.0])
    rng = np.random.default_rng(seed)
    victims = dict(zip((int(v) for v in rng.choice(ids, 4, replace=False)),
                       ("opposite side", "upside down", "quarter turn", "3 deg off")))
    for view, kind in victims.items():
        pose = c2w[view].copy()
        if kind in ("opposite side", "quarter turn"):
            turn = axis_angle(up, 180.0 if kind == "opposite side" else 90.0)
            pose[:3, :3] = turn @ pose[:3, :3]
            pose[:3, 3] = turn @ (pose[:3, 3] - centre) + centre
        elif kind == "upside down":
            pose[:3, :3] = pose[:3, :3] @ axis_angle([0.0, 0.0, 1.0], 180.0)
        else:
            pose[:3, :3] = axis_angle(rng.normal(size=3), 3.0) @ pose[:3, :3]
        c2w[view] = pose
        cam_from_world[view] = cam_from_world_from_c2w(pose)
    poses, _ = normalise_poses(np.stack([c2w[i] for i in ids]), 4.0)
    consistency = neighbour_consistency(read_matched_pairs(work / "database.db"), cam_from_world,
                                        np.asarray(camera.calibration_matrix()))
    half_fov = math.degrees(math.atan(0.5 * camera.width / camera.focal_length_x))
    flagged = suspicious_views(consistency, dict(zip(ids, poses)), half_fov)
    return {"corrupted": {names[v]: {"kind": kind, "flagged": v in flagged,
                                     "agreement": consistency[v].agreement, "rot_deg": consistency[v].rot_deg}
                          for v, kind in victims.items()},
            "flagged_uncorrupted": sorted(names[v] for v in flagged if v not in victims)}


def write_aligned_control(true_dir: Path, out_dir: Path, similarity: dict) -> None:
    """A copy of the class whose transforms.json holds the true poses in the recovered frame."""
    s, rot, t = similarity["scale"], np.array(similarity["rotation"]), np.array(similarity["translation"])
    shutil.copytree(true_dir, out_dir, ignore=shutil.ignore_patterns("colmap", TRUE_POSES, "test_poses.json"))
    meta = json.loads((true_dir / "transforms.json").read_text())
    for frame in meta["frames"]:
        pose = np.array(frame["transform_matrix"])
        pose[:3, :3] = rot.T @ pose[:3, :3]
        pose[:3, 3] = rot.T @ (pose[:3, 3] - t) / s
        frame["transform_matrix"] = pose.tolist()
    write_json(out_dir / "transforms.json", meta)


def recover(class_dir: Path, threads: int | None) -> tuple[dict, dict]:
    """Set the true transforms.json aside, recover the poses, compare."""
    true = class_dir / TRUE_POSES
    if not true.is_file():
        shutil.copy(class_dir / "transforms.json", true)
    report = recover_poses(class_dir, SfmOptions(sfm_num_threads=threads), overwrite=True)
    print("\n".join(summary_lines(report)))
    return report, pose_errors(true, class_dir / "transforms.json")


def pose_table(rows: list[dict]) -> str:
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


def run_poses(args) -> list[dict]:
    rows = []
    for seed in args.seeds:
        name = f"{'flat' if args.flat else 'tex'}{args.size}_s{seed}"
        class_dir = args.root / name
        if not class_dir.exists():
            opts = SynthOptions(synth_seed=seed, synth_size=args.size, synth_n_train=args.n_train, synth_n_test_good=0,
                                synth_n_test_defect=0, synth_textured=not args.flat)
            generate_class(args.root, name, opts)
        try:
            report, errors = recover(class_dir, args.num_threads)
        except Exception as err:  # a failed reconstruction is a figure too
            print(f"{name}: {err}")
            rows.append({"class": name, "error": str(err)})
            continue
        check = flip_check(class_dir, report, seed)
        for view, c in check["corrupted"].items():
            print(f"  corrupted {view} ({c['kind']}): agreement {c['agreement']:.3f}, rotation disagreement "
                  f"{c['rot_deg']:.1f} deg, flagged {c['flagged']}")
        print(f"  uncorrupted views flagged: {check['flagged_uncorrupted'] or 'none'}")
        rows.append({"class": name, "report": report, "errors": errors, "flip_check": check})
    print(pose_table([r for r in rows if "errors" in r]))
    return rows


def run_pipeline(args) -> dict:
    import anomaly_nerf_lego
    from omniposead.config import parse_config

    base = ["--config", str(args.pipeline_config), *args.extra]
    cfg = parse_config(base)
    true_name, sfm_name = cfg.run.class_name, f"{cfg.run.class_name}_colmap"
    true_dir = cfg.run.class_dir
    if not true_dir.exists():
        generate_class(Path(cfg.run.data_root), true_name, cfg.synth)
    sfm_dir = true_dir.parent / sfm_name
    if not (sfm_dir / "transforms.json").is_file():
        shutil.rmtree(sfm_dir, ignore_errors=True)
        shutil.copytree(true_dir, sfm_dir, ignore=shutil.ignore_patterns("colmap", TRUE_POSES))
        shutil.move(sfm_dir / "transforms.json", sfm_dir / TRUE_POSES)   # the pipeline never sees the truth
        (sfm_dir / "test_poses.json").unlink(missing_ok=True)            # test poses are in the true frame
        recover_poses(sfm_dir, SfmOptions(sfm_num_threads=args.num_threads))
    report = json.loads((sfm_dir / "colmap" / "colmap_report.json").read_text())
    print("\n".join(summary_lines(report)))
    errors = pose_errors(sfm_dir / TRUE_POSES, sfm_dir / "transforms.json")
    aligned_name = f"{true_name}_aligned"
    if not (true_dir.parent / aligned_name / "transforms.json").is_file():
        write_aligned_control(true_dir, true_dir.parent / aligned_name, errors["similarity"])
    result = {"sfm_report": report, "pose_errors": errors, "runs": {},
              "output": str(cfg.run.dataset_output_dir / "colmap_benchmark.json")}
    for name in (true_name, sfm_name, aligned_name):
        start = time.perf_counter()
        anomaly_nerf_lego.main([*base, "--class_name", name])
        metrics = json.loads((cfg.for_class(name).run.output_dir / "metrics.json").read_text())
        result["runs"][name] = {"wall_s": time.perf_counter() - start, "pixel_auroc": metrics["pixel_auroc"],
                                "image_auroc": metrics["image_auroc"], "pixel_aupro": metrics["pixel_aupro"]}
    print(pose_table([{"class": sfm_name, "report": report, "errors": errors}]))
    print("| poses | pixel AUROC | image AUROC | pixel AUPRO | wall (min) |\n|---|---|---|---|---|")
    for name, label in ((true_name, "true (generator)"), (sfm_name, "recovered (mad.colmap_poses)"),
                        (aligned_name, "true, moved into the recovered frame (control)")):
        r = result["runs"][name]
        print(f"| {label} | {r['pixel_auroc']:.3f} | {r['image_auroc']:.3f} | {r['pixel_aupro']:.3f} "
              f"| {r['wall_s'] / 60:.1f} |")
    return result


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="generator seeds of the pose benchmark")
    parser.add_argument("--size", type=int, default=400, help="image size of the pose benchmark's classes")
    parser.add_argument("--n_train", type=int, default=100, help="training views of the pose benchmark's classes")
    parser.add_argument("--flat", action="store_true", help="the flat-coloured object instead of --textured")
    parser.add_argument("--root", type=Path, default=Path("data/sfm_bench"), help="where the classes are generated")
    parser.add_argument("--num_threads", type=int, default=None, help="COLMAP threads (default: all cores)")
    parser.add_argument("--pipeline_config", type=Path, default=None,
                        help="also run the pipeline on the config's class with true and with recovered poses")
    args, args.extra = parser.parse_known_args(argv)
    results = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
               "date": time.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:]}
    if args.seeds:
        args.root.mkdir(parents=True, exist_ok=True)
        results["poses"] = run_poses(args)
    if args.pipeline_config:
        results["pipeline"] = run_pipeline(args)
    out = args.root / "colmap_benchmark.json" if args.seeds else Path(results["pipeline"]["output"])
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
