"""Radiance fields side by side: held-out PSNR against training seconds, speed and memory, for each field
(`--field`) on one class, same renderer, same occupancy grid, one field at a time.

    python -m benchmarks.bench_fields --config configs/synthetic/demo.txt --budgets 30 60 120 200 \
        --out outputs/bench_fields/demo [--decompose]
    python -m benchmarks.bench_fields --config configs/synthetic/lego_s0.txt --budgets 120 300 600 900 \
        --out outputs/bench_fields/lego_s0 --fields triplane

For each field, one fresh model trains (resuming from its own checkpoint) until each cumulative budget in
--budgets (seconds on the trainer's clock) and is measured there: steps, training rays/s, MLP samples per
ray, held-out PSNR against the mean-colour baseline, ms per held-out view, parameters (MB; on CUDA the peak
memory). `--field_flags NAME "FLAGS"` adds flags to one field's config (other options: the config's).
`--decompose` then runs the whole pipeline per field (the config's own recipe with `--field NAME`,
checkpoints and maps under --out) and scores the test set against the oracle, the NeRF at the true pose and
the pipeline's references (omniposead.decomposition). Writes fields.md, fields.json and fields.png (PSNR
against seconds) under --out.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks.bench_occupancy import train_to
from benchmarks.bench_pipeline import run_one
from common.errors import exit_on_user_error
from common.io import atomic_write, write_json
from common.runtime import resolve_device
from mad.loader import load_train_views
from nerf.fields import FIELD_NAMES
from nerf.trainer import build_renderer
from omniposead.config import parse_config
from omniposead.pipeline import prepare_class


def machine_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def curve(cfg, views, device, ckpt_root: Path, budgets: list[float]) -> list[dict]:
    """One fresh model of cfg's field trained up to each cumulative budget (seconds); a row per budget."""
    rows, done, params_mb = [], 0.0, 4 * parameter_count(cfg) / 2 ** 20
    for budget in sorted(budgets):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        r = train_to(cfg, views, device, str(ckpt_root), minutes=max(budget - done, 1e-3) / 60.0, n_iters=10 ** 9)
        done = r["train_s"]
        r.update(budget_s=budget, params_mb=params_mb,
                 peak_mb=torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None)
        rows.append(r)
        print(row_line(cfg.nerf.field, r), flush=True)
    return rows


def parameter_count(cfg) -> int:
    """Trainable parameters of cfg's renderer (all its fields)."""
    return sum(p.numel() for p in build_renderer(cfg.nerf, cfg.run.white_bkgd, 0, torch.device("cpu")).parameters())


HEADER = [("| field | budget s | steps | train s | rays/s | samples/ray | held-out PSNR | vs baseline | ms/view "
           "| params MB | peak GPU MB |"), "|---|---|---|---|---|---|---|---|---|---|---|"]


def row_line(field: str, r: dict) -> str:
    peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
    return (f"| {field} | {r['budget_s']:g} | {r['steps']} | {r['train_s']:.0f} | {r['rays_per_s']:,.0f} | "
            f"{r['samples_per_ray']:.1f} | {r['val_psnr']:.2f} | {r['val_psnr'] - r['baseline_psnr']:+.2f} | "
            f"{r['render_ms_per_view']:.0f} | {r['params_mb']:.1f} | {peak} |")


def decomposition_lines(rows: dict[str, dict]) -> list[str]:
    lines = ["| field | NeRF s | held-out PSNR | reference | pixel AUROC | image AUROC | pixel AUPRO | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for field, r in rows.items():
        decomposition = dict(r["decomposition"])
        decomposition["pipeline"] = {k: r[k] for k in ("pixel_auroc", "image_auroc", "pixel_aupro")}
        for ref in ("oracle", "nerf_true_pose", "pipeline"):
            m = decomposition.get(ref)
            cells = " | ".join(f"{m[k]:.3f}" for k in ("pixel_auroc", "image_auroc", "pixel_aupro")) if m else \
                "n/a | n/a | n/a"
            lines.append(f"| {field} | {r['nerf_seconds']:.0f} | {r['heldout_psnr']:.2f} | {ref} | {cells} | "
                         f"{r['wall_s']:.0f} |")
    return lines


def plot(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for field, rows in curves.items():
        ax.plot([r["train_s"] for r in rows], [r["val_psnr"] for r in rows], marker="o", label=field)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the class's config file (any other option overrides it)")
    p.add_argument("--fields", nargs="+", default=list(FIELD_NAMES), choices=FIELD_NAMES, help="fields to compare")
    p.add_argument("--budgets", type=float, nargs="+", default=[30.0, 60.0, 120.0, 200.0],
                   help="cumulative training seconds at which each field is measured")
    p.add_argument("--field_flags", nargs=2, action="append", default=[], metavar=("FIELD", "FLAGS"),
                   help="extra flags for one field's config")
    p.add_argument("--decompose", action="store_true", help="also run the pipeline and the decomposition per field")
    p.add_argument("--out", type=Path, required=True, help="folder for fields.md/.json/.png (and --decompose runs)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args, rest = p.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {name: shlex.split(flags) for name, flags in args.field_flags}
    rest = ["--config", args.config, *rest]
    configs = {f: parse_config([*rest, "--field", f, *extra.get(f, [])]) for f in args.fields}
    first = next(iter(configs.values()))
    device = resolve_device(first.run.device)
    views = load_train_views(prepare_class(first), downscale=first.run.image_downscale,
                             white_bkgd=first.run.white_bkgd)
    title = f"{first.run.class_name} ({views.height}x{views.width}, {len(views.images)} views), {machine_name(device)}"
    print(f"{title}; torch {torch.__version__}")
    results = {"class": first.run.class_name, "device": machine_name(device), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), "argv": list(argv if argv is not None else sys.argv[1:]),
               "curves": {}, "decomposition": {}}
    print("\n".join(HEADER))
    for field, cfg in configs.items():
        results["curves"][field] = curve(cfg, views, device, args.out / "curves" / field, args.budgets)
    lines = [f"{title}, {results['date']}", "", *HEADER,
             *(row_line(f, r) for f, rows in results["curves"].items() for r in rows)]
    if args.decompose:
        for field in configs:
            flags = [*rest[2:], "--field", field, *extra.get(field, []),
                     "--ckpt_root", str(args.out / field / "ckpts"), "--output_root", str(args.out / field / "outputs")]
            results["decomposition"][field] = run_one(args.config, flags, decompose=True)
        lines += ["", *decomposition_lines(results["decomposition"])]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "fields.md", lambda tmp: tmp.write_text(text))
    write_json(args.out / "fields.json", results)
    plot(results["curves"], args.out / "fields.png", title)
    print(f"wrote {args.out}/fields.md, fields.json, fields.png")
    return results


if __name__ == "__main__":
    main()
