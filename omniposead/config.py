"""The one configuration system: configargparse `.txt` files, CLI flags override the file.

Each stage declares its options once, as a typed dataclass in `<package>/options.py`; this module
assembles them into the single parser every entry point accepts, and turns a parsed namespace into
`OmniposeConfig`, one typed options object per stage. A scoring protocol's preset (score_protocol =
official) is applied here, where the parser knows which options were given explicitly (check_presets).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NoReturn

import configargparse

from anomaly.options import ScoreOptions
from common.errors import ConfigError
from common.options import Options, option, require
from common.run import RunOptions
from evaluation.options import EvalOptions
from features.options import BackboneOptions
from inerf.options import InerfOptions
from mad.options import SynthOptions
from nerf.options import NeRFOptions, TrainOptions
from retrieval.options import RetrievalOptions


@dataclass(frozen=True)
class PipelineOptions(Options):
    GROUP: ClassVar[str] = "pipeline"

    evaluate: bool = option(True, "compute and print the class's AUROCs when its maps are done")


@dataclass(frozen=True)
class PredictOptions(Options):
    GROUP: ClassVar[str] = "verdicts on new photos (predict.py)"

    max_false_alarm: float = option(0.1, "without --validation_dir: the threshold is set so that about this share "
                                         "of anomaly-free photos is called defective, from the class's held-out "
                                         "training views scored like queries")
    validation_dir: str = option("", "a labelled folder laid out like a MAD class (test/good, test/<defect>, "
                                     "ground_truth/<defect>): the thresholds are its best image and pixel F1 "
                                     "(anomalib's adaptive threshold) instead")

    def validated(self) -> PredictOptions:
        require(0.0 < self.max_false_alarm < 1.0, f"max_false_alarm must be in (0, 1), got {self.max_false_alarm}")
        return self


@dataclass(frozen=True)
class LauncherOptions(Options):
    GROUP: ClassVar[str] = "launcher (many classes at once: omniposead.launcher)"

    launcher: str = option("inline", "inline = the classes one after another in this process; local = one job "
                                     "per class on this machine (submitit; one GPU each when GPUs are present); "
                                     "slurm = one job per class on a SLURM cluster (a job array)",
                           choices=("inline", "local", "slurm"))
    max_jobs: int = option(0, "classes running at once (local: 0 = one per GPU, or 1 on a CPU; slurm: array "
                              "parallelism, 0 = 64)")
    job_timeout_min: int = option(24 * 60, "time limit of one class job in minutes (slurm: --time)")
    slurm_partition: str = option("", "slurm: partition (empty = the cluster's default)")
    slurm_gpus: int = option(1, "slurm: GPUs per class job")
    slurm_cpus: int = option(8, "slurm: CPUs per class job")
    slurm_mem_gb: float = option(32.0, "slurm: memory per class job in GB")
    slurm_extra: str = option("", "slurm: extra sbatch flags, space separated, e.g. '--account=ab12 --qos=high'")
    jobs_dir: str = option("", "job states, logs and submitit files (empty = <output_root>/<dataset>/jobs)")
    poll_seconds: float = option(10.0, "how often the launcher looks at its jobs")

    def validated(self) -> LauncherOptions:
        require(self.max_jobs >= 0 and self.job_timeout_min >= 1 and self.poll_seconds > 0,
                "max_jobs must be >= 0, job_timeout_min >= 1 and poll_seconds > 0")
        return self


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
    predict: PredictOptions
    launcher: LauncherOptions

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> OmniposeConfig:
        return cls(**{f.name: STAGES[f.name].from_config(namespace) for f in dataclasses.fields(cls)})

    def for_class(self, class_name: str) -> OmniposeConfig:
        return dataclasses.replace(self, run=self.run.for_class(class_name))


STAGES: dict[str, type[Options]] = {
    "run": RunOptions, "synth": SynthOptions, "nerf": NeRFOptions, "train": TrainOptions,
    "backbone": BackboneOptions, "retrieval": RetrievalOptions, "inerf": InerfOptions, "score": ScoreOptions,
    "evaluation": EvalOptions, "pipeline": PipelineOptions, "predict": PredictOptions,
    "launcher": LauncherOptions,
}


class ConfigParser(configargparse.ArgumentParser):
    """configargparse with errors as one line each: no usage text, the config file named when the bad
    key comes from it, and the closest valid key suggested for an unknown one."""

    def error(self, message: str) -> NoReturn:
        config = self._config_file()
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            lines = [self._unknown_line(token, config) for token in unknown.group(1).split() if token.startswith("-")]
            lines = lines or [message]
        else:
            key = re.match(r"argument (--\w+)", message)
            from_file = key and config and key.group(1)[2:] in _config_keys(config)
            lines = [f"{config}: {message}" if from_file else message]
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2)

    def _config_file(self) -> str | None:
        argv = sys.argv[1:] if self._last_argv is None else self._last_argv
        for i, token in enumerate(argv):
            if token == "--config" and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith("--config="):
                return token.split("=", 1)[1]
        return None

    def _unknown_line(self, token: str, config: str | None) -> str:
        key = token[2:].split("=", 1)[0]
        known = sorted(a.dest for a in self._actions if a.dest != "help")
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = f"{config}: unknown key '{key}'" if config and key in _config_keys(config) else \
            f"unknown option --{key}"
        return where + hint

    def parse_args(self, args=None, namespace=None, **kwargs):
        """Parse, then apply the scoring protocol's preset (`check_presets`)."""
        self._last_argv = None if args is None else list(args)
        parsed = super().parse_args(args, namespace, **kwargs)
        if hasattr(parsed, "score_protocol"):
            check_presets(parsed, self.explicit_options(args))
        return parsed

    def explicit_options(self, args=None) -> dict[str, str]:
        """{dest: where it was given} for every option set in the config file or on the command line, as
        opposed to left at its default: a second parse with every default suppressed, so only given
        options reach the namespace (argparse's own matching: abbreviations, `--key=value`, config keys)."""
        defaults = {action: action.default for action in self._actions}
        try:
            for action in self._actions:
                action.default = argparse.SUPPRESS
            given, _ = configargparse.ArgumentParser.parse_known_args(self, args, ignore_help_args=True)
        finally:
            for action, default in defaults.items():
                action.default = default
        from_file = {action.dest: source.split("|", 1)[-1]
                     for source, settings in self.get_source_to_settings_dict().items()
                     if source.startswith("config_file") for action, _ in settings.values() if action is not None}
        return {dest: from_file.get(dest, "command line") for dest in vars(given)}

    _last_argv: list[str] | None = None


