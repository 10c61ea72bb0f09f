"""Pose accuracy over many queries and seeds, with the global pose fallback on and off, side by side.

    python -m benchmarks.bench_pose_fallback --config configs/synthetic/demo.txt --seeds 5 6 7 8 9

For each seed: generates the demo class with that seed (class demo_s<seed>, so nothing is tuned on it),
trains its NeRF if no finished checkpoint exists, then estimates every test pose twice from the same
NeRF (retrieval + iNeRF + restarts + retry; once with pose_fallback, once without) and compares them with
the generator's true poses. Per seed and setting: rotation median / p90 after refinement, queries over 2
and over 5 degrees, queries that took the global search and were flagged unsure (and of those over 5
degrees, how many were flagged), seconds per query. Prints one markdown table and writes it, with the
raw reports, to <output_root>/<dataset>/pose_fallback_benchmark.{md,json}.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from common.errors import exit_on_user_error
from common.io import write_json
from common.runtime import resolve_device
from omniposead import pose_accuracy
from omniposead.config import parse_config
from omniposead.pipeline import train_class

SETTINGS = (("fallback on", "true"), ("fallback off", "false"))


def run_seed(config: str, seed: int, extra: list[str], device) -> list[dict]:
    args = ["--config", config, "--synth_seed", str(seed), "--class_name", f"demo_s{seed}", *extra]
    train_class(parse_config(args), device, progress=False)
    rows = []
    for label, flag in SETTINGS:
        cfg = parse_config([*args, "--pose_fallback", flag])
        report = pose_accuracy.evaluate_class(cfg, device=device, progress=False)
        refined, confidence = report["stages"]["iNeRF"], report["confidence"]
        rot = [r["iNeRF_rot_deg"] for r in report["per_image"]]
        rows.append({"seed": seed, "setting": label, "n": refined["n"],
                     "rot_median_deg": refined["rot_median_deg"], "rot_p90_deg": refined["rot_p90_deg"],
                     "over_2deg": sum(r > 2.0 for r in rot), "over_5deg": sum(r > 5.0 for r in rot),
                     "max_deg": max(rot), "fallback_tried": confidence["fallback_tried"],
                     "fallback_used": confidence["fallback_used"], "unsure": confidence["unsure"],
                     "over_5deg_flagged": confidence["over_5deg_flagged"],
                     "correct_flagged": confidence["correct_flagged"],
                     "retrieval_median_deg": report["stages"]["retrieval"]["rot_median_deg"],
                     "seconds_per_query": report["seconds_per_query"],
                     "threshold": report.get("pose_threshold")})
    return rows


def table(rows: list[dict]) -> str:
    out = [("| seed | setting | n | rot median | rot p90 | max | > 2 deg | > 5 deg | searched | search kept | unsure "
            "| > 5 deg flagged | correct flagged | s / query |"),
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['seed']} | {r['setting']} | {r['n']} | {r['rot_median_deg']:.2f} | {r['rot_p90_deg']:.2f} | "
                   f"{r['max_deg']:.1f} | {r['over_2deg']} | {r['over_5deg']} | {r['fallback_tried']} | "
                   f"{r['fallback_used']} | {r['unsure']} | {r['over_5deg_flagged']}/{r['over_5deg']} | "
                   f"{r['correct_flagged']} | {r['seconds_per_query']:.2f} |")
    for label, _ in SETTINGS:
        sel = [r for r in rows if r["setting"] == label]
        if sel:
            out.append(f"| **all** | {label} | {sum(r['n'] for r in sel)} | | | {max(r['max_deg'] for r in sel):.1f} | "
                       f"{sum(r['over_2deg'] for r in sel)} | {sum(r['over_5deg'] for r in sel)} | "
                       f"{sum(r['fallback_tried'] for r in sel)} | {sum(r['fallback_used'] for r in sel)} | "
                       f"{sum(r['unsure'] for r in sel)} | {sum(r['over_5deg_flagged'] for r in sel)}/"
                       f"{sum(r['over_5deg'] for r in sel)} | {sum(r['correct_flagged'] for r in sel)} | "
                       f"{sum(r['seconds_per_query'] * r['n'] for r in sel) / sum(r['n'] for r in sel):.2f} |")
    return "\n".join(out) + "\n"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="configs/synthetic/demo.txt", help="config of the class to vary")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9], help="generator seeds")
    args, extra = parser.parse_known_args(argv)
    cfg = parse_config(["--config", args.config, *extra])
    device = resolve_device(cfg.run.device)
    rows, start = [], time.perf_counter()
    for seed in args.seeds:
        rows += run_seed(args.config, seed, extra, device)
        print(table([r for r in rows if r["seed"] == seed]), end="", flush=True)
    text = (f"pose fallback benchmark, {args.config}, seeds {args.seeds}, {platform.node()} "
            f"({torch.get_num_threads()} threads, {device}), {time.perf_counter() - start:.0f} s\n\n" + table(rows))
    print(text, end="")
    out = Path(cfg.run.dataset_output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pose_fallback_benchmark.md").write_text(text)
    write_json(out / "pose_fallback_benchmark.json", {"config": args.config, "seeds": args.seeds, "rows": rows})
    print(f"-> {out / 'pose_fallback_benchmark.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
