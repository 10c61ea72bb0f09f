"""Full-pipeline benchmark on synthetic classes: wall time per class, AUROCs, AUPRO, pose accuracy.

    python -m benchmarks.bench_pipeline --configs configs/synthetic/lego_s0.txt configs/synthetic/lego_s1.txt
    python -m benchmarks.bench_pipeline --configs configs/synthetic/demo.txt          # CPU-sized check
    python -m benchmarks.bench_pipeline --configs configs/synthetic/demo.txt --seeds 0 1 2 3 4 --decompose

`--seeds S ...` runs each config once per synthetic seed (`--synth_seed S --class_name <class>_sS`; seed 0
keeps the config's class name); `--decompose` adds the oracle and NeRF-at-true-pose rows
(omniposead.decomposition) to each class: image AUROC against the perfect reference and against the NeRF.

For each config: generates the class if missing (synthesize_if_missing), trains its NeRF if no
finished checkpoint exists, runs anomaly_nerf_lego.py (poses, references, maps, metrics), then the
pose accuracy from the saved per-image poses. Prints one markdown table and writes it, with the raw
figures, to <output_root>/<dataset>/pipeline_benchmark.{md,json}. Wall time counts everything done
in this run (a reused checkpoint or finished maps make it shorter: delete ckpts/ and outputs/ for a
cold figure).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import anomaly_nerf_lego
from anomaly.results import STAGE_RECORD
from common.errors import exit_on_user_error
from common.io import atomic_write, write_json
from common.runtime import resolve_device
from mad.layout import TEST_POSES_FILE, resolve_class_dir
from omniposead import pose_accuracy
from omniposead.config import OmniposeConfig, parse_config
from omniposead.decomposition import decompose_class, scorer_key


def run_pipeline(args: list[str]) -> tuple[OmniposeConfig, float, dict, dict | None]:
    """anomaly_nerf_lego.py with `args` on one class: (its config, wall seconds, its metrics.json, the pose
    accuracy of its saved poses: omniposead.pose_accuracy.evaluate_class, None for a class without test poses,
    such as one whose training poses came from SfM)."""
    cfg = parse_config(args)
    start = time.perf_counter()
    if anomaly_nerf_lego.main(args) != 0:
        raise RuntimeError(f"anomaly_nerf_lego.py {shlex.join(args)} failed")
    wall = time.perf_counter() - start
    metrics = json.loads((cfg.run.output_dir / "metrics.json").read_text())
    if not (resolve_class_dir(cfg.run.data_root, cfg.run.class_name) / TEST_POSES_FILE).is_file():
        return cfg, wall, metrics, None
    return cfg, wall, metrics, pose_accuracy.evaluate_class(cfg, from_outputs=True, progress=False)


def run_one(config: str, extra: list[str], decompose: bool = False) -> dict:
    """The pipeline on one class (anomaly_nerf_lego.py), its pose accuracy and, with `decompose`, the oracle
    and NeRF-at-true-pose rows of omniposead.decomposition."""
    cfg, wall, metrics, poses = run_pipeline(["--config", config, *extra])
    train_log = json.loads((cfg.run.ckpt_dir / "train_log.json").read_text())
    row = {"config": config, "class": cfg.run.class_name, "dataset": cfg.run.dataset_name, "wall_s": wall,
           "pixel_auroc": metrics["pixel_auroc"], "image_auroc": metrics["image_auroc"],
           "pixel_aupro": metrics["pixel_aupro"], "per_defect": metrics["per_defect"],
           "backbone": metrics["backbone"], "pose": poses and poses["stages"], "n_images": metrics["n_images"],
           "field": cfg.nerf.field, "nerf_seconds": train_log["seconds"], "heldout_psnr": train_log["val_psnr"],
           "output_dir": str(cfg.run.output_dir), "scorer": scorer_key(cfg),
           "stages": json.loads((cfg.run.output_dir / STAGE_RECORD).read_text())}
    if decompose:
        rows = decompose_class(cfg, resolve_device(cfg.run.device), progress=False)["rows"]
        row["decomposition"] = rows
    return row


def seed_args(config: str, seed: int | None) -> list[str]:
    """Flags that run `config` on synthetic seed `seed` (None or 0: the config as it is)."""
    if not seed:
        return []
    return ["--synth_seed", str(seed), "--class_name", f"{parse_config(['--config', config]).run.class_name}_s{seed}"]


def _image_auroc(r: dict, row: str) -> float | None:
    metrics = (r.get("decomposition") or {}).get(row)
    return metrics["image_auroc"] if metrics else None


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(rows: list[dict]) -> str:
    lines = [("| class | field | wall (min) | NeRF s | held-out PSNR | pixel AUROC | image AUROC | pixel AUPRO "
              "| image AUROC NeRF@GT / oracle | rot. median retrieval / iNeRF (deg) | iNeRF < 2 deg | iNeRF > 5 deg |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["pose"]:
            ret, ine = r["pose"]["retrieval"], r["pose"]["iNeRF"]
            pose = (f"{ret['rot_median_deg']:.2f} / {ine['rot_median_deg']:.2f} | {100 * ine['share_under_2deg']:.0f}% "
                    f"| {100 * ine['share_over_5deg']:.0f}%")
        else:
            pose = "n/a (no test poses) | | "
        lines.append(f"| {r['class']} | {r['field']} | {r['wall_s'] / 60:.1f} | {r['nerf_seconds']:.0f} "
                     f"| {r['heldout_psnr']:.2f} | {r['pixel_auroc']:.3f} | {r['image_auroc']:.3f} "
                     f"| {r['pixel_aupro']:.3f} | {_cell(_image_auroc(r, 'nerf_true_pose'))} / "
                     f"{_cell(_image_auroc(r, 'oracle'))} | {pose} |")
    if len(rows) > 1:
        mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
        lines.append(f"| **mean** | | {mean('wall_s') / 60:.1f} | {mean('nerf_seconds'):.0f} "
                     f"| {mean('heldout_psnr'):.2f} | {mean('pixel_auroc'):.3f} | {mean('image_auroc'):.3f} "
                     f"| {mean('pixel_aupro'):.3f} | | | | |")
    return "\n".join(lines)


def stage_table(rows: list[dict]) -> str:
    """Seconds per stage of each class's run (stages.json; a reused checkpoint or maps cost little), seconds
    per map made, and the pipeline process's peak memory."""
    names = list(dict.fromkeys(name for r in rows for name in r["stages"]["seconds"]))
    lines = ["| class | " + " | ".join(f"{name} (s)" for name in names) + " | s per map | peak RSS (GB) |",
             "|---" * (len(names) + 3) + "|"]
    for r in rows:
        seconds, made = r["stages"]["seconds"], r["stages"]["maps_made"]
        per_map = f"{seconds['maps'] / made:.2f}" if made and "maps" in seconds else "n/a"
        lines.append(f"| {r['class']} | " + " | ".join(f"{seconds.get(name, 0.0):.1f}" for name in names)
                     + f" | {per_map} | {r['stages']['peak_rss_gb']:.2f} |")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True, help="one config per class")
    parser.add_argument("--device", default="auto", help="passed to every stage")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="synthetic seeds to run each config on (class <name>_sS; default: the config's own)")
    parser.add_argument("--decompose", action="store_true",
                        help="add image AUROC against the oracle and against the NeRF at the true pose")
    parser.add_argument("--tag", default="", help="written as pipeline_benchmark_<tag>.{md,json} (keeps runs apart)")
    args, extra = parser.parse_known_args(argv)
    rows = [run_one(config, ["--device", args.device, *seed_args(config, seed), *extra], args.decompose)
            for config in args.configs for seed in (args.seeds or [None])]
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    device = torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu"
    text = f"device: {device}; date: {time.strftime('%Y-%m-%d')}\n\n{table(rows)}\n\n{stage_table(rows)}\n"
    print(text)
    out = Path(rows[0]["output_dir"]).parent / ("pipeline_benchmark" + (f"_{args.tag}" if args.tag else ""))
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    write_json(out.with_suffix(".json"), {"device": device, "argv": argv if argv is not None else sys.argv[1:],
                                          "rows": rows})
    print(f"wrote {out}.md and .json")


if __name__ == "__main__":
    main()