def check_presets(namespace: argparse.Namespace, given: dict[str, str]) -> None:
    """Apply the scoring protocol's preset (anomaly.options.PRESETS) and print one line saying what it sets.
    `given`: {option: its config file or 'command line'} for the options set explicitly. An explicit value
    that contradicts the preset is a ConfigError (one line per option), except where the protocol comes
    from the command line and the value only from the config file: the command line overrides the file,
    as for any option, and the printed line names the file's values it replaced."""
    score = ScoreOptions.from_config(namespace)
    conflicts = score.preset_conflicts(given)
    cli_protocol = given.get("score_protocol") == "command line"
    replaced = [name for name in conflicts if cli_protocol and given[name] != "command line"]
    refused = [name for name in conflicts if name not in replaced]
    if refused:
        raise ConfigError("\n".join(
            f"{given[name]}: {name} = {_shown(getattr(score, name))} contradicts score_protocol = "
            f"{score.score_protocol}, which sets {name} = {_shown(score.preset()[name])}; remove {name}, or use "
            "score_protocol = paper to choose it yourself" for name in refused))
    line = score.preset_line()
    if line and replaced:
        line += " (replacing " + ", ".join(f"{n} = {_shown(getattr(score, n))} of {given[n]}" for n in replaced) + ")"
    if line:
        print(line)


class StrictConfigFileParser(configargparse.DefaultConfigFileParser):
    """configargparse's `key = value` files, with what it would misread refused first, as one line naming the
    file and the line: a section header (`[nerf]`: files are flat), a line that is not `key = value` (or
    `key: value`), and a key given twice (configargparse silently keeps the last)."""

    def parse(self, stream):
        path = getattr(stream, "name", "config file")
        text = stream.read()
        first_line: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            where = f"{path}:{number}"
            if line.startswith("["):
                raise ConfigError(f"{where}: section header {line!r}: config files are flat `key = value` lines")
            match = KEY_LINE.match(line)
            if match is None:
                raise ConfigError(f"{where}: {line!r} is not a `key = value` line")
            key = match.group(1)
            if key in first_line:
                raise ConfigError(f"{where}: key '{key}' given twice (first on line {first_line[key]}); keep one")
            first_line[key] = number
        return super().parse(io.StringIO(text))


KEY_LINE = re.compile(r"([A-Za-z_][\w-]*)\s*[=:]")


def _shown(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _config_keys(path: str) -> set[str]:
    """The keys written in a config file (`key = value` lines), for error messages."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    return {m.group(1) for line in text.splitlines() if (m := KEY_LINE.match(line.strip()))}


def build_parser(description: str = "OmniposeAD") -> configargparse.ArgumentParser:
    """The full parser: `--config FILE` plus every stage's options."""
    parser = ConfigParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        config_file_parser_class=StrictConfigFileParser,
    )
    parser.add_argument("--config", is_config_file=True, help="config .txt file (key = value lines)")
    for stage in STAGES.values():
        stage.add_args(parser)
    return parser


def parse_config(argv: Sequence[str] | None = None, description: str = "OmniposeAD") -> OmniposeConfig:
    """Parse config file + CLI flags into the typed config."""
    return OmniposeConfig.from_namespace(build_parser(description).parse_args(argv))
