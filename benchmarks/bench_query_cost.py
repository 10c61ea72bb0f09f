"""The cost of a query and what it buys: iNeRF's counted work and seconds per query against pose error and image
AUROC, for variants of the pose settings on several classes (issue 37, "the query in one second").

    python -m benchmarks.bench_query_cost --config configs/synthetic/demo.txt --seeds 0 1 2 --textured \\
        --variant today "" --variant fewer_start_steps "--inerf_restart_fraction 0.07"

Each class is generated and its NeRF trained once (shared checkpoints); every variant then makes the class's maps
in its own output root (outputs/query_cost/<variant>/...), so the variants never overwrite each other and a rerun
reuses finished maps. Per variant and class: the work per query (iNeRF rays and the field evaluations they cost,
from the per-image records), seconds per query (pose, and pose + reference + map), the iNeRF rotation error
(median, max, share over 5 deg) and the pixel / image AUROC; then the variant's means and its ratios to the
first variant. Prints one markdown table and writes it with the raw figures to outputs/query_cost/<tag>.{md,json}.
"""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_pipeline import run_pipeline, seed_args
from common.errors import exit_on_user_error
from common.io import atomic_write, write_json
from omniposead.config import parse_config

ROOT = Path("outputs/query_cost")


def class_flags(config: str, seeds: list[int], textured: bool, detail: bool = False) -> list[tuple[str, list[str]]]:
    """(label, flags) of every class: the config on each seed, and the textured object and the detailed stand-in
    on the first seed, or seed 0 without seeds (classes <name>_tex and <name>_detail, as Table 2 names them)."""
    classes = [(f"s{seed}", seed_args(config, seed)) for seed in seeds]
    name = parse_config(["--config", config]).run.class_name
    for wanted, label, flag, suffix in ((textured, "textured", "--synth_textured", "tex"),
                                        (detail, "detail", "--synth_detail", "detail")):
        if wanted:
            classes.append((label, [*seed_args(config, seeds[0] if seeds else 0), flag, "true", "--class_name",
                                    f"{name}_{suffix}"]))
    return classes


def run_variant_class(config: str, variant: str, flags: list[str], class_flags_: list[str]) -> dict:
    """The pipeline with the variant's flags on one class (its maps under outputs/query_cost/<variant>)."""
    cfg, wall, metrics, report = run_pipeline(["--config", config, *class_flags_, *flags, "--output_root",
                                               str(ROOT / variant)])
    pose = report["stages"]["iNeRF"]
    cost = metrics["query_cost"]
    return {"class": cfg.run.class_name, "wall_s": wall, "pixel_auroc": metrics["pixel_auroc"],
            "image_auroc": metrics["image_auroc"], "rays": cost["pose_rays"], "samples": cost["pose_samples"],
            "pose_s": cost["seconds"]["pose"], "query_s": cost["seconds"]["total"],
            "rot_median_deg": pose["rot_median_deg"],
            "rot_max_deg": max(r["iNeRF_rot_deg"] for r in report["per_image"]),
            "over_5deg": pose["share_over_5deg"]}


def summary(rows: list[dict]) -> dict:
    keys = ("rays", "samples", "pose_s", "query_s", "rot_median_deg", "rot_max_deg", "over_5deg", "image_auroc",
            "pixel_auroc")
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def table(results: dict[str, list[dict]]) -> str:
    names = list(results)
    base = summary(results[names[0]])
    lines = [("| variant | class | rays / query | field evals / query | pose s / query | s / query "
              "| rot. median / max (deg) | > 5 deg | pixel AUROC | image AUROC |"),
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name in names:
        for r in results[name]:
            lines.append(f"| {name} | {r['class']} | {r['rays']:,.0f} | {r['samples']:,.0f} | {r['pose_s']:.2f} "
                         f"| {r['query_s']:.2f} | {r['rot_median_deg']:.2f} / {r['rot_max_deg']:.2f} "
                         f"| {100 * r['over_5deg']:.0f} % | {r['pixel_auroc']:.3f} | {r['image_auroc']:.3f} |")
        m = summary(results[name])
        lines.append(f"| **{name}** | mean (vs {names[0]}) | {m['rays']:,.0f} ({base['rays'] / m['rays']:.2f}x less) "
                     f"| {m['samples']:,.0f} ({base['samples'] / m['samples']:.2f}x less) "
                     f"| {m['pose_s']:.2f} ({base['pose_s'] / m['pose_s']:.2f}x) "
                     f"| {m['query_s']:.2f} ({base['query_s'] / m['query_s']:.2f}x) "
                     f"| {m['rot_median_deg']:.2f} / {m['rot_max_deg']:.2f} | {100 * m['over_5deg']:.0f} % "
                     f"| {m['pixel_auroc']:.3f} | {m['image_auroc']:.3f} |")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="configs/synthetic/demo.txt", help="the class config (CPU demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthetic seeds of the object")
    parser.add_argument("--textured", action="store_true", help="add the textured object on the first seed")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "FLAGS"), required=True,
                        help="a variant: its name and its flags in one string (the first variant is the baseline)")
    parser.add_argument("--tag", default="levers", help="written as outputs/query_cost/<tag>.{md,json}")
    args = parser.parse_args(argv)
    classes = class_flags(args.config, args.seeds, args.textured)
    results: dict[str, list[dict]] = {}
    for name, flags in args.variant:
        results[name] = [run_variant_class(args.config, name, shlex.split(flags), cf) for _, cf in classes]
        print(table(results), flush=True)
    text = f"date: {time.strftime('%Y-%m-%d %H:%M')}; config {args.config}\n\n{table(results)}\n"
    out = ROOT / args.tag
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    write_json(out.with_suffix(".json"), {"argv": argv, "variants": dict(args.variant), "results": results})
    print(f"wrote {out}.md and .json")


if __name__ == "__main__":
    main()
