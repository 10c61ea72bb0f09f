"""Command line of NeRF training: `python train_nerf.py --config configs/<dataset>/<class>.txt [--flag value ...]`.

Generates the class first when the config asks for it (synthesize_if_missing), then trains or resumes
its NeRF (nerf.trainer.NeRFTrainer, through omniposead.pipeline.train_class) and prints the held-out
PSNR against the mean-colour baseline. `--class_name all` trains every class of data_root in turn.
This module is an entry point: it reads the one shared config, so it sits above every stage.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from common.errors import exit_on_user_error
from common.runtime import resolve_device
from nerf.trainer import TrainSummary
from omniposead.classes import exit_code, run_classes
from omniposead.config import parse_config
from omniposead.launcher import launch
from omniposead.pipeline import train_class


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(argv, description="Train the anomaly-free NeRF of one class")
    if cfg.launcher.launcher != "inline":
        return exit_code(launch(cfg, "train_nerf", sys.argv[1:] if argv is None else list(argv), "NeRF training",
                                table=False))
    device = resolve_device(cfg.run.device)

    def one_class(name: str) -> TrainSummary:
        summary = train_class(cfg.for_class(name), device)
        print(summary.line(name))
        return summary

    return exit_code(run_classes(cfg.run.data_root, cfg.run.class_name, one_class, "NeRF training"))


if __name__ == "__main__":
    sys.exit(main())
