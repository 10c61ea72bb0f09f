"""Evaluate saved anomaly maps against the ground truth: pixel / image AUROC, pixel AUPRO, plots.

    python auroc_test.py --obj 01Gorilla                  # one class
    python auroc_test.py --obj all                        # every class of data_root with maps + Table 2
    python auroc_test.py --config configs/LEGO-3D/01Gorilla.txt --image_score_pool 16

Reads the per-image results written by anomaly_nerf_lego.py (layout: anomaly/results.py) from
<output_root>/<dataset>/<class>/ and the test set (images, masks, labels, defect types) from
<data_root>/<class>/. Image scores are recomputed from the saved maps (max of the average-pooled
map, --image_score_pool), so the pooling can be tuned without rerunning the pipeline.

Per class it prints `pixel AUROC: 0.xxx`, `image AUROC: 0.xxx`, the pixel AUPRO and the
per-defect breakdown, and writes metrics.json, roc.png, qualitative.png (and, with
--save_overlays, <defect>/<stem>_overlay.png with the class-wide colour scale) into the class's
output folder. `--obj all` also prints a markdown table like the paper's Table 2 and writes it to
<output_root>/<dataset>/results_table.md; it exits with 1 if a class with maps could not be evaluated.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from anomaly import metrics as M
from anomaly.results import load_results, load_score_map, result_paths
from anomaly.scorer import image_scores
from anomaly.visualize import (QualitativeRow, colour_scale, overlay_heatmap, plot_roc_curves,
                               qualitative_sheet, select_qualitative)
from common.config import build_parser as build_config_parser
from common.config import dataset_name, output_dir
from common.errors import DataError, PadError, exit_on_user_error
from common.io import atomic_path, write_image, write_json


def build_parser():
    parser = build_config_parser("Evaluate saved anomaly maps: pixel/image AUROC, pixel AUPRO, figures")
    parser.add_argument("--obj", default=None,
                        help="class to evaluate, or 'all' for every class of data_root (default: --class_name)")
    parser.set_defaults(data_root="data/LEGO-3D")
    return parser


def evaluate_class(cfg, obj: str, write_outputs: bool = True) -> dict:
    """Metrics of one class from its saved maps; writes metrics.json and the figures."""
    from data.mad import load_test_set, read_image_file, resolve_class_dir

    class_path = resolve_class_dir(cfg.data_root, obj)
    out_dir = output_dir(cfg, obj)
    samples = load_test_set(class_path, half_res=cfg.half_res, white_bkgd=cfg.white_bkgd)

    missing = []
    for sample in samples:
        paths = result_paths(out_dir, sample.name)
        for path in (paths.map, paths.record):
            if not path.is_file():
                missing.append(path)
    if missing:
        raise DataError(f"{missing[0]}: result file missing ({len(missing)} missing for the "
                        f"{len(samples)} test images of {obj}); run anomaly_nerf_lego.py for this class first")

    records = {r.name: r.record for r in load_results(out_dir)}
    maps = []
    for sample in samples:
        path = result_paths(out_dir, sample.name).map
        amap = load_score_map(path)
        if amap.shape != sample.mask.shape:
            raise DataError(f"{path}: score map is {amap.shape[1]}x{amap.shape[0]} but the test image "
                            f"{sample.path} loads as {sample.mask.shape[1]}x{sample.mask.shape[0]} "
                            f"(same --half_res as the pipeline run?)")
        if not np.all(np.isfinite(amap)):
            raise DataError(f"{path}: score map contains NaN or infinite values")
        maps.append(amap)
    scores = np.array([float(image_scores(m[None], cfg.image_score_pool)[0]) for m in maps])
    defect_types = [s.defect_type for s in samples]
    masks = [s.mask for s in samples]

    result = M.evaluate(defect_types, scores, masks, maps, fpr_limit=cfg.aupro_fpr,
                        max_pixels=cfg.eval_max_pixels, seed=cfg.seed)
    curves = result.pop("_curves")
    backbones = sorted({str(records[s.name].get("backbone", "unknown")) for s in samples})
    good_maps = [m for m, t in zip(maps, defect_types) if t == M.GOOD]
    vmin, vmax = colour_scale(good_maps, maps, cfg.heatmap_vmin, cfg.heatmap_vmax)
    threshold = result["pixel_threshold"] if cfg.qual_threshold is None else float(cfg.qual_threshold)

    metrics = {
        "class": obj,
        "dataset": dataset_name(cfg),
        "backbone": backbones[0] if len(backbones) == 1 else backbones,
        **result,
        "image_score_pool": int(cfg.image_score_pool),
        "colour_scale": [vmin, vmax],
        "qualitative_threshold": threshold,
        "images": [{"name": s.name, "defect_type": s.defect_type, "label": int(s.label),
                    "image_score": float(sc)} for s, sc in zip(samples, scores)],
    }
    if not write_outputs:
        return metrics

    if len(backbones) > 1:
        print(f"warning: maps of {obj} come from different backbones: {backbones}", file=sys.stderr)
    if cfg.save_overlays:
        for sample, amap in zip(samples, maps):
            write_image(result_paths(out_dir, sample.name).overlay, overlay_heatmap(sample.image, amap, vmin, vmax))
    plot_roc_curves(out_dir / "roc.png", curves["pixel"], curves["image"], title=f"{obj}: ROC")
    rows = []
    for i in select_qualitative(defect_types, cfg.n_qualitative):
        sample = samples[i]
        ref_path = result_paths(out_dir, sample.name).reference
        reference = read_image_file(ref_path) if ref_path.is_file() else None
        if reference is not None and reference.shape[:2] != sample.image.shape[:2]:
            reference = None
        rows.append(QualitativeRow(title=f"{sample.name}\nscore {scores[i]:.3g}", query=sample.image,
                                   reference=reference, mask=sample.mask, amap=maps[i]))
    qualitative_sheet(out_dir / "qualitative.png", rows, vmin, vmax, threshold,
                      title=f"{obj}: heat-map scale [{vmin:.3g}, {vmax:.3g}], mask threshold {threshold:.3g}")
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def report(metrics: dict) -> str:
    lines = [
        f"== {metrics['class']}: {metrics['n_images']} test images ({metrics['n_good']} good), "
        f"backbone: {metrics['backbone']} ==",
        f"pixel AUROC: {metrics['pixel_auroc']:.3f}",
        f"image AUROC: {metrics['image_auroc']:.3f}",
        f"pixel AUPRO: {metrics['pixel_aupro']:.3f} (FPR <= {metrics['aupro_fpr_limit']:g})",
    ]
    for dtype, entry in metrics["per_defect"].items():
        lines.append(f"  {dtype} ({entry['n_images']} images vs good): image AUROC {_fmt(entry['image_auroc'])}, "
                     f"pixel AUROC {_fmt(entry['pixel_auroc'])}, pixel AUPRO {_fmt(entry['pixel_aupro'])}")
    return "\n".join(lines)


def results_table(rows: list[dict]) -> str:
    """Markdown table in percent (like the paper's Table 2) with a Mean row."""
    keys = ("pixel_auroc", "image_auroc", "pixel_aupro")
    out = ["| class | pixel AUROC (%) | image AUROC (%) | pixel AUPRO (%) |",
           "|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['class']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |")
    if rows:
        means = [100 * float(np.mean([r[k] for r in rows])) for k in keys]
        out.append("| **Mean** | " + " | ".join(f"**{m:.1f}**" for m in means) + " |")
    return "\n".join(out) + "\n"


@exit_on_user_error
def main(argv=None) -> int:
    cfg = build_parser().parse_args(argv)
    obj = cfg.obj or cfg.class_name
    if obj != "all":
        metrics = evaluate_class(cfg, obj)
        print(report(metrics))
        print(f"wrote {output_dir(cfg, obj) / 'metrics.json'}")
        return 0

    from data.mad import list_classes

    classes = list_classes(cfg.data_root)
    if not classes:
        raise DataError(f"{cfg.data_root}: no class folders (with a transforms.json) found")
    rows, failed = [], []
    for name in classes:
        out_dir = output_dir(cfg, name)
        if not any(out_dir.glob("*/*.npy")):
            print(f"skip {name}: no score maps in {out_dir}")
            continue
        try:
            metrics = evaluate_class(cfg, name)
        except PadError as err:
            print(f"skip {name}: {err}", file=sys.stderr)
            failed.append(name)
            continue
        print(report(metrics))
        rows.append(metrics)
    if not rows:
        raise DataError(f"{Path(cfg.output_root) / dataset_name(cfg)}: no class of {cfg.data_root} has "
                        "evaluable score maps; run anomaly_nerf_lego.py first")
    table = results_table(rows)
    print()
    print(table, end="")
    table_path = Path(cfg.output_root) / dataset_name(cfg) / "results_table.md"
    with atomic_path(table_path) as tmp:
        tmp.write_text(table)
    print(f"wrote {table_path}")
    if failed:
        print(f"error: {len(failed)} class(es) with maps could not be evaluated: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
