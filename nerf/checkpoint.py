"""NeRF checkpoints: ckpts/<dataset>/<class>/nerf.pt, written atomically, loaded with architecture checks."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from common.config import ckpt_dir
from common.errors import PadError
from common.io import save_torch
from nerf.renderer import ARCH_KEYS, NeRFRenderer, arch_from_config

CHECKPOINT_NAME = "nerf.pt"


def checkpoint_path(cfg: argparse.Namespace, class_name: str | None = None) -> Path:
    """ckpts/<dataset>/<class>/nerf.pt"""
    return ckpt_dir(cfg, class_name) / CHECKPOINT_NAME


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic torch.save (temp file + rename): an interrupted write never leaves a broken checkpoint."""
    save_torch(path, state)


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict; PadError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise PadError(f"no trained NeRF checkpoint at {path}: train it first with "
                       f"`python -m nerf.train --config <config>`")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's problem to fix
        raise PadError(f"cannot read NeRF checkpoint {path}: {err}") from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise PadError(f"{path} is not a NeRF checkpoint written by nerf.train (missing 'model'/'arch')")
    return state


def check_arch(path: Path, saved: dict[str, Any], cfg: argparse.Namespace) -> None:
    """PadError listing every architecture option where the checkpoint and the config disagree."""
    wanted = arch_from_config(cfg)
    diffs = [f"{k}={saved.get(k)!r} (config: {wanted[k]!r})" for k in ARCH_KEYS if saved.get(k) != wanted[k]]
    if diffs:
        raise PadError(f"NeRF checkpoint {path} was trained with a different architecture: "
                       + ", ".join(diffs) + "; use the training config or retrain")


def load_renderer(cfg: argparse.Namespace, device: torch.device | str,
                  class_name: str | None = None) -> NeRFRenderer:
    """The trained renderer of a class, in eval mode with frozen parameters (requires_grad False).

    Rendering options (N_samples, near/far, chunk, amp) come from `cfg`; the architecture must match.
    """
    path = checkpoint_path(cfg, class_name)
    state = read_checkpoint(path, device)
    check_arch(path, state["arch"], cfg)
    renderer = NeRFRenderer.from_config(cfg)
    renderer.load_state_dict(state["model"])
    renderer.to(device).eval().requires_grad_(False)
    return renderer
