"""The one configuration system: configargparse `.txt` files, CLI flags override the file.

Each stage declares its options once, as a typed dataclass in `<package>/options.py`; this module
assembles them into the single parser every entry point accepts, and turns a parsed namespace into
`OmniposeConfig`, one typed options object per stage.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Sequence

import configargparse

from anomaly.options import ScoreOptions
from common.options import Options, option
from common.run import RunOptions
from data.options import SynthOptions
from evaluation.options import EvalOptions
from features.options import BackboneOptions
from inerf.options import InerfOptions
from nerf.options import NeRFOptions, TrainOptions
from retrieval.options import RetrievalOptions


@dataclass(frozen=True)
class PipelineOptions(Options):
    GROUP: ClassVar[str] = "pipeline"

    evaluate: bool = option(True, "compute and print the class's AUROCs when its maps are done")


@dataclass(frozen=True)
class OmniposeConfig:
    """Every stage's typed options, read from one parsed config."""
    run: RunOptions
    synth: SynthOptions
    nerf: NeRFOptions
    train: TrainOptions
    backbone: BackboneOptions
    retrieval: RetrievalOptions
    inerf: InerfOptions
    score: ScoreOptions
    evaluation: EvalOptions
    pipeline: PipelineOptions

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> "OmniposeConfig":
        return cls(**{f.name: STAGES[f.name].from_config(namespace) for f in dataclasses.fields(cls)})

    def for_class(self, class_name: str) -> "OmniposeConfig":
        return dataclasses.replace(self, run=self.run.for_class(class_name))


STAGES: dict[str, type[Options]] = {
    "run": RunOptions, "synth": SynthOptions, "nerf": NeRFOptions, "train": TrainOptions,
    "backbone": BackboneOptions, "retrieval": RetrievalOptions, "inerf": InerfOptions, "score": ScoreOptions,
    "evaluation": EvalOptions, "pipeline": PipelineOptions,
}


def build_parser(description: str = "OmniposeAD") -> configargparse.ArgumentParser:
    """The full parser: `--config FILE` plus every stage's options."""
    parser = configargparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        config_file_parser_class=configargparse.DefaultConfigFileParser,
    )
    parser.add_argument("--config", is_config_file=True, help="config .txt file (key = value lines)")
    for stage in STAGES.values():
        stage.add_args(parser)
    return parser


def parse_config(argv: Sequence[str] | None = None, description: str = "OmniposeAD") -> OmniposeConfig:
    """Parse config file + CLI flags into the typed config."""
    return OmniposeConfig.from_namespace(build_parser(description).parse_args(argv))
