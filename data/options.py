"""Options for generating a synthetic MAD-format class on demand (demo and benchmarks)."""
from __future__ import annotations

from common.config import str2bool


def add_args(parser) -> None:
    g = parser.add_argument_group("synthetic data (used only when synthesize_if_missing is set)")
    g.add_argument("--synthesize_if_missing", type=str2bool, default=False,
                   help="generate the class with data.synthesize when its folder does not exist")
    g.add_argument("--synth_seed", type=int, default=0, help="generator seed (the object and all views)")
    g.add_argument("--synth_size", type=int, default=400, help="generated image size in pixels (square)")
    g.add_argument("--synth_n_train", type=int, default=200, help="generated training views")
    g.add_argument("--synth_n_test_good", type=int, default=40, help="generated good test views")
    g.add_argument("--synth_n_test_defect", type=int, default=40, help="generated test views per defect type")
