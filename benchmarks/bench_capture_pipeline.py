"""A real capture end to end: poses by SfM -> pipeline -> metrics, beside the same with the capture's own poses.

    python -m benchmarks.bench_capture_pipeline --capture data/captures/skull --config configs/real/skull.txt \\
        --keep_distortion --sfm_flags "--num_threads 1 --camera_angle_x 0.4335 --affine_sift true \\
        --upright_sift true --match_max_ratio 0.85" --decompose

Two classes of the same photographs, painted the same way (mad.capture, `--backdrop hull`), that differ only in
where their poses come from:
1. the config's class, with the capture's poses (<capture>/poses.json), made if missing;
2. <class>_<--sfm_name> (default <class>_sfm), with the poses that `mad.colmap_poses <--sfm_flags>` recovers from
   the training photographs alone at --sfm_size px, as a user without a calibration gets them (SfM runs on the
   class <capture>_sfm<size>[_raw] of benchmarks.bench_capture_sfm, in its sfm_variants/<--sfm_name>). Its
   training views are the photographs SfM registered, with SfM's poses, camera and bounds, and the visual hull that
   masks every image is voted from them. SfM sees the photographs undistorted by the capture's k1, or with
   `--keep_distortion` as they are (for `--camera_model SIMPLE_RADIAL`, whose own k1 then undistorts the class).
   The held-out photographs' capture poses are moved into the SfM frame by the similarity that aligns the
   registered views with the capture's poses (benchmarks.sfm_truth): the test images' hull masks (a stand-in for a
   plain backdrop) and the pose errors use them; the pipeline never reads a test pose.
The pipeline (benchmarks.bench_pipeline: training, poses, maps, metrics; `--decompose` adds the NeRF at the true
pose and the oracle) runs on both, and one table shows them side by side with SfM's registered share and pose
errors. Every other flag is a pipeline option (e.g. --output_root). An existing SfM-pose class is reused when it
was made with the same --sfm_flags, else refused (delete it, with its checkpoints and outputs, to recover the poses
again). Figures: <output_root>/<dataset>/capture_pipeline[_<tag>].{md,json}.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from benchmarks.bench_capture_sfm import run_variant
from benchmarks.bench_pipeline import run_one, table
from benchmarks.sfm_truth import into_recovered_frame
from common.errors import DataError, exit_on_user_error
from common.io import atomic_write, write_json
from mad.capture import CAPTURE_RECORD, POSES_FILE, build_capture_class, capture_poses_from_sfm, read_capture_poses
from mad.layout import TRANSFORMS_FILE
from omniposead.config import parse_config


def sfm_poses(sfm_class: Path, transforms: Path, capture: Path, similarity: dict, source: str) -> dict:
    """A poses.json for `capture` from SfM on the class made of it (`sfm_class`, its record maps the training
    images to photographs): the registered training photographs with SfM's poses, camera and bounds, and every
    held-out photograph with its capture pose moved into SfM's frame by `similarity` (pose_errors': capture ~
    s R sfm + t), listed under "aligned_from_capture". The lens distortion is SfM's, or the capture's when SfM
    saw the photographs undistorted by it."""
    record = json.loads((sfm_class / CAPTURE_RECORD).read_text())
    poses = capture_poses_from_sfm(transforms, capture, source, class_record=record)
    capture_camera, capture_poses = read_capture_poses(capture / POSES_FILE)
    held_out = sorted(set(record["test"].values()) & set(capture_poses))
    if record["undistorted"]:          # SfM saw the photographs undistorted by the capture's k1: so must the class
        if "k1" in poses:
            raise DataError(f"{transforms}: SfM estimated a lens distortion on photographs already undistorted; "
                            "run SIMPLE_RADIAL on the photographs as they are (--keep_distortion)")
        poses["k1"] = capture_camera["k1"]
    poses["frames"] += [{"file_path": f"images/{photo}",
                         "transform_matrix": into_recovered_frame(capture_poses[photo], similarity).tolist()}
                        for photo in held_out]
    poses["aligned_from_capture"] = held_out
    return poses


def sfm_class(capture: Path, class_dir: Path, args: argparse.Namespace) -> dict:
    """Recover the training poses by SfM (benchmarks.bench_capture_sfm.run_variant) and write <class>_sfm from
    them (sfm_poses, then mad.capture with the hull); returns the SfM row (report and errors)."""
    raw = "_raw" if args.keep_distortion else ""
    on = class_dir.parent / f"{capture.name}_sfm{args.sfm_size}{raw}"
    if not (on / TRANSFORMS_FILE).is_file():
        build_capture_class(capture, on, size=args.sfm_size, test_every=args.test_every, poses=capture / POSES_FILE,
                            undistort=not args.keep_distortion)
    row = run_variant(on, args.sfm_name, args.sfm_flags)
    if "errors" not in row:
        raise DataError(f"SfM on {on} failed ({row['error']}); add --min_registered_fraction 0 to --sfm_flags to "
                        "use a partial model")
    work = on / "sfm_variants" / args.sfm_name
    source = f"mad.colmap_poses {args.sfm_flags} on {on}'s training photographs at {args.sfm_size} px"
    poses = sfm_poses(on, work / TRANSFORMS_FILE, capture, row["errors"]["similarity"], source)
    write_json(work / POSES_FILE, poses)
    write_json(work / SFM_ROW, row)
    build_capture_class(capture, class_dir, size=args.size, test_every=args.test_every, backdrop="hull",
                        poses=work / POSES_FILE)
    return row


SFM_ROW = "capture_sfm_row.json"     # beside the SfM run's poses.json: its report and errors, for a reused class


def reused_sfm_row(sfm_dir: Path, flags: str) -> dict:
    """The SfM row of an existing SfM-pose class, which must have been made with the same `flags`."""
    row = json.loads((Path(json.loads((sfm_dir / CAPTURE_RECORD).read_text())["poses"]).parent / SFM_ROW).read_text())
    if row["flags"] != flags:
        raise DataError(f"{sfm_dir}: made with --sfm_flags {row['flags']!r}, not {flags!r}; delete it (and its "
                        "checkpoints and outputs) or give another --sfm_name")
    return row


def sfm_lines(row: dict, photos: int) -> str:
    """SfM's account on the capture: views registered, pose errors against the capture's poses."""
    report, errors = row["report"], row["errors"]
    rot, pos = errors["rotation_deg"], errors["position_percent_of_radius"]
    over5 = sum(v["rotation_deg"] > 5 for v in errors["per_view"].values())
    return (f"SfM ({row['flags']}): {errors['recovered']} of {photos} training photographs registered "
            f"({100 * errors['recovered'] / photos:.0f} %); rotation error against the capture's poses median "
            f"{rot['median']:.2f} deg, max {rot['max']:.2f} deg, {over5} over 5 deg; position median "
            f"{pos['median']:.2f} % of the radius; {report['timings_s']['sfm_total_s']:.0f} s")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/captures/skull"), help="the capture folder")
    parser.add_argument("--config", required=True, help="the pipeline's config of the capture's class")
    parser.add_argument("--size", type=int, default=400, help="long side of the classes' images (mad.capture --size)")
    parser.add_argument("--sfm_flags", default="", help="mad.colmap_poses flags of the SfM run")
    parser.add_argument("--sfm_size", type=int, default=800, help="long side of the photographs SfM sees, pixels")
    parser.add_argument("--sfm_name", default="sfm",
                        help="the SfM-pose class is <class>_<sfm_name>; its SfM run is in sfm_variants/<sfm_name>")
    parser.add_argument("--keep_distortion", action="store_true",
                        help="SfM on the photographs with their lens distortion (mad.capture --keep_distortion)")
    parser.add_argument("--test_every", type=int, default=5, help="every this-many-th photograph is held out")
    parser.add_argument("--decompose", action="store_true", help="add the NeRF at the true pose and the oracle")
    parser.add_argument("--tag", default="", help="written as capture_pipeline_<tag>.{md,json}")
    args, pipeline_args = parser.parse_known_args(argv)
    if not (args.capture / POSES_FILE).is_file():
        raise DataError(f"{args.capture / POSES_FILE}: the capture has no poses to compare with")
    cfg = parse_config(["--config", args.config, *pipeline_args])
    class_dir = cfg.run.class_dir
    if not (class_dir / CAPTURE_RECORD).is_file():
        build_capture_class(args.capture, class_dir, size=args.size, test_every=args.test_every, backdrop="hull",
                            poses=args.capture / POSES_FILE)
    sfm_dir = class_dir.parent / f"{class_dir.name}_{args.sfm_name}"
    if (sfm_dir / CAPTURE_RECORD).is_file():
        print(f"{sfm_dir}: reusing its SfM poses (delete it to recover them again)")
        sfm_row = reused_sfm_row(sfm_dir, args.sfm_flags)
    else:
        sfm_row = sfm_class(args.capture, sfm_dir, args)
    rows = [run_one(args.config, [*pipeline_args, "--class_name", name], args.decompose)
            for name in (class_dir.name, sfm_dir.name)]
    photos = len(json.loads((class_dir / CAPTURE_RECORD).read_text())["train"])
    views = [len(json.loads((d / TRANSFORMS_FILE).read_text())["frames"]) for d in (class_dir, sfm_dir)]
    text = (f"device: {platform.processor() or 'cpu'}; date: {time.strftime('%Y-%m-%d')}\n\n"
            + sfm_lines(sfm_row, photos) + "\n\n"
            + f"training views: capture's poses {views[0]}, SfM's {views[1]} (of {photos} photographs)\n\n"
            + table(rows) + "\n")
    print(text)
    out = cfg.run.dataset_output_dir / ("capture_pipeline" + (f"_{args.tag}" if args.tag else ""))
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    write_json(out.with_suffix(".json"), {"argv": argv if argv is not None else sys.argv[1:], "sfm": sfm_row,
                                          "training_views": views, "rows": rows})
    print(f"wrote {out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
