"""Structure-from-motion poses against the truth, and the flipped-view check's sensitivity.

    python -m benchmarks.bench_sfm_poses --seeds 0 1 2                  # textured, 400 px, 100 views
    python -m benchmarks.bench_sfm_poses --seeds 0 --flat               # the flat-coloured object

Per seed, a generated class (train views only) at --size px with --n_train views; its transforms.json
is set aside, `mad.colmap_poses` recovers the poses from the images, and they are compared with the
truth after the similarity that best aligns them (benchmarks.sfm_truth.pose_errors): rotation and
position errors, the focal length error and the SfM wall time (features, matching, mapping).
Then the flipped-view check's sensitivity: four registered views are corrupted the way near-symmetric
objects fool SfM (moved to the opposite side, rolled upside down, turned a quarter about the vertical)
plus one small error (rotated by 3 degrees: also wrong for a NeRF, the epipolar test catches it while the
two-view rotation test alone would not), and the check is run again; no uncorrupted view may be flagged.
Figures go to <root>/colmap_benchmark.json. (The pipeline on recovered poses: benchmarks.bench_sfm_pipeline.)
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from benchmarks.sfm_truth import TRUE_POSES, pose_errors, pose_table, run_info
from common.errors import exit_on_user_error
from common.io import write_json
from mad.colmap_poses import recover_poses, summary_lines
from mad.options import SfmOptions, SynthOptions
from mad.sfm.colmap import read_matched_pairs
from mad.sfm.consistency import neighbour_consistency, suspicious_views
from mad.sfm.geometry import c2w_from_cam_from_world, cam_from_world_from_c2w, normalise_poses
from mad.synth.generate import generate_class

CORRUPTIONS = ("opposite side", "upside down", "quarter turn", "3 deg off")


def axis_angle(axis, degrees: float) -> np.ndarray:
    """The 3x3 rotation by `degrees` about `axis` (any length)."""
    axis = np.asarray(axis, dtype=np.float64)
    return Rotation.from_rotvec(math.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()


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
    victims = dict(zip((int(v) for v in rng.choice(ids, 4, replace=False)), CORRUPTIONS))
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


def recover(class_dir: Path, threads: int | None) -> tuple[dict, dict]:
    """Set the true transforms.json aside, recover the poses, compare."""
    true = class_dir / TRUE_POSES
    if not true.is_file():
        shutil.copy(class_dir / "transforms.json", true)
    report = recover_poses(class_dir, SfmOptions(sfm_num_threads=threads), overwrite=True)
    print("\n".join(summary_lines(report)))
    return report, pose_errors(true, class_dir / "transforms.json")


def run_poses(args) -> list[dict]:
    """Every seed's class: recover, compare, corrupt and check; one row each (a failed SfM is a row too)."""
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


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="generator seeds, one class each")
    parser.add_argument("--size", type=int, default=400, help="image size of the generated classes")
    parser.add_argument("--n_train", type=int, default=100, help="training views of the generated classes")
    parser.add_argument("--flat", action="store_true", help="the flat-coloured object instead of --textured")
    parser.add_argument("--root", type=Path, default=Path("data/sfm_bench"), help="where the classes are generated")
    parser.add_argument("--num_threads", type=int, default=None, help="COLMAP threads (default: all cores)")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    results = {**run_info(sys.argv[1:] if argv is None else argv), "poses": run_poses(args)}
    out = args.root / "colmap_benchmark.json"
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
