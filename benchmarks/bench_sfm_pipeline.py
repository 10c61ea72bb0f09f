"""The whole pipeline on structure-from-motion poses against the same pipeline on the true poses.

    python -m benchmarks.bench_sfm_pipeline --config configs/synthetic/sfm_demo.txt [--num_threads 2]

Three classes with the same images: the config's class (true poses, generated if missing), a copy of it
without transforms.json whose poses come from mad.colmap_poses (<class>_colmap), and a control
(<class>_aligned): the TRUE poses and intrinsics moved into the recovered frame by the alignment
similarity (benchmarks.sfm_truth.pose_errors), so that it differs from the true run only by the frame
(origin, orientation, scale) and from the recovered run only by the SfM errors. The whole pipeline
(anomaly_nerf_lego.py) runs on the three with the config's settings, and the AUROCs are printed side by
side. Figures go to <output_root>/<dataset>/colmap_benchmark.json; every flag but --num_threads is a
pipeline option (--config, --seed, --output_root, ...). (SfM poses alone: benchmarks.bench_sfm_poses.)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import anomaly_nerf_lego
from benchmarks.sfm_truth import TRUE_POSES, into_recovered_frame, pose_errors, pose_table, run_info
from common.errors import exit_on_user_error
from common.io import write_json
from mad.colmap_poses import recover_poses, summary_lines
from mad.options import SfmOptions
from mad.synth.generate import generate_class
from omniposead.config import parse_config

LABELS = ("true (generator)", "recovered (mad.colmap_poses)", "true, moved into the recovered frame (control)")


def write_aligned_control(true_dir: Path, out_dir: Path, similarity: dict) -> None:
    """A copy of the class whose transforms.json holds the true poses in the recovered frame."""
    shutil.copytree(true_dir, out_dir, ignore=shutil.ignore_patterns("colmap", TRUE_POSES, "test_poses.json"))
    meta = json.loads((true_dir / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["transform_matrix"] = into_recovered_frame(np.array(frame["transform_matrix"]), similarity).tolist()
    write_json(out_dir / "transforms.json", meta)


def recovered_copy(true_dir: Path, threads: int | None) -> Path:
    """<class>_colmap: the class's images without its poses, which mad.colmap_poses recovers (once)."""
    sfm_dir = true_dir.parent / f"{true_dir.name}_colmap"
    if not (sfm_dir / "transforms.json").is_file():
        shutil.rmtree(sfm_dir, ignore_errors=True)
        shutil.copytree(true_dir, sfm_dir, ignore=shutil.ignore_patterns("colmap", TRUE_POSES))
        shutil.move(sfm_dir / "transforms.json", sfm_dir / TRUE_POSES)   # the pipeline never sees the truth
        (sfm_dir / "test_poses.json").unlink(missing_ok=True)            # test poses are in the true frame
        recover_poses(sfm_dir, SfmOptions(sfm_num_threads=threads))
    return sfm_dir


def run_pipeline(pipeline_args: list[str], threads: int | None) -> dict:
    """Recover the poses, build the control, run the pipeline on the three classes; the figures."""
    cfg = parse_config(pipeline_args)
    true_dir = cfg.run.class_dir
    if not true_dir.exists():
        generate_class(Path(cfg.run.data_root), cfg.run.class_name, cfg.synth)
    sfm_dir = recovered_copy(true_dir, threads)
    report = json.loads((sfm_dir / "colmap" / "colmap_report.json").read_text())
    print("\n".join(summary_lines(report)))
    errors = pose_errors(sfm_dir / TRUE_POSES, sfm_dir / "transforms.json")
    aligned_dir = true_dir.parent / f"{true_dir.name}_aligned"
    if not (aligned_dir / "transforms.json").is_file():
        write_aligned_control(true_dir, aligned_dir, errors["similarity"])
    result = {"sfm_report": report, "pose_errors": errors, "runs": {}}
    names = (true_dir.name, sfm_dir.name, aligned_dir.name)
    for name in names:
        start = time.perf_counter()
        anomaly_nerf_lego.main([*pipeline_args, "--class_name", name])
        metrics = json.loads((cfg.for_class(name).run.output_dir / "metrics.json").read_text())
        result["runs"][name] = {"wall_s": time.perf_counter() - start, "pixel_auroc": metrics["pixel_auroc"],
                                "image_auroc": metrics["image_auroc"], "pixel_aupro": metrics["pixel_aupro"]}
    print(pose_table([{"class": sfm_dir.name, "report": report, "errors": errors}]))
    print("| poses | pixel AUROC | image AUROC | pixel AUPRO | wall (min) |\n|---|---|---|---|---|")
    for name, label in zip(names, LABELS, strict=True):
        r = result["runs"][name]
        print(f"| {label} | {r['pixel_auroc']:.3f} | {r['image_auroc']:.3f} | {r['pixel_aupro']:.3f} "
              f"| {r['wall_s'] / 60:.1f} |")
    return result


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--num_threads", type=int, default=None, help="COLMAP threads (default: all cores)")
    args, pipeline_args = parser.parse_known_args(argv)
    if not pipeline_args:
        parser.error("give the pipeline's options, at least --config FILE")
    results = {**run_info(sys.argv[1:] if argv is None else argv), "pipeline": run_pipeline(pipeline_args,
                                                                                           args.num_threads)}
    out = parse_config(pipeline_args).run.dataset_output_dir / "colmap_benchmark.json"
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
