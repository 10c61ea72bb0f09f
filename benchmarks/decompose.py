"""Decomposition of a class's quality: which stage loses it (oracle -> NeRF at the true pose -> pipeline).

    python -m benchmarks.decompose --config configs/synthetic/demo.txt
    python -m benchmarks.decompose --config configs/synthetic/demo.txt --score_protocol official
    python -m benchmarks.decompose --config configs/synthetic/demo.txt --score_normalization residual
    python -m benchmarks.decompose --config configs/synthetic/demo.txt --synth_seed 1 --class_name demo_s1

Prints pixel AUROC, image AUROC and pixel AUPRO of the test set scored against (1) the generator's
anomaly-free render at the true pose (generated classes only), (2) the NeRF at the true pose (classes
with test_poses.json), (3) the references the pipeline saved (run anomaly_nerf_lego.py first), every
row with the config's scorer options, and records the table under the scorer variant in
outputs/<dataset>/<class>/decomposition.json. Needs the class's trained NeRF (ckpts/); trains nothing
and never writes the pipeline's per-image results. The work itself is omniposead.decomposition.
"""
from __future__ import annotations

import sys

from common.errors import exit_on_user_error
from common.runtime import resolve_device, seed_everything
from omniposead.config import OmniposeConfig, build_parser
from omniposead.decomposition import (
    DECOMPOSITION_FILE,
    decompose_class,
    format_table,
    save_decomposition,
    scorer_key,
)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    cfg = OmniposeConfig.from_namespace(build_parser(__doc__.splitlines()[0]).parse_args(argv))
    seed_everything(cfg.run.seed)
    table = decompose_class(cfg, resolve_device(cfg.run.device))
    print(format_table(table), end="")
    path = cfg.run.output_dir / DECOMPOSITION_FILE
    save_decomposition(path, scorer_key(cfg), table)
    print(f"wrote {path} ({scorer_key(cfg)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
