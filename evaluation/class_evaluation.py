"""Evaluate one class from its saved anomaly maps: load maps and ground truth, compute every metric,
write metrics.json, the ROC plot, the qualitative sheet and (optionally) class-scaled overlays.

Image scores are recomputed from the saved maps (max of the average-pooled map, image_score_pool),
so the pooling can be tuned without rerunning the pipeline. Maps scored with score_protocol = official
(read from the result records) are evaluated as the authors' script does (anomaly.official): masks
resized to the 224-px maps, all maps min-max normalised over the test set, image score = plain max.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np

from anomaly.official import normalize_test_set, resize_mask
from anomaly.options import ScoreOptions
from anomaly.results import load_results, load_run_record, load_score_map, result_paths, scorer_of
from anomaly.scorer import image_scores, protocol_size
from common.errors import DataError
from common.io import write_image, write_json
from common.run import RunOptions
from evaluation.html_report import REPORT_NAME, write_html_report
from evaluation.metrics import evaluate
from evaluation.options import EvalOptions
from evaluation.plots import (
    QualitativeRow,
    colour_scale,
    overlay_heatmap,
    plot_roc_curves,
    qualitative_sheet,
    select_qualitative,
)
from mad.images import read_image_file
from mad.layout import GOOD, mask_path
from mad.loader import TestSample, load_run_test_set


def query_cost(records: list[dict]) -> dict:
    """Mean cost of a query over the result records: seconds per stage (pose, render, score) and their sum, and
    the pose's counted work (iNeRF rays and the field evaluations they cost); None where no record holds it
    (maps made before it was recorded)."""
    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    stages = ("pose", "render", "score")
    seconds = {stage: mean([(r.get("seconds") or {}).get(stage) for r in records]) for stage in stages}
    known = [seconds[stage] for stage in stages if seconds[stage] is not None]
    return {"seconds": {**seconds, "total": sum(known) if known else None},
            "pose_rays": mean([r.get("pose_work_rays") for r in records]),
            "pose_samples": mean([r.get("pose_work_samples") for r in records])}


def with_saved_settings(run: RunOptions) -> RunOptions:
    """`run` with the data-loading settings the class's maps were made with (run.json), so the ground
    truth loads at the maps' resolution whatever the evaluation's own config says."""
    saved = load_run_record(run.output_dir)
    if not saved:
        return run
    keys = [k for k in run.LOADING_FIELDS if k in saved and saved[k] != getattr(run, k)]
    if keys:
        print(f"[{run.class_name}] using the settings the maps were made with: "
              + ", ".join(f"{k} = {saved[k]}" for k in keys), file=sys.stderr)
    return run.replace(**{k: saved[k] for k in keys})


def with_saved_image_pool(run: RunOptions, score: ScoreOptions) -> ScoreOptions:
    """`score` with the image_score_pool the class's maps were made with (run.json), so that the image
    AUROC equals the one the pipeline printed; for an evaluation whose pool was not given explicitly."""
    saved = ((load_run_record(run.output_dir) or {}).get("identity") or {}).get("score", {}).get("image_score_pool")
    if saved is None or saved == score.image_score_pool:
        return score
    print(f"[{run.class_name}] using the image_score_pool the maps were made with: {saved} (pass "
          "--image_score_pool to choose another)", file=sys.stderr)
    return score.replace(image_score_pool=int(saved))


@dataclass
class ScoredSet:
    """A test set's maps, masks and image scores as the protocol evaluates them."""
    maps: list[np.ndarray]
    masks: list[np.ndarray]
    scores: np.ndarray
    pool: int                                # average-pool kernel of the image score
    minmax: tuple[float, float] | None       # test-set min / max (official protocol only)

    @classmethod
    def from_maps(cls, maps, masks, protocol: str, image_score_pool: int) -> ScoredSet:
        """'paper': maps and masks as they are, image score = max of the average-pooled map. 'official': masks
        resized to the maps, maps min-max normalised over the set, image score = plain max (anomaly.official)."""
        minmax = None
        if protocol == "official":
            masks = [resize_mask(mask, amap.shape) for mask, amap in zip(masks, maps, strict=True)]
            maps, minmax = normalize_test_set(maps)
        pool = 1 if protocol == "official" else int(image_score_pool)
        scores = np.array([float(image_scores(m[None], pool)[0]) for m in maps])
        return cls(list(maps), list(masks), scores, pool, minmax)


