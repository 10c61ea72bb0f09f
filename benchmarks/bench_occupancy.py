"""Empty-space skipping, side by side: plain sampling against the occupancy grid on one class, same machine,
same run.

    python -m benchmarks.bench_occupancy --config configs/synthetic/demo.txt --threads 1 \
        [--budgets 60 120] [--steps 800] [--variant grid64 "--occupancy_samples 64" ...] [--json out.json]

Variants: "plain" (the config as given, occupancy_grid off), "grid" (the config with occupancy_grid on)
and any `--variant NAME "FLAGS"` (flags added to the grid variant's). For each variant:
  * equal wall time: trains a fresh model for each budget in --budgets (seconds of training on the
    trainer's own clock, which stops it); the variants take turns, budget by budget, so that a change of
    load on a shared machine hits them alike.
  * equal steps: trains a fresh model for --steps steps (default: the config's n_iters) without a time limit.
Each row: steps, training seconds (wall, including the final held-out validation: the trainer's clock) and
CPU seconds of this process, training rays/s and mean MLP
evaluations per ray (both passes), held-out PSNR, ms per held-out view render, share of occupied cells.
Checkpoints go to a temporary folder; the class is generated first if the config asks for it.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.errors import exit_on_user_error
from common.io import write_json
from common.runtime import resolve_device, seed_everything, synchronize
from mad.loader import load_train_views
from nerf.psnr import heldout_psnr
from omniposead.config import OmniposeConfig, parse_config
from omniposead.pipeline import nerf_trainer, prepare_class


def train_to(cfg: OmniposeConfig, views, device, ckpt_root: str, *, minutes: float, n_iters: int) -> dict:
    """Train (or resume) the class's NeRF under `ckpt_root` up to `minutes` of training or `n_iters` steps."""
    run_cfg = dataclasses.replace(cfg, run=cfg.run.replace(ckpt_root=ckpt_root),
                                  train=cfg.train.replace(max_train_minutes=minutes, n_iters=n_iters))
    seed_everything(cfg.run.seed)
    trainer = nerf_trainer(run_cfg, views, device, progress=False)
    cpu0 = time.process_time()
    summary = trainer.run()
    cpu = time.process_time() - cpu0
    renderer = trainer.renderer.eval()
    synchronize(device)
    t0 = time.perf_counter()
    heldout_psnr(renderer, trainer.val_poses, trainer.val_images, trainer.intrinsics)
    synchronize(device)
    render_ms = 1000.0 * (time.perf_counter() - t0) / max(len(trainer.val_images), 1)
    grid = renderer.grid
    return {"steps": summary.step, "train_s": summary.seconds, "session_cpu_s": cpu, "rays_per_s": summary.rays_per_s,
            "samples_per_ray": summary.samples_per_ray, "val_psnr": summary.val_psnr,
            "baseline_psnr": summary.baseline_psnr, "render_ms_per_view": render_ms,
            "occupied_fraction": grid.occupied_fraction() if grid is not None else None}


TABLE_HEADER = (("| variant | run | steps | train s | CPU s | rays/s | samples/ray | held-out PSNR | ms/view "
                 "| occupied |"),
                "|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, label: str, r: dict) -> str:
    """One markdown row of TABLE_HEADER: a variant's figures after one run of train_to."""
    occupied = f"{100 * r['occupied_fraction']:.1f} %" if r["occupied_fraction"] is not None else "-"
    return (f"| {name} | {label} | {r['steps']} | {r['train_s']:.0f} | {r['session_cpu_s']:.0f} | "
            f"{r['rays_per_s']:,.0f} | {r['samples_per_ray']:.1f} | {r['val_psnr']:.2f} | "
            f"{r['render_ms_per_view']:.0f} | {occupied} |")


@exit_on_user_error
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=float, nargs="*", default=[60.0, 120.0],
                   help="training budgets in seconds for the equal-wall-time comparison (cumulative, resumed)")
    p.add_argument("--steps", type=int, default=None, help="steps of the equal-steps comparison (default: n_iters; "
                                                           "0 = skip it)")
    p.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "FLAGS"),
                   help="an extra grid variant: its name and the flags added to the grid variant's")
    p.add_argument("--no_plain", action="store_true", help="leave out the plain-sampling variant")
    p.add_argument("--no_grid", action="store_true", help="leave out the grid variant of the config as it is "
                                                          "(keep only plain and the --variant ones)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args, rest = p.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {} if args.no_plain else {"plain": parse_config([*rest, "--occupancy_grid", "false"])}
    if not args.no_grid:
        variants["grid"] = parse_config([*rest, "--occupancy_grid", "true"])
    for name, flags in args.variant:
        variants[name] = parse_config([*rest, "--occupancy_grid", "true", *shlex.split(flags)])
    cfg = next(iter(variants.values()))
    device = resolve_device(cfg.run.device)
    views = load_train_views(prepare_class(cfg), downscale=cfg.run.image_downscale, white_bkgd=cfg.run.white_bkgd)
    steps = cfg.train.n_iters if args.steps is None else args.steps
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)"
    print(f"device: {machine}; torch {torch.__version__}; class {cfg.run.class_name} "
          f"({views.height}x{views.width}, {len(views.images)} views)")
    results: dict = {"device": machine, "torch": torch.__version__, "class": cfg.run.class_name,
                     "argv": list(argv if argv is not None else sys.argv[1:]), "variants": {}}
    lines = list(TABLE_HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:                      # variants take turns, budget by budget
            for name, vcfg in variants.items():
                r = train_to(vcfg, views, device, f"{tmp}/{name}/{budget:g}s", minutes=budget / 60.0,
                             n_iters=10 ** 9)
                results["variants"].setdefault(name, {})[f"{budget:g}s"] = r
                lines.append(row(name, f"{budget:g} s", r))
                print(lines[-1], flush=True)
        if steps:
            for name, vcfg in variants.items():
                r = train_to(vcfg, views, device, f"{tmp}/{name}/steps", minutes=0.0, n_iters=steps)
                results["variants"].setdefault(name, {})[f"{steps}steps"] = r
                lines.append(row(name, f"{steps} steps", r))
                print(lines[-1], flush=True)
    print("\n".join(lines))
    results["table"] = lines
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
