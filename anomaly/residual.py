"""A model of the NeRF's normal residual, so that a pixel scores by how unusual its difference is FOR THIS NeRF.

Even at the true pose the NeRF's reference differs from a defect-free photo (blur at edges, colour
shifts); the plain scorer counts that as anomaly. The model is fitted on pairs (training photo, NeRF
render at the photo's known pose) of held-out TRAINING views, never on test images: per compared term k
(each backbone stage, the RGB image) and channel c, the mean and standard deviation of the difference
d_k,c over all pixels of those views. Scoring then uses

    z_k,c(u) = (d_k,c(u) - mean_k,c) / std_k,c / sqrt(C_k)

in place of d_k,c(u), so every term has unit expected energy sum_c z^2 on the NeRF's normal residual:
the RGB term counts as much as a feature stage, and score_stage_weights weigh terms in the same units.

The model is stored with the class's checkpoint (ckpts/<dataset>/<class>/residual.pt, atomic) under a
fingerprint of everything it depends on; the pipeline refits it when no stored fingerprint matches
(omniposead.residual_fit). The file keeps the RESIDUAL_SLOTS models fitted last, so that runs which alternate two
scorer or reference settings on one class (a benchmark's variants) reuse each other's fit instead of refitting.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.io import save_torch

RESIDUAL_NAME = "residual.pt"
FORMAT_VERSION = 1          # of one model's state
RESIDUAL_SLOTS = 4          # models kept in one file, the one fitted last first
_MIN_STD = 1e-6


@dataclass
class ResidualModel:
    mean: list[torch.Tensor]          # per term: [C_k] mean difference (query minus reference)
    std: list[torch.Tensor]           # per term: [C_k] standard deviation, >= _MIN_STD
    fingerprint: str = ""
    notes: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, batches: Iterable[Sequence[torch.Tensor]], fingerprint: str = "",
            notes: dict | None = None) -> ResidualModel:
        """Per-channel mean / std of each term over every pixel of every batch.

        batches: per batch of views, the per-term differences [B,C_k,h_k,w_k] (anomaly.scorer.term_differences
        of photo and render). Accumulated in float64; terms keep their native resolution (bilinear resizing
        is an average, so normalising before or after it is the same).
        """
        sums = None
        for diffs in batches:
            flat = [d.detach().double().transpose(0, 1).reshape(d.shape[1], -1) for d in diffs]
            stats = [(f.shape[1], f.sum(1), f.square().sum(1)) for f in flat]
            sums = stats if sums is None else [(n0 + n1, s0 + s1, q0 + q1)
                                               for (n0, s0, q0), (n1, s1, q1) in zip(sums, stats, strict=True)]
        if sums is None:
            raise ValueError("no views to fit the residual model on")
        mean, std = [], []
        for count, total, total_sq in sums:
            m = total / count
            var = (total_sq / count - m.square()).clamp_min(0.0)
            mean.append(m.float().cpu())
            std.append(var.sqrt().clamp_min(_MIN_STD).float().cpu())
        return cls(mean, std, fingerprint, dict(notes or {}))

    def normalise(self, diffs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """z-scored differences (see the module docstring), each term divided by sqrt(C_k)."""
        if len(diffs) != len(self.mean) or any(d.shape[1] != m.numel() for d, m in zip(diffs, self.mean, strict=True)):
            raise ValueError(f"residual model has terms of {[m.numel() for m in self.mean]} channels; the scorer "
                             f"gives {[d.shape[1] for d in diffs]} (fitted with other scorer options?)")
        out = []
        for d, m, s in zip(diffs, self.mean, self.std, strict=True):
            shape = (1, -1) + (1,) * (d.ndim - 2)
            scale = 1.0 / math.sqrt(d.shape[1])
            out.append((d.float() - m.to(d.device).view(shape)) * (scale / s.to(d.device).view(shape)))
        return out

    def state(self) -> dict:
        return {"format_version": FORMAT_VERSION, "fingerprint": self.fingerprint, "mean": self.mean,
                "std": self.std, "notes": self.notes}

    @classmethod
    def from_state(cls, state: dict) -> ResidualModel:
        return cls(list(state["mean"]), list(state["std"]), state["fingerprint"], dict(state.get("notes") or {}))

    def save(self, path: Path, slots: int = RESIDUAL_SLOTS) -> None:
        """Into the cache file at `path`, first, beside the models stored there before (`slots` in all, the
        oldest fit dropped)."""
        kept = [state for state in stored_states(path) if state.get("fingerprint") != self.fingerprint]
        save_torch(path, {"models": [self.state(), *kept][:max(slots, 1)]})


def stored_states(path: Path) -> list[dict]:
    """The model states in the cache file at `path`, the one fitted last first; [] when it is missing or unreadable
    (a file of one model, as older versions wrote, is a list of one)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable cache is simply rebuilt
        return []
    states = stored.get("models", [stored]) if isinstance(stored, dict) else []
    return [state for state in states if isinstance(state, dict) and state.get("format_version") == FORMAT_VERSION]


def load_residual_model(path: Path, fingerprint: str) -> ResidualModel | None:
    """The model stored at `path` under `fingerprint`, else None (refit)."""
    for state in stored_states(path):
        if state.get("fingerprint") == fingerprint:
            return ResidualModel.from_state(state)
    return None