def evaluate_class(run: RunOptions, score: ScoreOptions, ev: EvalOptions, write_outputs: bool = True,
                   samples: list[TestSample] | None = None) -> dict:
    """Metrics of the class `run.class_name` from its saved maps; writes metrics.json and the figures.
    `samples`: the class's test set when the caller has it already, loaded with the settings the maps were
    made with (as the pipeline that just made them has); by default it is loaded with those of run.json."""
    obj = run.class_name
    out_dir = run.output_dir
    if samples is None:
        samples = load_run_test_set(with_saved_settings(run))

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
    for sample in samples:
        saved = records[sample.name].get("image_digest")
        if saved is not None and saved != sample.image_digest:
            raise DataError(f"{result_paths(out_dir, sample.name).map}: this map was made from another version of "
                            f"the test image {sample.path} (replaced since); rerun anomaly_nerf_lego.py for {obj} "
                            "to make its map again")
    scorers = {json.dumps(scorer_of(records[s.name]), sort_keys=True) for s in samples}
    if len(scorers) > 1:
        raise DataError(f"{out_dir}: the maps of {obj} were scored with different settings: {sorted(scorers)}")
    scorer = json.loads(scorers.pop())
    protocol = ScoreOptions(score_protocol=scorer["score_protocol"])
    maps = []
    for sample in samples:
        path = result_paths(out_dir, sample.name).map
        amap = load_score_map(path)
        expected = protocol_size(protocol, *sample.mask.shape)
        if amap.shape != expected:
            raise DataError(f"{path}: score map is {amap.shape[1]}x{amap.shape[0]}, expected {expected[1]}x"
                            f"{expected[0]} for the test image {sample.path}, which loads as "
                            f"{sample.mask.shape[1]}x{sample.mask.shape[0]} (same --downscale / --half_res as "
                            "the pipeline run?)")
        if not np.all(np.isfinite(amap)):
            raise DataError(f"{path}: score map contains NaN or infinite values")
        maps.append(amap)
    scored = ScoredSet.from_maps(maps, [s.mask for s in samples], protocol.score_protocol, score.image_score_pool)
    maps, masks, scores, pool, minmax = scored.maps, scored.masks, scored.scores, scored.pool, scored.minmax
    official = minmax is not None
    defect_types = [s.defect_type for s in samples]

    result = evaluate(defect_types, scores, masks, maps, fpr_limit=ev.aupro_fpr, max_pixels=ev.eval_max_pixels,
                      seed=run.seed)
    curves = result.pop("_curves")
    backbones = sorted({str(records[s.name].get("backbone", "unknown")) for s in samples})
    good_maps = [m for m, t in zip(maps, defect_types, strict=True) if t == GOOD]
    vmin, vmax = colour_scale(good_maps, maps, ev.heatmap_vmin, ev.heatmap_vmax)
    threshold = result["pixel_threshold"] if ev.qual_threshold is None else float(ev.qual_threshold)

    metrics = {
        "class": obj,
        "dataset": run.dataset_name,
        "backbone": backbones[0] if len(backbones) == 1 else backbones,
        **result,
        "scorer": scorer,
        "image_score_pool": int(pool),
        **({"test_set_minmax": list(minmax)} if official else {}),
        "colour_scale": [vmin, vmax],
        "qualitative_threshold": threshold,
        "images": [{"name": s.name, "defect_type": s.defect_type, "label": int(s.label),
                    "image_score": float(sc), "pose_unsure": bool(records[s.name].get("pose_unsure", False))}
                   for s, sc in zip(samples, scores, strict=True)],
        "pose_unsure": [s.name for s in samples if records[s.name].get("pose_unsure")],
        "query_cost": query_cost([records[s.name] for s in samples]),
    }
    if not write_outputs:
        return metrics

    if len(backbones) > 1:
        print(f"warning: maps of {obj} come from different backbones: {backbones}", file=sys.stderr)
    if ev.save_overlays:
        for sample, amap in zip(samples, maps, strict=True):
            write_image(result_paths(out_dir, sample.name).overlay, overlay_heatmap(sample.image, amap, vmin, vmax))
    plot_roc_curves(out_dir / "roc.png", curves["pixel"], curves["image"], title=f"{obj}: ROC")
    rows = []
    for i in select_qualitative(defect_types, ev.n_qualitative):
        sample = samples[i]
        ref_path = result_paths(out_dir, sample.name).reference
        reference = read_image_file(ref_path) if ref_path.is_file() else None
        if reference is not None and reference.shape[:2] != sample.image.shape[:2]:
            reference = None
        unsure = "\npose unsure" if records[sample.name].get("pose_unsure") else ""
        rows.append(QualitativeRow(title=f"{sample.name}\nscore {scores[i]:.3g}{unsure}", query=sample.image,
                                   reference=reference, mask=masks[i], amap=maps[i]))
    qualitative_sheet(out_dir / "qualitative.png", rows, vmin, vmax, threshold,
                      title=f"{obj}: heat-map scale [{vmin:.3g}, {vmax:.3g}], mask threshold {threshold:.3g}")
    write_test_report(out_dir, obj, samples, records, metrics)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


