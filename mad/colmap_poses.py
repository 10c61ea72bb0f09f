"""Recover the training-camera poses of a class without poses (real photos) by structure-from-motion.

    python -m mad.colmap_poses --class_dir data/MAD-Real/01Gorilla [--radius 4.0] [--num_threads 2]

Runs COLMAP (pycolmap, CPU) on <class_dir>/train/good: SIFT features with ONE shared pinhole camera,
exhaustive matching, incremental mapping (mad/sfm/colmap.py; resumable: the database in the work
folder, default <class_dir>/colmap, keeps features and matches). The largest model is converted to our
convention and written to <class_dir>/transforms.json:
  * camera-to-world with an OpenGL camera (looks down -z, y up): c2w = [[R^T diag(1,-1,-1), -R^T t]];
  * recentred on the point the optical axes pass closest to (the object), rotated so that the mean
    camera up vector is +z, scaled so that the mean camera distance is --radius (4: near=2 / far=6);
  * intrinsics fl_x, fl_y, cx, cy, w, h (instant-ngp / nerfstudio keys, read by mad/loader.py) and
    camera_angle_x.
The flipped-view check (mad/sfm/view_check.py) makes suspects of the views whose matches disagree with
their partners more than is normal for this capture (robust z-scores against its median and MAD), and
settles each on its 2D-3D matches with the other views' points: cleared (kept), repaired (a re-estimated
pose with clearly more inliers that agrees with its partners) or left out (--keep_suspicious keeps them).
Views COLMAP cannot register and views the check leaves out are not in transforms.json: they are listed
under "excluded_views" there (repaired views under "repaired_views"), one line each with the reason on
the console, and in the report <work_dir>/colmap_report.json (views registered, reprojection error,
scale, timings, the spread of the sparse points, per-view consistency, every suspect's verdict).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import configargparse
import numpy as np

from common.errors import DataError, exit_on_user_error
from common.io import atomic_path, write_json
from mad.images import odd_sizes
from mad.layout import GOOD, TRANSFORMS_FILE, list_images
from mad.options import SfmOptions
from mad.sfm.colmap import SfmSettings, default_threads, read_matched_pairs, run_sfm
from mad.sfm.consistency import FlipLimits
from mad.sfm.geometry import c2w_from_cam_from_world, normalise_poses, scene_bounds
from mad.sfm.view_check import CLEARED, LEFT_OUT, REPAIRED, CheckSettings, check_views

REPORT = "colmap_report.json"


def _settings(opts: SfmOptions, image_width: int, feature_mask: Path | None = None) -> SfmSettings:
    focal = None
    if opts.sfm_camera_angle_x is not None:
        focal = 0.5 * image_width / math.tan(0.5 * opts.sfm_camera_angle_x)
    return SfmSettings(camera_model=opts.sfm_camera_model, focal_px=focal, feature_mask=feature_mask,
                       affine_sift=opts.sfm_affine_sift, upright_sift=opts.sfm_upright_sift,
                       guided_matching=opts.sfm_guided_matching,
                       match_max_ratio=opts.sfm_match_max_ratio, match_max_distance=opts.sfm_match_max_distance,
                       num_threads=opts.sfm_num_threads or default_threads(), max_features=opts.sfm_max_features,
                       peak_threshold=opts.sfm_peak_threshold, seed=opts.sfm_seed,
                       init_min_inliers=opts.sfm_init_min_inliers, abs_pose_min_inliers=opts.sfm_abs_pose_min_inliers,
                       abs_pose_min_inlier_ratio=opts.sfm_abs_pose_min_inlier_ratio,
                       two_view_tracks=opts.sfm_two_view_tracks)


def check_settings(opts: SfmOptions) -> CheckSettings:
    """The flipped-view check's thresholds from the options."""
    limits = FlipLimits(z_max=opts.sfm_flip_z_max, rot_floor_deg=opts.sfm_flip_rot_floor_deg,
                        agreement_floor=opts.sfm_flip_agreement_floor, min_agreement=opts.sfm_flip_min_agreement,
                        max_rot_deg=opts.sfm_flip_max_rot_deg)
    return CheckSettings(limits=limits, max_error_px=opts.sfm_verify_max_error_px,
                         min_inliers=opts.sfm_abs_pose_min_inliers, min_gain=opts.sfm_verify_min_gain,
                         repair=opts.sfm_repair_flips, seed=opts.sfm_seed)


