"""The identity of a class's maps: what they were made with, recorded in run.json and compared on every run.

It is derived from the typed options, not kept by hand: every stage of OmniposeConfig contributes all of
its options (Options.identity), except the fields declared `cosmetic=True` and the stages in
OUTSIDE_IDENTITY (each with the reason it cannot change a map). So a new option, or a new stage, is part of
the identity unless someone says otherwise. `used` adds the assets actually loaded: the NeRF by a content
hash of its weights and occupancy grid (so two trainings that reached the same step still differ, and a
retrained or resumed NeRF is a change), the backbone, the retrieval database and residual model by their
fingerprints, and the kind of device (CUDA runs bf16 autocast, the CPU does not).

    identity = run_identity(cfg, used)
    identity_changes(saved_identity, identity)   # ['nerf.N_samples 64 -> 32', ...]; [] = maps reusable
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from omniposead.config import OmniposeConfig

OUTSIDE_IDENTITY = {
    "synth": "generates a class folder only when it does not exist; the data are named by run.data_root/class_name",
    "train": "acts only through the checkpoint, which used.nerf_weights names by its content",
    "evaluation": "reads the maps once they are made (save_overlays only adds a preview picture)",
    "pipeline": "chooses whether to evaluate after the maps are made",
    "predict": "turns finished maps into verdicts (a threshold of its own, recomputed when it changes)",
    "launcher": "chooses where and how many classes run at once",
}


def identity_stages() -> list[str]:
    """The OmniposeConfig stages whose options are part of the identity."""
    return [f.name for f in dataclasses.fields(OmniposeConfig) if f.name not in OUTSIDE_IDENTITY]


def run_identity(cfg: OmniposeConfig, used: Mapping[str, Any]) -> dict[str, Any]:
    """{stage: {option: value}} of every identity stage, plus {"used": the assets}, as JSON values."""
    identity = {stage: getattr(cfg, stage).identity() for stage in identity_stages()}
    return json.loads(json.dumps({**identity, "used": dict(used)}))


def identity_changes(saved: Mapping[str, Any] | None, identity: Mapping[str, Any]) -> list[str]:
    """'<stage>.<key> <saved> -> <now>' for every leaf that differs; [] when the saved maps can be reused.
    No saved identity (maps of a version that did not record one) is one change."""
    if saved is None:
        return ["identity (not recorded with the saved maps) -> recorded"]
    old, new = _leaves(saved), _leaves(identity)
    missing = object()
    return [f"{key} {_short(old.get(key, missing))} -> {_short(new.get(key, missing))}"
            for key in sorted(old.keys() | new.keys()) if old.get(key, missing) != new.get(key, missing)]


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': value} of a nested dict (lists are leaves)."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def _short(value: Any) -> str:
    """A value as printed in a change line: JSON, long strings (hashes) cut to 12 characters."""
    if not isinstance(value, (str, int, float, bool, list, type(None))):
        return "(none)"
    if isinstance(value, str) and len(value) > 16:
        return value[:12] + "..."
    return json.dumps(value)
