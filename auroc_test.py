"""Evaluate saved anomaly maps against the ground truth: pixel / image AUROC, pixel AUPRO, plots.

    python auroc_test.py --obj 01Gorilla                  # one class
    python auroc_test.py --obj all                        # every class of the dataset + Table 2
    python auroc_test.py --config configs/LEGO-3D/01Gorilla.txt --image_score_pool 16
    python auroc_test.py --obj all --launcher slurm       # one job per class (omniposead.launcher)

Without --data_root (or a config that sets it) the dataset is the one whose maps are under
<output_root>: the pipeline records the settings it made the maps with in each class's run.json
(data_root, half_res, downscale, white_bkgd, ...), and the evaluation loads the ground truth with them.
Reads the per-image results written by anomaly_nerf_lego.py (layout: anomaly/results.py) from
<output_root>/<dataset>/<class>/ and the test set (images, masks, labels, defect types) from
<data_root>/<class>/. Image scores are recomputed from the saved maps (max of the average-pooled
map), with the image_score_pool the maps were made with (run.json) unless --image_score_pool (or the
config) gives one: the pooling can be tuned without rerunning the pipeline.

Per class it prints `pixel AUROC: 0.xxx`, `image AUROC: 0.xxx`, the pixel AUPRO, the pixel F1 (the best
over thresholds, as OmniAD reports it) and the per-defect breakdown, and writes metrics.json, roc.png,
qualitative.png, report.html (a page to review every image) and (with --save_overlays)
<defect>/<stem>_overlay.png with the class-wide colour scale into the class's output folder.
`--obj all` also prints a markdown table like the paper's Table 2 (its Mean row over
the classes that could be evaluated, their count stated) and writes it to
<output_root>/<dataset>/results_table.md; it exits with 1 if any class could not be evaluated.
The work itself is the evaluation package; this file is its command line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from anomaly.results import RUN_RECORD, load_run_record
from common.errors import DataError, exit_on_user_error
from common.io import atomic_path
from evaluation.class_evaluation import evaluate_class, with_saved_image_pool
from evaluation.report import report, results_table
from omniposead.classes import ALL, exit_code, run_classes
from omniposead.config import OmniposeConfig, build_parser
from omniposead.launcher import launch


def build_auroc_parser():
    parser = build_parser("Evaluate saved anomaly maps: pixel/image AUROC, pixel AUPRO, figures")
    parser.add_argument("--obj", default=None,
                        help="class to evaluate, 'a,b' for those, or 'all' for every class of data_root "
                             "(default: --class_name)")
    parser.set_defaults(data_root=None)  # default: the dataset whose maps are under output_root (run.json)
    return parser


def without_option(argv: list[str], flag: str) -> list[str]:
    """argv without `flag VALUE` / `flag=VALUE` (the class jobs get --class_name instead of --obj)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == flag:
            skip = True
        elif not token.startswith(flag + "="):
            out.append(token)
    return out


def dataset_of_saved_maps(output_root: str, obj: str) -> str:
    """The data_root recorded with the saved maps of class `obj` (of every class, for "all"; of each, for `a,b`)."""
    patterns = [f"*/*/{RUN_RECORD}"] if obj == ALL else [f"*/{n.strip()}/{RUN_RECORD}" for n in obj.split(",")]
    roots = sorted({str(load_run_record(p.parent)["data_root"])
                    for pattern in patterns for p in Path(output_root).glob(pattern)})
    if len(roots) == 1:
        return roots[0]
    what = "any class" if obj == ALL else f"class {obj!r}"
    if not roots:
        raise DataError(f"{output_root}: no saved maps of {what} (no {RUN_RECORD}); run anomaly_nerf_lego.py first, "
                        "or name the dataset with --data_root / --config")
    raise DataError(f"{output_root}: saved maps of {what} come from several datasets ({', '.join(roots)}); "
                    "choose one with --data_root or --config")


@exit_on_user_error
def main(argv=None) -> int:
    parser = build_auroc_parser()
    namespace = parser.parse_args(argv)
    pool_given = "image_score_pool" in parser.explicit_options(argv)
    obj = namespace.obj or namespace.class_name
    if namespace.data_root is None:
        namespace.data_root = dataset_of_saved_maps(namespace.output_root, obj)
    cfg = OmniposeConfig.from_namespace(namespace)

    def one_class(name: str) -> dict:
        run = cfg.run.for_class(name)
        score = cfg.score if pool_given else with_saved_image_pool(run, cfg.score)
        metrics = evaluate_class(run, score, cfg.evaluation)
        print(report(metrics))
        print(f"wrote {run.output_dir / 'metrics.json'}")
        return metrics

    if cfg.launcher.launcher != "inline":       # one job per class; each finds its own dataset when not given
        job_argv = without_option(list(sys.argv[1:] if argv is None else argv), "--obj")
        outcomes = launch(cfg.for_class(obj), "auroc_test", job_argv, "evaluation", table=False)
        rows = [json.loads((cfg.run.for_class(o.name).output_dir / "metrics.json").read_text())
                for o in outcomes if o.ok]
    else:
        outcomes = run_classes(cfg.run.data_root, obj, one_class, "evaluation")
        rows = [o.result for o in outcomes if o.ok]
    if obj == ALL or "," in obj:
        if not rows:
            raise DataError(f"{cfg.run.dataset_output_dir}: no class of {cfg.run.data_root} has evaluable score "
                            "maps; run anomaly_nerf_lego.py first")
        table = results_table(rows)
        print()
        print(table, end="")
        table_path = cfg.run.dataset_output_dir / "results_table.md"
        with atomic_path(table_path) as tmp:
            tmp.write_text(table)
        print(f"wrote {table_path}")
    return exit_code(outcomes)


if __name__ == "__main__":
    sys.exit(main())