def _image_size(path: Path) -> tuple[int, int]:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot decode image (corrupt or not an image)")
    return image.shape[1], image.shape[0]


def feature_masks(image_dir: Path, names: list[str], sizes: list[tuple[int, int]], source: str,
                  out_dir: Path) -> Path | None:
    """The masks COLMAP reads (<out_dir>/<image name>.png, 255 = extract features here) for `source`: 'none'
    (None: the whole image), 'object' (mad.foreground.object_mask of each photograph) or a folder with one mask per
    image, named <image name>.png or <image stem>.png, of the image's size. Every mask is checked before any is
    written; a file is rewritten only when its content changed, so that an unchanged capture resumes its database."""
    import cv2

    if source == "none":
        return None
    masks = {}
    if source == "object":
        from mad.foreground import object_mask

        for name in names:
            image = cv2.imread(str(image_dir / name), cv2.IMREAD_COLOR)
            masks[name] = object_mask(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: sfm_feature_mask is neither none, object nor a folder of masks")
        for name, (width, height) in zip(names, sizes, strict=True):
            found = [p for p in (folder / f"{name}.png", folder / f"{Path(name).stem}.png") if p.is_file()]
            if not found:
                raise DataError(f"{folder / (Path(name).stem + '.png')}: no feature mask for {name}")
            mask = cv2.imread(str(found[0]), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != (height, width):
                raise DataError(f"{found[0]}: not a {width}x{height} mask image (the size of {name})")
            masks[name] = mask > 0
    empty = [n for n, m in masks.items() if not m.any()]
    if empty:
        raise DataError(f"{image_dir / empty[0]}: its feature mask is empty ({len(empty)} such views); the object "
                        "finder needs a plain backdrop, or give a folder of masks")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        encoded = cv2.imencode(".png", mask.astype(np.uint8) * 255)[1].tobytes()
        path = out_dir / f"{name}.png"
        if not path.is_file() or path.read_bytes() != encoded:
            with atomic_path(path) as tmp:
                tmp.write_bytes(encoded)
    return out_dir


def _point_radii(reconstruction, norm: dict) -> np.ndarray:
    """Distances of the sparse points from the object centre after normalisation."""
    xyz = np.array([p.xyz for p in reconstruction.points3D.values()], dtype=np.float64).reshape(-1, 3)
    moved = norm["scale"] * (xyz - np.asarray(norm["centre"])) @ np.asarray(norm["rotation"]).T
    return np.linalg.norm(moved, axis=1)


def recover_poses(class_dir: Path, opts: SfmOptions = SfmOptions(), *, out: Path | None = None,
                  work_dir: Path | None = None, overwrite: bool = False, progress: bool = True,
                  verbose: bool = False) -> dict:
    """Run SfM on <class_dir>/train/good, write transforms.json and the report; return the report."""
    class_dir = Path(class_dir)
    image_dir = class_dir / "train" / GOOD
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: training image folder not found (expected the MAD layout <class>/train/good)")
    out = Path(out) if out else class_dir / TRANSFORMS_FILE
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (pass --overwrite to replace it)")
    work_dir = Path(work_dir) if work_dir else class_dir / "colmap"
    paths = list_images(image_dir)
    if len(paths) < 3:
        raise DataError(f"{image_dir}: {len(paths)} images; structure-from-motion needs at least 3 views")
    names = [p.name for p in paths]
    sizes = [_image_size(p) for p in paths]
    odd = odd_sizes(paths, sizes, "views")
    if odd:
        raise DataError("\n".join(odd))
    width, height = sizes[0]

    start = time.perf_counter()
    masks = feature_masks(image_dir, names, sizes, opts.sfm_feature_mask,
                          work_dir.with_name(f"{work_dir.name}_feature_masks"))
    sfm = run_sfm(image_dir, names, work_dir, _settings(opts, width, masks), progress=progress, verbose=verbose)
    sfm.seconds["sfm_total_s"] = time.perf_counter() - start
    models = sfm.reconstructions
    if not models:
        report = {"class_dir": str(class_dir), "views": len(names), "registered": 0, "unregistered": names,
                  "timings_s": {k: round(v, 2) for k, v in sfm.seconds.items()}}
        write_json(work_dir / REPORT, report)
        raise DataError(f"{image_dir}: COLMAP reconstructed nothing from {len(names)} views; the object needs "
                        "more surface texture or more overlapping views")
    rec = models[max(models, key=lambda k: models[k].num_reg_images())]

    id_to_name = {i: n for n, i in sfm.image_ids.items()}
    order = {n: k for k, n in enumerate(names)}
    registered = sorted((i for i, img in rec.images.items() if img.has_pose), key=lambda i: order[id_to_name[i]])
    unregistered = [n for n in names if sfm.image_ids[n] not in set(registered)]
    camera_ids = {rec.images[i].camera_id for i in registered}
    if len(camera_ids) != 1:
        raise DataError(f"{image_dir}: expected one shared camera, the model has {len(camera_ids)}")
    cam = rec.cameras[camera_ids.pop()]
    fx, fy = float(cam.focal_length_x), float(cam.focal_length_y)
    cx, cy = float(cam.principal_point_x), float(cam.principal_point_y)
    distortion = {"k1": float(cam.params[3])} if cam.model_name == "SIMPLE_RADIAL" else {}

    t0 = time.perf_counter()
    check = check_views(rec, read_matched_pairs(sfm.database), check_settings(opts))
    sfm.seconds["check_s"] = time.perf_counter() - t0
    left_out = set(check.with_outcome(LEFT_OUT))
    kept = [i for i in registered if opts.sfm_keep_suspicious or i not in left_out]   # capture order
    cam_from_world = {i: np.asarray(rec.images[i].cam_from_world().matrix()) for i in kept}
    cam_from_world.update({i: check.verdicts[i].cam_from_world for i in check.with_outcome(REPAIRED)})
    poses, norm = normalise_poses(np.stack([c2w_from_cam_from_world(cam_from_world[i]) for i in kept]),
                                  opts.sfm_radius, orient_up=opts.sfm_orient_up)
    pose_of = dict(zip(kept, poses, strict=True))
    radii = _point_radii(rec, norm)
    bounds = {k: round(v, 4) for k, v in scene_bounds(poses[:, :3, 3], radii).items()} if len(radii) else None
    verdicts = {id_to_name[i]: check.verdicts[i] for i in registered if i in check.verdicts}   # capture order
    by_outcome = {o: [n for n, v in verdicts.items() if v.outcome == o] for o in (LEFT_OUT, REPAIRED, CLEARED)}

    consistency = check.consistency
    agreements = [c.agreement for c in consistency.values()]
    rot_deg = [c.rot_deg for c in consistency.values() if not math.isnan(c.rot_deg)]
    report = {
        "class_dir": str(class_dir), "transforms": None, "pycolmap": __import__("pycolmap").__version__,
        "views": len(names), "registered": len(registered), "registered_fraction": len(registered) / len(names),
        "written": len(kept), "unregistered": unregistered, "left_out": by_outcome[LEFT_OUT],
        "repaired": by_outcome[REPAIRED], "cleared": by_outcome[CLEARED],
        "left_out_kept": bool(opts.sfm_keep_suspicious),
        "check_lines": [v.line(n) for n, v in verdicts.items() if v.outcome != CLEARED],
        "models": {str(k): m.num_reg_images() for k, m in models.items()},
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "points3D": int(rec.num_points3D()), "mean_track_length": float(rec.compute_mean_track_length()),
        "scale_colmap_to_ours": norm["scale"], "radius": opts.sfm_radius,
        "point_distance_from_centre": {f"p{q}": round(float(np.percentile(radii, q)), 4) for q in (50, 90, 99)}
        if len(radii) else {},
        "bounds": bounds,
        "intrinsics": {"model": cam.model_name, "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": width, "h": height,
                       **distortion},
        "timings_s": {k: round(v, 2) for k, v in sfm.seconds.items()},
        "consistency": {
            "agreement_median": float(np.median(agreements)) if agreements else None,
            "agreement_min": float(np.min(agreements)) if agreements else None,
            "rot_disagreement_deg_median": float(np.median(rot_deg)) if rot_deg else None,
            "rot_disagreement_deg_max": float(np.max(rot_deg)) if rot_deg else None,
            "agreement_spread": {"median": check.agreement.median, "scale": check.agreement.scale},
            "rot_disagreement_deg_spread": {"median": check.rot.median, "scale": check.rot.scale},
            "per_view": {id_to_name[i]: {"agreement": round(c.agreement, 4), "rot_deg": round(c.rot_deg, 3),
                                         "partners": c.partners} for i, c in consistency.items()},
            "suspects": {n: v.summary() for n, v in verdicts.items()},
        },
    }
    enough = len(registered) >= opts.sfm_min_registered_fraction * len(names) and len(kept) >= 1
    if enough:
        write_json(out, {
            "camera_angle_x": 2 * math.atan(0.5 * width / fx),
            "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": width, "h": height, **distortion,
            "camera_model": cam.model_name, "bounds": bounds,
            "frames": [{"file_path": f"train/{GOOD}/{id_to_name[i]}", "transform_matrix": pose_of[i].tolist()}
                       for i in kept],
            "excluded_views": {"unregistered": unregistered,
                               "failed_flip_check": {} if opts.sfm_keep_suspicious else
                               {n: verdicts[n].reason for n in by_outcome[LEFT_OUT]}},
            "repaired_views": {n: verdicts[n].reason for n in by_outcome[REPAIRED]},
        })
        report["transforms"] = str(out)
    write_json(work_dir / REPORT, report)
    if not enough:
        raise DataError(f"{image_dir}: only {len(registered)}/{len(names)} views registered (below "
                        f"sfm_min_registered_fraction = {opts.sfm_min_registered_fraction:g}); no {out.name} "
                        f"written; see {work_dir / REPORT}")
    return report


def summary_lines(report: dict) -> list[str]:
    c, t = report["consistency"], report["timings_s"]
    share = 100 * report["registered_fraction"]
    lines = [(f"registered {report['registered']}/{report['views']} views ({share:.1f} %), "
              f"mean reprojection error {report['mean_reprojection_error_px']:.3f} px, {report['points3D']} points, "
              f"scale {report['scale_colmap_to_ours']:.4g}; SfM {t['sfm_total_s']:.1f} s "
              f"(features {t['extract_s']:.1f}, matching {t['match_s']:.1f}, mapping {t['map_s']:.1f})")]
    if report["unregistered"]:
        lines.append(f"not registered ({len(report['unregistered'])}), left out: {' '.join(report['unregistered'])}")
    if report["left_out"] and report["left_out_kept"]:
        lines.append(f"--keep_suspicious: the {len(report['left_out'])} views below are kept at their recovered poses")
    lines += [f"flipped-view check: {line}" for line in report["check_lines"]]
    if report["cleared"]:
        lines.append(f"flipped-view check: suspects cleared on their 2D-3D matches, kept unchanged "
                     f"({len(report['cleared'])}): {' '.join(report['cleared'])}")
    if c["agreement_median"] is not None:
        lines.append(f"consistency: epipolar agreement with matched neighbours median {c['agreement_median']:.3f} "
                     f"(min {c['agreement_min']:.3f}); two-view rotation disagreement median "
                     f"{c['rot_disagreement_deg_median']:.2f} deg (max {c['rot_disagreement_deg_max']:.2f})")
    spread, bounds = report["point_distance_from_centre"], report["bounds"]
    if bounds:
        lines.append(f"sparse points within {spread['p90']:.2f} (90 %) / {spread['p99']:.2f} (99 %) of the centre, "
                     f"cameras at {report['radius']:g} on average; bounds that hold the object (in "
                     f"{TRANSFORMS_FILE}): near = {bounds['near']:.2f}, far = {bounds['far']:.2f}, grid_bound = "
                     f"occupancy_bound = {bounds['object_radius']:.2f} (the config keys)")
    lines.append(f"wrote {report['transforms']} ({report['written']} views) and the report beside the COLMAP database")
    return lines


def add_sfm_options(parser: argparse.ArgumentParser) -> None:
    """The SfM options, each also under its name without the sfm_ prefix (--radius, --camera_model, ...)."""
    SfmOptions.add_args(parser, aliases={name: [name.removeprefix("sfm_")] for name in SfmOptions.__dataclass_fields__})


def build_parser() -> configargparse.ArgumentParser:
    parser = configargparse.ArgumentParser(
        prog="python -m mad.colmap_poses", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--class_dir", required=True, help="class folder in the MAD layout (images in train/good)")
    parser.add_argument("--out", default=None, help="output transforms.json (default <class_dir>/transforms.json)")
    parser.add_argument("--work_dir", default=None,
                        help="COLMAP database, models and report (default <class_dir>/colmap)")
    add_sfm_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing transforms.json")
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    report = recover_poses(Path(args.class_dir), SfmOptions.from_config(args), out=args.out and Path(args.out),
                           work_dir=args.work_dir and Path(args.work_dir), overwrite=args.overwrite,
                           progress=not args.no_progress, verbose=args.verbose)
    print("\n".join(summary_lines(report)))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
