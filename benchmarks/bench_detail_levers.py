"""Detail levers at the true pose: what a reference or scorer setting buys on a trained class, and what it costs per
query (issue 41, "detail levers"). The pose is taken out: every variant scores the test images against the NeRF's
reference rendered at the true test pose (and the oracle's, the generator's anomaly-free render, for the ceiling).

    python -m benchmarks.bench_detail_levers --config configs/synthetic/full_cpu.txt --classes "" \\
        "--synth_seed 1 --class_name full_s1" --variant config "" --variant sigma_1.5 "--score_sigma 1.5" \\
        --variant march_192 "--render_samples 192" --variant reprojected "--reference reprojected"

Each class must be trained already (run the pipeline first); nothing is trained here. A variant's flags may change
the scorer (score_*, image_score_pool; its residual model is refitted when the scorer asks for another one), the
reference (render_samples, reference and every reference_* option) or the NeRF itself (a --ckpt_root where
a NeRF trained with other field options waits, with those options): the references are rendered once per distinct
checkpoint and reference setting, and reused by every scorer variant. Per variant and class: image AUROC
against the oracle and the NeRF at the true pose, the NeRF's loss (the difference), the NeRF's pixel AUROC and
per-defect image AUROC, and the seconds per query of the reference and of the map. Prints a markdown table and
writes it with the raw figures to outputs/detail_levers/<tag>.{md,json}.
"""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

import numpy as np

from common.errors import PadError, exit_on_user_error
from common.io import atomic_write, write_json
from common.runtime import resolve_device, seed_everything
from omniposead.config import parse_config
from omniposead.decomposition import References, nerf_references, oracle_references, reference_maps, score_maps
from omniposead.pipeline import load_class

ROOT = Path("outputs/detail_levers")


def reference_setting(cfg) -> tuple:
    """What the NeRF's reference depends on: the checkpoint (a variant may bring its own NeRF, trained with other
    field options under another --ckpt_root) and the render and reference options (but the map's weight of the
    unseen pixels, reference_unseen_power, which leaves the reference as it is). Variants equal here share their
    renders."""
    record = {k: v for k, v in cfg.score.reference_record().items() if k != "reference_unseen_power"}
    return (str(cfg.run.ckpt_dir), cfg.nerf.render_samples, cfg.nerf.render_early_stop, cfg.score.reference,
            tuple(sorted(record.items())))


def lever_row(cfg, assets, images, masks, defect_types, references: References, oracle: np.ndarray,
              render_s: float) -> dict:
    """One variant on one class: its scorer on the oracle's and the NeRF's references."""
    started = time.perf_counter()
    maps = reference_maps(cfg, assets.backbone, assets.residual, images, references, assets.device)
    score_s = (time.perf_counter() - started) / len(images)
    nerf = score_maps(cfg, maps, masks, defect_types)
    oracle_maps = reference_maps(cfg, assets.backbone, assets.residual, images, References(oracle), assets.device)
    ceiling = score_maps(cfg, oracle_maps, masks, defect_types)
    per_defect = {d: entry["image_auroc"] for d, entry in nerf["per_defect"].items()}
    return {"class": cfg.run.class_name, "oracle_image_auroc": ceiling["image_auroc"],
            "image_auroc": nerf["image_auroc"], "loss": ceiling["image_auroc"] - nerf["image_auroc"],
            "pixel_auroc": nerf["pixel_auroc"], "per_defect": per_defect, "render_s": render_s, "score_s": score_s}


def run_class(config: str, class_flags: list[str], variants: list[tuple[str, list[str]]]) -> dict[str, dict]:
    """Every variant on one class; the class's references rendered once per reference setting."""
    rendered: dict[tuple, tuple[References, float]] = {}
    oracle = None
    rows = {}
    for name, flags in variants:
        cfg = parse_config([*(["--config", config] if config else []), *class_flags, *flags])
        seed_everything(cfg.run.seed)
        assets = load_class(cfg, resolve_device(cfg.run.device), train=False, progress=False, poses=False)
        names = [s.name for s in assets.test_set]
        images = np.stack([s.image for s in assets.test_set])
        masks, defect_types = [s.mask for s in assets.test_set], [s.defect_type for s in assets.test_set]
        if oracle is None:
            oracle = oracle_references(assets.class_dir, assets.test_set, assets.views.intrinsics)
            if oracle is None:
                raise PadError(f"{assets.class_dir}: neither a generated class nor a capture's (no oracle to "
                               "compare with)")
        key = reference_setting(cfg)
        if key not in rendered:
            started = time.perf_counter()
            references = nerf_references(assets.reference, assets.class_dir, names, images)
            rendered[key] = references, (time.perf_counter() - started) / len(names)
        references, render_s = rendered[key]
        rows[name] = lever_row(cfg, assets, images, masks, defect_types, references, oracle, render_s)
        print(f"{name} {rows[name]['class']}: NeRF at the true pose {rows[name]['image_auroc']:.3f}, oracle "
              f"{rows[name]['oracle_image_auroc']:.3f}", flush=True)
    return rows


def table(results: dict[str, list[dict]]) -> str:
    names = list(results)
    defects = sorted({d for rows in results.values() for r in rows for d in r["per_defect"]})
    lines = ["| variant | class | image AUROC oracle / NeRF at true pose (loss) | pixel AUROC | "
             + " / ".join(defects) + " image AUROC | reference s / query | map s / query |",
             "|---|---|---|---:|---|---:|---:|"]
    for name in names:
        for r in results[name]:
            lines.append(f"| {name} | {r['class']} | {r['oracle_image_auroc']:.3f} / {r['image_auroc']:.3f} "
                         f"({r['loss']:+.3f}) | {r['pixel_auroc']:.3f} | "
                         + " / ".join(f"{r['per_defect'].get(d, float('nan')):.3f}" for d in defects)
                         + f" | {r['render_s']:.2f} | {r['score_s']:.2f} |")
        mean = {k: float(np.mean([r[k] for r in results[name]])) for k in
                ("oracle_image_auroc", "image_auroc", "loss", "pixel_auroc", "render_s", "score_s")}
        lines.append(f"| **{name}** | mean | {mean['oracle_image_auroc']:.3f} / {mean['image_auroc']:.3f} "
                     f"({mean['loss']:+.3f}) | {mean['pixel_auroc']:.3f} | | {mean['render_s']:.2f} "
                     f"| {mean['score_s']:.2f} |")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="configs/synthetic/full_cpu.txt",
                        help="the class config (\"\" = none: the class flags say it all)")
    parser.add_argument("--classes", nargs="+", default=[""],
                        help="one string of flags per class (\"\" = the config's own class)")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "FLAGS"), required=True,
                        help="a variant: its name and its flags in one string (the first is the baseline)")
    parser.add_argument("--tag", default="levers", help="written as outputs/detail_levers/<tag>.{md,json}")
    args = parser.parse_args(argv)
    variants = [(name, shlex.split(flags)) for name, flags in args.variant]
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for class_flags in args.classes:
        for name, row in run_class(args.config, shlex.split(class_flags), variants).items():
            results[name].append(row)
        print(table(results), flush=True)
    text = f"date: {time.strftime('%Y-%m-%d %H:%M')}; config {args.config}\n\n{table(results)}\n"
    out = ROOT / args.tag
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    write_json(out.with_suffix(".json"), {"argv": argv, "config": args.config, "classes": args.classes,
                                          "variants": dict(args.variant), "results": results})
    print(f"wrote {out}.md and .json")


if __name__ == "__main__":
    main()
