"""The one configuration system: configargparse `.txt` files, CLI flags override the file.

Each stage owns its options in `<package>/options.py` (`add_args(parser)`); this module
assembles them into a single parser so every entry point accepts the same config file.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import configargparse

from common.errors import ConfigError


def str2bool(value: str | bool) -> bool:
    """Parse yes/no style booleans so config files can say `white_bkgd = True`."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "y", "on"}:
        return True
    if lowered in {"0", "false", "no", "n", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def add_common_args(parser: configargparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data and paths")
    group.add_argument("--config", is_config_file=True, help="config .txt file (key = value lines)")
    group.add_argument("--data_root", default="data/synthetic",
                       help="dataset folder holding one sub-folder per class (MAD: data/LEGO-3D)")
    group.add_argument("--class_name", default="demo",
                       help="class sub-folder of data_root, e.g. 01Gorilla ('all' loops over classes where supported)")
    group.add_argument("--ckpt_root", default="ckpts",
                       help="checkpoints land in <ckpt_root>/<dataset>/<class>/")
    group.add_argument("--output_root", default="outputs",
                       help="anomaly maps and metrics land in <output_root>/<dataset>/<class>/")
    group.add_argument("--half_res", type=str2bool, default=False,
                       help="load images at half resolution (MAD-Sim 800x800 -> 400x400)")
    group.add_argument("--white_bkgd", type=str2bool, default=True,
                       help="composite RGBA images on white and render with a white background")
    group.add_argument("--seed", type=int, default=0, help="seed for sampling, initialisation and data order")
    group.add_argument("--device", default="auto", help="'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:1', ...")


def build_parser(description: str = "OmniposeAD") -> configargparse.ArgumentParser:
    """The full parser: common options plus every stage's options."""
    from anomaly import options as anomaly_options
    from data import options as data_options
    from features import options as feature_options
    from inerf import options as inerf_options
    from nerf import options as nerf_options
    from retrieval import options as retrieval_options

    parser = configargparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        config_file_parser_class=configargparse.DefaultConfigFileParser,
    )
    add_common_args(parser)
    for module in (data_options, nerf_options, feature_options, retrieval_options, inerf_options, anomaly_options):
        module.add_args(parser)
    return parser


def parse_config(argv: Sequence[str] | None = None, description: str = "OmniposeAD") -> argparse.Namespace:
    """Parse config file + CLI flags into one namespace."""
    return build_parser(description).parse_args(argv)


def dataset_name(cfg: argparse.Namespace) -> str:
    """The dataset tag used in checkpoint and output paths: the data_root folder's name."""
    name = Path(cfg.data_root).resolve().name
    if not name:
        raise ConfigError(f"data_root {cfg.data_root!r} has no folder name")
    return name


def class_dir(cfg: argparse.Namespace, class_name: str | None = None) -> Path:
    return Path(cfg.data_root) / (class_name or cfg.class_name)


def ckpt_dir(cfg: argparse.Namespace, class_name: str | None = None) -> Path:
    return Path(cfg.ckpt_root) / dataset_name(cfg) / (class_name or cfg.class_name)


def output_dir(cfg: argparse.Namespace, class_name: str | None = None) -> Path:
    return Path(cfg.output_root) / dataset_name(cfg) / (class_name or cfg.class_name)
