"""Dense to sparse: the whole pipeline on 100 %, 50 %, 20 % and 10 % of a class's training views.

    python -m benchmarks.bench_views --config configs/synthetic/demo.txt
    python -m benchmarks.bench_views --config configs/synthetic/demo.txt --synth_seed 1 --class_name demo_s1
    python -m benchmarks.bench_views --config configs/synthetic/demo.txt --fractions 1 0.5 0.2 0.1 12

Each fraction (or whole count > 1) is one `--train_views` run of benchmarks.bench_pipeline.run_one (NeRF, retrieval
database, iNeRF, pose calibration and residual fit all on the subset: farthest-point on the camera centres from a
seed-drawn view, mad.view_subset). The subsets' checkpoints live apart (<ckpt_root>/<dataset>/<class>_views<v>;
100 % is the class's usual checkpoint, reused when it is finished), their maps under
<out>/views<v>/<dataset>/<class>/. Writes a table (markdown, CSV, JSON) and a plot of pixel / image AUROC and of
the median rotation error (retrieval and iNeRF) against the number of views to <out>/<dataset>/<class>/view_study.*.
Other flags go to every run (e.g. --synth_seed 1 --class_name demo_s1, --device cpu).
"""
from __future__ import annotations

import argparse
import csv
import io
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.bench_pipeline import run_one
from common.errors import exit_on_user_error
from common.io import atomic_path, atomic_write, write_json
from mad.transforms import read_transforms
from mad.view_subset import subset_size
from omniposead.config import parse_config

FRACTIONS = (1.0, 0.5, 0.2, 0.1)
COLUMNS = ("train_views", "n_views", "nerf_seconds", "heldout_psnr", "pixel_auroc", "image_auroc", "pixel_aupro",
           "retrieval_rot_median_deg", "inerf_rot_median_deg", "inerf_share_over_5deg", "wall_s")


def study_row(fraction: float, n_total: int, row: dict) -> dict:
    """One line of the study from a bench_pipeline.run_one row."""
    ret, ine = row["pose"]["retrieval"], row["pose"]["iNeRF"]
    return {"train_views": fraction, "n_views": subset_size(fraction, n_total), "nerf_seconds": row.get("nerf_seconds"),
            "heldout_psnr": row.get("heldout_psnr"), "pixel_auroc": row["pixel_auroc"],
            "image_auroc": row["image_auroc"],
            "pixel_aupro": row["pixel_aupro"], "retrieval_rot_median_deg": ret["rot_median_deg"],
            "inerf_rot_median_deg": ine["rot_median_deg"], "inerf_share_over_5deg": ine["share_over_5deg"],
            "wall_s": row["wall_s"]}


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    lines = [("| train views | views | NeRF s | held-out PSNR | pixel AUROC | image AUROC | pixel AUPRO "
              "| rot. median retrieval / iNeRF (deg) | iNeRF > 5 deg | wall s |"), "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['train_views']:g} | {r['n_views']} | {_fmt(r['nerf_seconds'], 0)} "
                     f"| {_fmt(r['heldout_psnr'], 2)} | {_fmt(r['pixel_auroc'])} | {_fmt(r['image_auroc'])} "
                     f"| {_fmt(r['pixel_aupro'])} | {_fmt(r['retrieval_rot_median_deg'], 2)} / "
                     f"{_fmt(r['inerf_rot_median_deg'], 2)} | {100 * r['inerf_share_over_5deg']:.0f}% "
                     f"| {_fmt(r['wall_s'], 0)} |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: r[k] for k in COLUMNS} for r in rows])
    return buffer.getvalue()


def plot(path: Path, rows: list[dict], title: str) -> None:
    """AUROCs (left) and median rotation errors (right) against the number of training views, written atomically."""
    from matplotlib.figure import Figure

    rows = sorted(rows, key=lambda r: r["n_views"])
    x = [r["n_views"] for r in rows]
    fig = Figure(figsize=(10, 4), dpi=110)
    left, right = fig.subplots(1, 2)
    left.plot(x, [r["pixel_auroc"] for r in rows], "o-", label="pixel AUROC")
    left.plot(x, [r["image_auroc"] for r in rows], "s-", label="image AUROC")
    left.set(xlabel="training views", ylabel="AUROC", title="detection")
    left.set_ylim(min(0.5, *(r["image_auroc"] for r in rows)) - 0.02, 1.01)
    right.plot(x, [r["retrieval_rot_median_deg"] for r in rows], "o-", label="retrieval")
    right.plot(x, [r["inerf_rot_median_deg"] for r in rows], "s-", label="iNeRF")
    right.set(xlabel="training views", ylabel="median rotation error (deg)", title="pose", yscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", required=True, help="the class's config")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                        help="train_views values: fractions in (0, 1] or whole counts > 1")
    parser.add_argument("--out", default="outputs/view_study", help="maps under <out>/views<v>/, tables under <out>/")
    args, extra = parser.parse_known_args(argv)
    cfg = parse_config(["--config", args.config, *extra])
    rows = []
    for fraction in args.fractions:
        row = run_one(args.config, [*extra, "--train_views", f"{fraction:g}",
                                    "--output_root", str(Path(args.out) / f"views{fraction:g}")])
        n_total = len(read_transforms(cfg.run.class_dir)[1])
        rows.append({**study_row(fraction, n_total, row), "run": row})
    on_gpu = torch.cuda.is_available() and cfg.run.device != "cpu"
    device = torch.cuda.get_device_name() if on_gpu else f"{platform.processor() or platform.machine()} CPU"
    command = " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"{cfg.run.class_name}: machine {device}; date {time.strftime('%Y-%m-%d %H:%M')}; command: "
              f"python -m benchmarks.bench_views {command}\n\n")
    text = header + markdown(rows)
    print(text, end="")
    base = Path(args.out) / cfg.run.dataset_name / cfg.run.class_name / "view_study"
    atomic_write(base.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    atomic_write(base.with_suffix(".csv"), lambda tmp: tmp.write_text(csv_text(rows)))
    write_json(base.with_suffix(".json"), {"header": header, "rows": rows})
    plot(base.with_suffix(".png"), rows, f"{cfg.run.class_name}: pipeline against the number of training views")
    print(f"wrote {base}.md, .csv, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