TEST_REPORT_COLUMNS = (("name", "image"), ("defect_type", "defect"), ("image_score", "image score"),
                       ("pose_loss_ratio", "pose loss / threshold"), ("pose_unsure", "pose unsure"))
TEST_REPORT_THUMBNAILS = (("query", "image"), ("reference", "reference"), ("overlay", "heat map"),
                          ("mask", "true mask"))


def write_test_report(out_dir, obj: str, samples: list[TestSample], records: dict[str, dict], metrics: dict):
    """report.html beside qualitative.png: the metrics and the unsure poses at the top, a sortable row per test
    image with the image, its reference, its heat map and its true mask."""
    rows = []
    for sample, image in zip(samples, metrics["images"], strict=True):
        paths = result_paths(out_dir, sample.name)
        truth = None if sample.label == 0 else mask_path(sample.path.parents[2], sample.defect_type, sample.path)
        rows.append({**image, "pose_loss_ratio": records[sample.name].get("pose_loss_ratio"),
                     "query": paths.query if paths.query.is_file() else sample.path,
                     "reference": paths.reference if paths.reference.is_file() else None,
                     "overlay": paths.overlay if paths.overlay.is_file() else None, "mask": truth})
    unsure = metrics["pose_unsure"]
    lo, hi = metrics["colour_scale"]
    notes = [(f"pixel AUROC {metrics['pixel_auroc']:.3f}, image AUROC {metrics['image_auroc']:.3f}, "
              f"pixel AUPRO {metrics['pixel_aupro']:.3f} over {len(samples)} test images"),
             f"heat maps on the class's scale {lo:.3g} .. {hi:.3g}",
             f"unsure poses: {len(unsure)}" + (f" ({', '.join(unsure)})" if unsure else "")]
    rows.sort(key=lambda r: -r["image_score"])                      # the highest score first
    return write_html_report(out_dir / REPORT_NAME, f"{obj}: {len(samples)} test images", notes, rows,
                             TEST_REPORT_COLUMNS, TEST_REPORT_THUMBNAILS,
                             row_class=lambda r: ["defective"] * (r["label"] == 1) + ["unsure"] * r["pose_unsure"])
