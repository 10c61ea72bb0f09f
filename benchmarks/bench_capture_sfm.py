"""Structure-from-motion on a real capture against the capture's own poses (issue 35).

    python -m benchmarks.bench_capture_sfm --capture data/captures/skull --size 800 \\
        --variant defaults "" --variant affine "--affine_sift true --peak_threshold 0.002"

The capture's class is made once at --size px with its poses (mad.capture: every --test_every-th photograph held out,
transforms.json from <capture>/poses.json). Each variant runs `mad.colmap_poses` with its flags on that class's training
photographs (its own work folder; the class's transforms.json is never touched) and is compared with the capture's poses
after the similarity that best aligns them (benchmarks.sfm_truth.pose_errors): views registered (of those the capture
has poses for), rotation and position errors, the SfM wall time. A variant whose SfM fails is a row too;
`--min_registered_fraction 0` in a variant's flags measures the views of a partial model. Figures go to
<out>/<class>/capture_sfm.json."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from benchmarks.sfm_truth import pose_errors
from common.errors import DataError, exit_on_user_error
from common.io import write_json
from mad.capture import POSES_FILE, build_capture_class
from mad.colmap_poses import add_sfm_options, recover_poses, summary_lines
from mad.layout import TRANSFORMS_FILE
from mad.options import SfmOptions


def sfm_options(flags: str) -> SfmOptions:
    """The SfM options of a variant's flags (mad.colmap_poses's, without the sfm_ prefix or with it)."""
    parser = argparse.ArgumentParser()
    add_sfm_options(parser)
    return SfmOptions.from_config(parser.parse_args(shlex.split(flags)))


def run_variant(class_dir: Path, name: str, flags: str) -> dict:
    """One variant's SfM on the class's training photographs and its errors against the capture's poses."""
    work = class_dir / "sfm_variants" / name
    row = {"variant": name, "flags": flags}
    try:
        report = recover_poses(class_dir, sfm_options(flags), out=work / TRANSFORMS_FILE, work_dir=work / "colmap",
                               overwrite=True, progress=False)
    except DataError as err:
        print(f"{name}: {err}")
        report_path = work / "colmap" / "colmap_report.json"
        return {**row, "error": str(err), "report": _read(report_path)}
    print("\n".join(f"{name}: {line}" for line in summary_lines(report)))
    return {**row, "report": report, "errors": pose_errors(class_dir / TRANSFORMS_FILE, work / TRANSFORMS_FILE)}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def table(rows: list[dict], posed: int, photos: int) -> str:
    header = (f"| variant | registered (of {posed} posed, {photos} training photographs) | rotation error median / "
              "p90 / max (deg) | position error median / max (% radius) | reprojection (px) | SfM s (features, "
              "matching, mapping) |")
    lines = [header, "|---|---|---|---|---|---|"]
    for r in rows:
        report = r.get("report") or {}
        t = report.get("timings_s", {})
        seconds = (f"{t['sfm_total_s']:.0f} ({t['extract_s']:.0f}, {t['match_s']:.0f}, {t['map_s']:.0f})"
                   if "sfm_total_s" in t else "")
        if "errors" not in r:
            lines.append(f"| {r['variant']} | {report.get('registered', 0)} (no {TRANSFORMS_FILE}: see the JSON's "
                         f"error) | | | | {seconds} |")
            continue
        e, rot, pos = r["errors"], r["errors"]["rotation_deg"], r["errors"]["position_percent_of_radius"]
        lines.append(f"| {r['variant']} | {e['recovered']} ({100 * e['recovered'] / posed:.0f} %) "
                     f"| {rot['median']:.2f} / {rot['p90']:.2f} / {rot['max']:.2f} | {pos['median']:.2f} / "
                     f"{pos['max']:.2f} | {report['mean_reprojection_error_px']:.2f} | {seconds} |")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/captures/skull"), help="the capture folder")
    parser.add_argument("--out", type=Path, default=Path("data/real"), help="where the capture's class is made")
    parser.add_argument("--class_name", default=None, help="default: <capture name>_sfm<size>[_raw]")
    parser.add_argument("--size", type=int, default=800, help="long side of the class's photographs, pixels")
    parser.add_argument("--keep_distortion", action="store_true",
                        help="photographs with their lens distortion (class <capture>_sfm<size>_raw), for variants "
                             "with --camera_model SIMPLE_RADIAL: SfM without the capture's k1")
    parser.add_argument("--test_every", type=int, default=5, help="every this-many-th photograph is held out")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "FLAGS"), required=True,
                        help="a name and the mad.colmap_poses flags of one SfM run (repeatable)")
    args = parser.parse_args(argv)
    poses = args.capture / POSES_FILE
    if not poses.is_file():
        raise DataError(f"{poses}: the capture has no poses to compare with (mad.capture --poses_from_sfm)")
    raw = "_raw" if args.keep_distortion else ""
    class_dir = args.out / (args.class_name or f"{args.capture.name}_sfm{args.size}{raw}")
    if not (class_dir / TRANSFORMS_FILE).is_file():
        build_capture_class(args.capture, class_dir, size=args.size, test_every=args.test_every, poses=poses,
                            undistort=not args.keep_distortion)
    record = json.loads((class_dir / "capture.json").read_text())
    posed = len(json.loads((class_dir / TRANSFORMS_FILE).read_text())["frames"])
    rows = [run_variant(class_dir, name, flags) for name, flags in args.variant]
    print(table(rows, posed, len(record["train"])))
    write_json(class_dir / "capture_sfm.json", {"capture": str(args.capture), "size": args.size, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
