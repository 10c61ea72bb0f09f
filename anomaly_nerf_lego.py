"""OmniposeAD per class: NeRF -> coarse pose (retrieval) -> iNeRF -> reference render -> anomaly map.

    python anomaly_nerf_lego.py --config configs/LEGO-3D/01Gorilla.txt
    python anomaly_nerf_lego.py --config configs/LEGO-3D/01Gorilla.txt --class_name all
    python anomaly_nerf_lego.py --config configs/LEGO-3D/01Gorilla.txt --class_name all --launcher slurm

Trains the class's NeRF first when no finished checkpoint exists, builds (or loads) the retrieval
database, then writes per test image: the query, the reference render, the float score map
(.npy), a heat-map overlay and a JSON with poses, retrieval, iNeRF loss, timings and the
backbone used. Finished images are skipped on a re-run. Ends with the class's AUROCs
(auroc_test.py computes the same figures from the files alone). The work itself is
omniposead.pipeline; this file is its command line.
"""
from __future__ import annotations

import sys
import time

from common.errors import exit_on_user_error
from common.runtime import resolve_device
from evaluation.class_evaluation import evaluate_class
from evaluation.report import report
from omniposead.classes import exit_code, run_classes
from omniposead.config import OmniposeConfig, build_parser
from omniposead.launcher import launch
from omniposead.pipeline import run_class


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    cfg = OmniposeConfig.from_namespace(build_parser(__doc__.splitlines()[0]).parse_args(argv))
    if cfg.launcher.launcher != "inline":
        return exit_code(launch(cfg, "anomaly_nerf_lego", sys.argv[1:] if argv is None else argv, "anomaly maps"))
    device = resolve_device(cfg.run.device)

    def one_class(name: str) -> None:
        class_cfg = cfg.for_class(name)
        start = time.perf_counter()
        maps = run_class(class_cfg, device)
        if cfg.pipeline.evaluate:
            print(report(evaluate_class(class_cfg.run, class_cfg.score, class_cfg.evaluation,
                                        samples=maps.test_set)))
        print(f"[{name}] done in {time.perf_counter() - start:.1f} s; results in {maps.out_dir} "
              f"(dataset {cfg.run.dataset_name})")

    return exit_code(run_classes(cfg.run.data_root, cfg.run.class_name, one_class, "anomaly maps"))


if __name__ == "__main__":
    sys.exit(main())
