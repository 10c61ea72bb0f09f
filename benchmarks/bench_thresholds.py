"""The unlabelled threshold on test sets whose labels it never sees: false alarms on test/good and recall per defect
type at the class's threshold from its held-out training views (predict.py's default), beside the best-F1 threshold
chosen with the test labels (the best any threshold could do), and the seconds per photo of predict.py against the
pipeline's per query (issue "use a trained class").

    python -m benchmarks.bench_thresholds --config configs/synthetic/demo.txt --seeds 0 1 2 3 4 11 --predict_seeds 0
    python -m benchmarks.bench_thresholds --config configs/synthetic/full_cpu.txt --seeds 2 --textured --detail \
        --reuse_maps --flags "--output_root outputs/table2"

Per class: the pipeline's maps of its test set (anomaly_nerf_lego.py, reused when made), the class threshold
(omniposead.predict.class_threshold: held-out views scored like queries, the threshold at --max_false_alarm), then
with `--predict_seeds` predict.py on the test photos themselves (all of them, in the pipeline's order). Prints one
markdown table and writes it with the raw figures to outputs/thresholds/<tag>.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.bench_pipeline import run_pipeline
from benchmarks.bench_query_cost import class_flags
from common.errors import exit_on_user_error
from common.io import atomic_write, write_json
from evaluation.thresholds import f1_threshold, false_alarm_threshold
from mad.layout import GOOD
from omniposead.config import parse_config
from omniposead.pipeline import load_class
from omniposead.predict import class_threshold, predict_photos

ROOT = Path("outputs/thresholds")


def verdict_rates(images: list[dict], value: float) -> dict:
    """False-alarm rate on the good images and recall per defect type (and over all defects) at `value`."""
    called = {im["name"]: im["image_score"] > value for im in images}
    good = [called[im["name"]] for im in images if im["defect_type"] == GOOD]
    out = {"false_alarms": float(np.mean(good)), "n_good": len(good), "recall": {}}
    for defect in sorted({im["defect_type"] for im in images} - {GOOD}):
        hits = [called[im["name"]] for im in images if im["defect_type"] == defect]
        out["recall"][defect] = float(np.mean(hits))
    defects = [called[im["name"]] for im in images if im["defect_type"] != GOOD]
    out["recall_all"] = float(np.mean(defects))
    return out


def run_class(config: str, flags: list[str], predict: bool, reuse_maps: bool = False) -> dict:
    if reuse_maps:
        cfg = parse_config(["--config", config, *flags])
        metrics = json.loads((cfg.run.output_dir / "metrics.json").read_text())
    else:
        cfg, _, metrics, _ = run_pipeline(["--config", config, *flags])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assets = load_class(cfg, train=False, test_set=False, progress=False)
        start = time.perf_counter()
        threshold = class_threshold(assets, progress=False)
        calibration_s = time.perf_counter() - start
    images = metrics["images"]
    labels = [int(im["label"]) for im in images]
    best = f1_threshold(labels, [im["image_score"] for im in images], "test images")
    moments = false_alarm_threshold(threshold.scores, cfg.predict.max_false_alarm, fit="moments")
    row = {"class": cfg.run.class_name, "n_views": threshold.image.n_scores, "few": threshold.image.few,
           "threshold": threshold.image.value, "view_scores": threshold.scores, "calibration_s": calibration_s,
           "view_pose_errors_deg": threshold.pose_errors_deg,
           "heldout": verdict_rates(images, threshold.image.value), "moments_threshold": moments.value,
           "moments": verdict_rates(images, moments.value), "best_f1_threshold": best.value,
           "best_f1": verdict_rates(images, best.value), "image_auroc": metrics["image_auroc"],
           "pipeline_s_per_query": metrics["query_cost"]["seconds"]["total"]}
    if predict:
        test_dir = cfg.run.class_dir / "test"
        folders = [GOOD, *sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name != GOOD)]
        out = ROOT / "predict" / cfg.run.class_name
        rows = predict_photos(cfg, [str(test_dir / f) for f in folders], out, progress=False)
        row["predict_s_per_photo"] = float(np.mean([r["seconds"] for r in rows]))
    return row


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def table(rows: list[dict]) -> str:
    defects = sorted({d for r in rows for d in r["heldout"]["recall"]})
    lines = ["| class | held-out views | threshold (held-out) | false alarms | "
             + " | ".join(f"recall {d}" for d in defects)
             + " | best-F1 threshold (test labels) | false alarms | " + " | ".join(f"recall {d}" for d in defects)
             + " | image AUROC | s / photo (predict) | s / query (pipeline) |",
             "|---|---:|---:|---:|" + "---:|" * len(defects) + "---:|---:|" + "---:|" * len(defects)
             + "---:|---:|---:|"]
    for r in rows:
        held, best = r["heldout"], r["best_f1"]
        predict = f"{r['predict_s_per_photo']:.2f}" if "predict_s_per_photo" in r else ""
        lines.append(f"| {r['class']} | {r['n_views']}{' (few)' if r['few'] else ''} | {r['threshold']:.3g} | "
                     f"{_pct(held['false_alarms'])} | " + " | ".join(_pct(held["recall"][d]) for d in defects)
                     + f" | {r['best_f1_threshold']:.3g} | {_pct(best['false_alarms'])} | "
                     + " | ".join(_pct(best["recall"][d]) for d in defects)
                     + f" | {r['image_auroc']:.3f} | {predict} | {r['pipeline_s_per_query']:.2f} |")
    kinds = ("heldout", "moments", "best_f1")
    mean = {k: float(np.mean([r[k]["false_alarms"] for r in rows])) for k in kinds}
    recall = {k: float(np.mean([r[k]["recall_all"] for r in rows])) for k in kinds}
    lines.append(f"\nMean over {len(rows)} classes: held-out threshold (robust fit) {_pct(mean['heldout'])} false "
                 f"alarms, {_pct(recall['heldout'])} recall; the same views by moments {_pct(mean['moments'])}, "
                 f"{_pct(recall['moments'])}; best-F1 threshold {_pct(mean['best_f1'])} false alarms, "
                 f"{_pct(recall['best_f1'])} recall. Held-out views' pose error, median / max: "
                 + ", ".join(f"{r['class']} {np.median(r['view_pose_errors_deg']):.2f} / "
                             f"{max(r['view_pose_errors_deg']):.2f} deg" for r in rows if r["view_pose_errors_deg"]))
    return "\n".join(lines)


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/synthetic/demo.txt", help="the class config")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4],
                        help="synthetic seeds of the plain object (none: only --textured / --detail)")
    parser.add_argument("--predict_seeds", type=int, nargs="*", default=[],
                        help="seeds whose test photos also go through predict.py (its seconds per photo)")
    parser.add_argument("--textured", action="store_true", help="add the textured object on the first seed")
    parser.add_argument("--detail", action="store_true", help="add the detailed stand-in on the first seed")
    parser.add_argument("--reuse_maps", action="store_true",
                        help="read the test scores from the class's metrics.json as they are (maps made earlier, e.g. "
                             "before an option was added) instead of running the pipeline")
    parser.add_argument("--flags", default="", help="extra flags for every class, e.g. '--max_false_alarm 0.05' or "
                                                    "'--output_root outputs/table2'")
    parser.add_argument("--tag", default="thresholds", help="written as outputs/thresholds/<tag>.{md,json}")
    args = parser.parse_args(argv)
    extra = shlex.split(args.flags)
    parse_config(["--config", args.config, *extra])          # a bad config or flag stops here
    rows = [run_class(args.config, [*flags, *extra], label in {f"s{seed}" for seed in args.predict_seeds},
                      args.reuse_maps)
            for label, flags in class_flags(args.config, args.seeds, args.textured, args.detail)]
    text = table(rows)
    print(text)
    ROOT.mkdir(parents=True, exist_ok=True)
    atomic_write(ROOT / f"{args.tag}.md", lambda tmp: tmp.write_text(text + "\n"))
    write_json(ROOT / f"{args.tag}.json", {"argv": argv, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
