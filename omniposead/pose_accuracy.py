"""How good are the estimated poses? Compares coarse (retrieval) and refined (iNeRF) test poses with
the true ones of a generated class.

    python -m omniposead.pose_accuracy --config configs/<dataset>/<class>.txt [--from_outputs]

This module holds the only reader of ``<class_dir>/test_poses.json`` (written by mad.synthesize; MAD
itself has no test poses, so this diagnostic only runs on generated data or with user-provided poses);
the decomposition diagnostic (omniposead.decomposition) uses it too. The pipeline never does.

Default: load the class as the pipeline does (omniposead.pipeline.load_class, without training),
estimate the pose of every test image (retrieval + iNeRF) and time it. With --from_outputs: read the
poses the pipeline already wrote per image (anomaly.results records, keys "coarse_pose", "refined_pose").

Errors: rotation = geodesic angle in degrees; translation = ||t_est - t_true|| / ||t_true|| (fraction of
the camera's distance to the object). Report: printed table + outputs/<dataset>/<class>/pose_accuracy.json.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anomaly.results import load_record, result_paths
from common.errors import DataError, exit_on_user_error
from common.io import write_json
from common.rotations import rotation_error_deg
from common.runtime import resolve_device, synchronize
from inerf.metrics import summarise, translation_error_frac
from mad.layout import TEST_POSES_FILE
from mad.transforms import frame_pose
from omniposead.classes import exit_code, run_classes
from omniposead.config import OmniposeConfig, build_parser
from omniposead.pipeline import estimate_batch_poses, load_class

STAGES = (("retrieval", "coarse_pose"), ("iNeRF", "refined_pose"))
# per-image pose confidence, when known: the record's key of each
RECORD_FLAGS = {"unsure": "pose_unsure", "fallback_tried": "pose_fallback_tried", "fallback_used": "pose_fallback_used",
                "rerun": "pose_rerun", "rerun_used": "pose_rerun_used", "loss_ratio": "pose_loss_ratio"}
FLAGS = tuple(RECORD_FLAGS)


def flags_of(record: dict) -> dict:
    """The pose-confidence flags of a per-image record (PoseEstimate.record), those it has."""
    return {flag: record[key] for flag, key in RECORD_FLAGS.items() if key in record}


def load_test_poses(class_dir) -> dict[str, np.ndarray]:
    """{"<defect_type>/<stem>": [4,4] camera-to-world} from <class_dir>/test_poses.json."""
    path = Path(class_dir) / TEST_POSES_FILE
    if not path.is_file():
        raise DataError(f"{path}: no test poses (generated classes and captures with poses have them; MAD itself "
                        "does not)")
    try:
        frames = json.loads(path.read_text())["frames"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a test-pose file with a 'frames' list ({err})") from None
    poses = {}
    for i, frame in enumerate(frames):
        pose = frame_pose(frame, i, path)
        rel = Path(frame["file_path"])
        poses[f"{rel.parent.name}/{rel.stem}"] = pose
    return poses


def pose_errors(estimates: dict[str, dict], truth: dict[str, np.ndarray]) -> dict:
    """Per-image and summary errors of each stage for the names present in both."""
    names = [n for n in estimates if n in truth]
    report = {"n": len(names), "stages": {}, "per_image": []}
    true = np.stack([truth[n] for n in names]) if names else np.zeros((0, 4, 4))
    per_stage = {}
    for stage, key in STAGES:
        est = np.stack([np.asarray(estimates[n][key], dtype=np.float64) for n in names]) if names else true
        rot, trans = rotation_error_deg(est, true), translation_error_frac(est, true)
        per_stage[stage] = (rot, trans)
        report["stages"][stage] = summarise(rot, trans)
    for i, name in enumerate(names):
        row = {"name": name, **{flag: estimates[name][flag] for flag in FLAGS if flag in estimates[name]}}
        for stage, _ in STAGES:
            row[f"{stage}_rot_deg"] = float(per_stage[stage][0][i])
            row[f"{stage}_trans_frac"] = float(per_stage[stage][1][i])
        report["per_image"].append(row)
    report["confidence"] = confidence_summary(report["per_image"])
    return report


def confidence_summary(rows: list[dict], failure_deg: float = 5.0) -> dict:
    """How the pose confidence and the global fallback did: counts over the refined poses."""
    rows = [r for r in rows if "unsure" in r]
    failed = [r for r in rows if r["iNeRF_rot_deg"] > failure_deg]
    correct = [r for r in rows if r["iNeRF_rot_deg"] <= failure_deg]
    return {"n": len(rows), "unsure": sum(r["unsure"] for r in rows),
            "fallback_tried": sum(r.get("fallback_tried", False) for r in rows),
            "fallback_used": sum(r.get("fallback_used", False) for r in rows),
            "rerun": sum(r.get("rerun", False) for r in rows),
            "rerun_used": sum(r.get("rerun_used", False) for r in rows),
            f"over_{failure_deg:g}deg": len(failed),
            f"over_{failure_deg:g}deg_flagged": sum(r["unsure"] for r in failed),
            "correct_flagged": sum(r["unsure"] for r in correct)}


def format_table(report: dict) -> str:
    lines = [(f"{'stage':<10} {'n':>4} {'rot med':>9} {'rot p90':>9} {'<2 deg':>7} {'>5 deg':>7} {'t med':>8} "
              f"{'t p90':>8}")]
    for stage, s in report["stages"].items():
        if not s.get("n"):
            continue
        lines.append(f"{stage:<10} {s['n']:>4} {s['rot_median_deg']:>8.2f}° {s['rot_p90_deg']:>8.2f}° "
                     f"{100 * s['share_under_2deg']:>6.1f}% {100 * s['share_over_5deg']:>6.1f}% "
                     f"{s['trans_median_frac']:>8.4f} {s['trans_p90_frac']:>8.4f}")
    c = report.get("confidence") or {}
    if c.get("n"):
        lines.append(f"pose unsure: {c['unsure']} of {c['n']} ({c['over_5deg_flagged']} of the {c['over_5deg']} over "
                     f"5 deg, {c['correct_flagged']} correct ones); global fallback tried {c['fallback_tried']}, "
                     f"used {c['fallback_used']}; refined again (inerf_rerun_factor) {c.get('rerun', 0)}, kept "
                     f"{c.get('rerun_used', 0)}")
    if report.get("seconds_per_query") is not None:
        lines.append(f"seconds per query (retrieval + iNeRF): {report['seconds_per_query']:.3f}"
                     + (f"; iNeRF work per query: {report['work_rays_per_query']:,.0f} rays, "
                        f"{report['work_samples_per_query']:,.0f} field evaluations"
                        if report.get("work_rays_per_query") is not None else ""))
    return "\n".join(lines)


def estimates_from_outputs(cfg: OmniposeConfig, names: Sequence[str]) -> tuple[dict[str, dict], list[str]]:
    """Poses the pipeline wrote per image; returns (estimates, missing record paths)."""
    estimates, missing = {}, []
    for name in names:
        path = result_paths(cfg.run.output_dir, name).record
        if not path.is_file():
            missing.append(str(path))
            continue
        record = load_record(path)
        try:
            estimates[name] = {key: np.asarray(record[key], dtype=np.float64).reshape(4, 4) for _, key in STAGES}
            estimates[name].update(flags_of(record))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}: cannot read coarse_pose/refined_pose as 4x4 matrices ({err})") from None
    return estimates, missing


def estimates_from_pipeline(cfg: OmniposeConfig, device, progress: bool = True) -> tuple[dict[str, dict], float, dict]:
    """Run retrieval + iNeRF on every test image; returns (estimates, seconds per query, info)."""
    assets = load_class(cfg, device, train=False, progress=progress)
    samples = assets.test_set
    images = np.stack([s.image for s in samples])
    synchronize(assets.device)
    t0 = time.perf_counter()
    results = estimate_batch_poses(assets, images, progress=progress)
    synchronize(assets.device)
    seconds = (time.perf_counter() - t0) / max(len(samples), 1)
    estimates = {s.name: {"coarse_pose": r.coarse_pose, "refined_pose": r.refined_pose, **flags_of(r.record())}
                 for s, r in zip(samples, results, strict=True)}
    info = {"backbone": assets.backbone.description, "retrieval_notes": assets.database.notes,
            "device": str(assets.device),
            "final_loss_median": float(np.median([r.final_loss for r in results])),
            "pose_threshold": assets.pose_calibration.threshold if assets.pose_calibration else None,
            "sampling_fallbacks": sum(r.sampling != cfg.inerf.inerf_sampling for r in results),
            "work_rays_per_query": float(np.mean([r.work_rays for r in results])),
            "work_samples_per_query": float(np.mean([r.work_samples for r in results]))}
    return estimates, seconds, info


def evaluate_class(cfg: OmniposeConfig, from_outputs: bool = False, device=None, progress: bool = True) -> dict:
    """Pose accuracy of one class; writes outputs/<dataset>/<class>/pose_accuracy.json and returns the report."""
    truth = load_test_poses(cfg.run.class_dir)
    seconds, info, missing = None, {}, []
    if from_outputs:
        estimates, missing = estimates_from_outputs(cfg, list(truth))
        if not estimates:
            raise DataError(f"{cfg.run.output_dir}: no per-image pose records (e.g. {missing[0] if missing else '?'}); "
                            "run the pipeline first or drop --from_outputs")
    else:
        device = resolve_device(cfg.run.device) if device is None else device
        estimates, seconds, info = estimates_from_pipeline(cfg, device, progress)
    unknown = sorted(set(estimates) - set(truth))
    inerf = cfg.inerf
    report = {"dataset": cfg.run.dataset_name, "class": cfg.run.class_name,
              "source": "outputs" if from_outputs else "pipeline", **pose_errors(estimates, truth),
              "seconds_per_query": seconds, "missing_outputs": missing, "images_without_true_pose": unknown,
              "settings": {"desc_dim": cfg.retrieval.desc_dim, "retrieval_size": cfg.retrieval.retrieval_size,
                           "inerf_steps": inerf.inerf_steps, "inerf_rays": inerf.inerf_rays,
                           "inerf_lr": inerf.inerf_lr, "inerf_sampling": inerf.inerf_sampling,
                           "kernel_size": inerf.kernel_size, "dil_iter": inerf.dil_iter,
                           "inerf_topk_restarts": inerf.inerf_topk_restarts,
                           "inerf_restart_min_angle": inerf.inerf_restart_min_angle,
                           "inerf_restart_fraction": inerf.inerf_restart_fraction,
                           "inerf_start_rays": inerf.inerf_start_rays,
                           "inerf_retry_factor": inerf.inerf_retry_factor,
                           "downscale": cfg.run.image_downscale},
              **info}
    write_json(cfg.run.output_dir / "pose_accuracy.json", report)
    return report


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("Pose accuracy of retrieval (coarse) and iNeRF (refined) against <class_dir>/test_poses.json")
    parser.add_argument("--from_outputs", action="store_true",
                        help="read coarse/refined poses from the pipeline's per-image JSONs instead of running it")
    namespace = parser.parse_args(argv)
    cfg = OmniposeConfig.from_namespace(namespace)

    def one_class(name: str) -> dict:
        class_cfg = cfg.for_class(name)
        report = evaluate_class(class_cfg, from_outputs=bool(namespace.from_outputs))
        print(f"== {report['dataset']}/{name} ({report['source']}) ==")
        print(format_table(report))
        if report["missing_outputs"]:
            print(f"({len(report['missing_outputs'])} test images had no output JSON)")
        print(f"-> {class_cfg.run.output_dir / 'pose_accuracy.json'}")
        return report

    return exit_code(run_classes(cfg.run.data_root, cfg.run.class_name, one_class, "pose accuracy"))


if __name__ == "__main__":
    sys.exit(main())
