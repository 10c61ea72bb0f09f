"""Full-pipeline benchmark on synthetic classes: wall time per class, AUROCs, AUPRO, pose accuracy.

    python -m benchmarks.bench_pipeline --configs configs/synthetic/lego_s0.txt configs/synthetic/lego_s1.txt
    python -m benchmarks.bench_pipeline --configs configs/synthetic/demo.txt          # CPU-sized check

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
import time
from pathlib import Path

import torch

import anomaly_nerf_lego
from common.errors import exit_on_user_error
from common.io import write_json
from omniposead import pose_accuracy
from omniposead.config import parse_config


def run_one(config: str, extra: list[str]) -> dict:
    args = ["--config", config, *extra]
    cfg = parse_config(args)
    start = time.perf_counter()
    anomaly_nerf_lego.main(args)
    wall = time.perf_counter() - start
    metrics = json.loads((cfg.run.output_dir / "metrics.json").read_text())
    poses = pose_accuracy.evaluate_class(cfg, from_outputs=True, progress=False)
    return {"config": config, "class": cfg.run.class_name, "dataset": cfg.run.dataset_name, "wall_s": wall,
            "pixel_auroc": metrics["pixel_auroc"], "image_auroc": metrics["image_auroc"],
            "pixel_aupro": metrics["pixel_aupro"], "per_defect": metrics["per_defect"],
            "backbone": metrics["backbone"], "pose": poses["stages"], "n_images": metrics["n_images"],
            "output_dir": str(cfg.run.output_dir)}


def table(rows: list[dict]) -> str:
    lines = ["| class | wall (min) | pixel AUROC | image AUROC | pixel AUPRO | rot. median retrieval / iNeRF (deg) "
             "| iNeRF < 2 deg | iNeRF > 5 deg |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ret, ine = r["pose"]["retrieval"], r["pose"]["iNeRF"]
        lines.append(f"| {r['class']} | {r['wall_s'] / 60:.1f} | {r['pixel_auroc']:.3f} | {r['image_auroc']:.3f} "
                     f"| {r['pixel_aupro']:.3f} | {ret['rot_median_deg']:.2f} / {ine['rot_median_deg']:.2f} "
                     f"| {100 * ine['share_under_2deg']:.0f}% | {100 * ine['share_over_5deg']:.0f}% |")
    if len(rows) > 1:
        mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
        lines.append(f"| **mean** | {mean('wall_s') / 60:.1f} | {mean('pixel_auroc'):.3f} | {mean('image_auroc'):.3f} "
                     f"| {mean('pixel_aupro'):.3f} | | | |")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True, help="one config per class")
    parser.add_argument("--device", default="auto", help="passed to every stage")
    args, extra = parser.parse_known_args(argv)
    rows = [run_one(config, ["--device", args.device, *extra]) for config in args.configs]
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    device = torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu"
    text = f"device: {device}; date: {time.strftime('%Y-%m-%d')}\n\n{table(rows)}\n"
    print(text)
    out = Path(rows[0]["output_dir"]).parent
    (out / "pipeline_benchmark.md").write_text(text)
    write_json(out / "pipeline_benchmark.json", {"device": device, "rows": rows})


if __name__ == "__main__":
    main()
