"""Typed options: each stage declares its options ONCE, as a frozen dataclass whose fields carry the
default and the help text; the command-line parser and the `from_config` adapter are derived from it.

    @dataclass(frozen=True)
    class RetrievalOptions(Options):
        GROUP: ClassVar[str] = "coarse pose retrieval"
        desc_dim: int = option(64, "descriptor dimension after PCA (paper: 64)")

    RetrievalOptions.add_args(parser)          # --desc_dim (int, default 64, help ...)
    opts = RetrievalOptions.from_config(cfg)   # typed, validated, from the parsed namespace

Field types drive parsing: bool fields accept yes/no words (a bare `--flag` means yes), `tuple[int, ...]`
fields take a list (`key = [1, 2]` in a config file, `--key 1 2` on the command line), `X | None` fields
default to None.

Every field is part of the run identity (`Options.identity`, recorded in run.json: maps made under other
values are made again) unless its declaration says `cosmetic=True`: an option that cannot change a saved
pose, reference or map (a path, a progress or plotting setting).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

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


def option(default: Any, help: str, *, choices: typing.Sequence[Any] | None = None, cosmetic: bool = False) -> Any:
    """A dataclass field that is also a command-line option `--<name>`; `cosmetic`: it cannot change any
    result, so it stays out of the run identity (see Options.identity)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "cosmetic": cosmetic})


@dataclass(frozen=True)
class Options:
    """Base of every stage's options. Subclasses set GROUP (the --help section title)."""

    GROUP: ClassVar[str] = "options"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser, *, only: typing.Collection[str] | None = None,
                 aliases: typing.Mapping[str, typing.Sequence[str]] | None = None) -> None:
        """Declare one `--name` per field (or per field in `only`), with the field's default, type
        and help; `aliases` gives extra flag names per field (e.g. a tool's historical short names)."""
        group = parser.add_argument_group(cls.GROUP)
        hints = typing.get_type_hints(cls)
        aliases = dict(aliases or {})
        for f in dataclasses.fields(cls):
            if only is not None and f.name not in only:
                continue
            kind, sequence = _parse_type(hints[f.name], f"{cls.__name__}.{f.name}")
            kwargs: dict[str, Any] = {"default": list(f.default) if sequence else f.default,
                                      "help": f.metadata.get("help", "").replace("%", "%%"), "dest": f.name}
            kwargs["type"] = str2bool if kind is bool else kind
            if kind is bool and not sequence:  # `--flag` alone means true; `--flag false` still works
                kwargs.update(nargs="?", const=True)
            if sequence:
                kwargs["nargs"] = "*"
            if f.metadata.get("choices"):
                kwargs["choices"] = list(f.metadata["choices"])
            group.add_argument(f"--{f.name}", *(f"--{a}" for a in aliases.get(f.name, ())), **kwargs)

    @classmethod
    def from_config(cls, cfg: argparse.Namespace) -> Options:
        """The typed, validated options of this stage from a parsed config namespace."""
        values = vars(cfg)
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                raise ConfigError(f"option --{f.name} is missing from the parsed config "
                                  f"(was {cls.__name__}.add_args called on the parser?)")
            kind, sequence = _parse_type(hints[f.name], f.name)
            value = values[f.name]
            kwargs[f.name] = tuple(kind(v) for v in value) if sequence and value is not None else value
        return cls(**kwargs).validated()

    def validated(self) -> Options:
        """Range checks of this stage's options; ConfigError naming the option. Override per stage."""
        return self

    def identity(self) -> dict[str, Any]:
        """{field: value} of every field not declared cosmetic, as JSON values (tuples -> lists): this
        stage's part of a run's identity, so a new option is in it unless it is marked cosmetic."""
        return {f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
                for f in dataclasses.fields(self) if not f.metadata.get("cosmetic")}

    def replace(self, **changes: Any) -> Options:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes).validated()


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds (for `validated` methods)."""
    if not condition:
        raise ConfigError(message)


def _parse_type(hint: Any, where: str) -> tuple[type, bool]:
    """(scalar type, is_sequence) of a field annotation: T, T | None, tuple[T, ...]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: unsupported option type {hint}")
        return _parse_type(args[0], where)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: sequence options must be tuple[T, ...], got {hint}")
        return args[0], True
    if hint in (bool, int, float, str):
        return hint, False
    raise TypeError(f"{where}: unsupported option type {hint}")
