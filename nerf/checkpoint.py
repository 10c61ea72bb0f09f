"""NeRF checkpoints (ckpts/<dataset>/<class>/nerf.pt): written atomically, read with architecture checks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.errors import PadError
from common.io import save_torch
from nerf.options import NeRFOptions
from nerf.renderer import NeRFRenderer

CHECKPOINT_NAME = "nerf.pt"
LOG_NAME = "train_log.json"


def checkpoint_path(ckpt_dir: Path) -> Path:
    """The NeRF checkpoint of a class's checkpoint folder."""
    return Path(ckpt_dir) / CHECKPOINT_NAME


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic torch.save (temp file + rename): an interrupted write never leaves a broken checkpoint."""
    save_torch(path, state)


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict; PadError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise PadError(f"no trained NeRF checkpoint at {path}: train it first with "
                       f"`python train_nerf.py --config <config>`")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's problem to fix
        raise PadError(f"cannot read NeRF checkpoint {path}: {err}") from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise PadError(f"{path} is not a NeRF checkpoint written by train_nerf.py (missing 'model'/'arch')")
    return state


def check_arch(path: Path, saved: dict[str, Any], opts: NeRFOptions) -> None:
    """PadError listing every architecture option where the checkpoint and the options disagree."""
    wanted = opts.architecture()
    diffs = [f"{k}={saved.get(k)!r} (config: {v!r})" for k, v in wanted.items() if saved.get(k) != v]
    if diffs:
        raise PadError(f"NeRF checkpoint {path} was trained with a different architecture: "
                       + ", ".join(diffs) + "; use the training config or retrain")


def frozen_renderer(renderer: NeRFRenderer) -> NeRFRenderer:
    """The renderer in eval mode with its parameters excluded from autograd (for poses and references)."""
    return renderer.eval().requires_grad_(False)


def renderer_from_state(state: dict[str, Any], path: Path, opts: NeRFOptions, white_bkgd: bool,
                        device: torch.device | str) -> NeRFRenderer:
    """The frozen renderer of an already read checkpoint (see frozen_renderer).

    Rendering options (N_samples, near/far, chunk, amp, occupancy grid) come from `opts`; the architecture
    must match. With `occupancy_grid`, the grid saved by training is used when it has the options' resolution
    and bound; otherwise (a checkpoint trained without the grid, or with another one) it is rebuilt from the
    trained density field.
    """
    check_arch(path, state["arch"], opts)
    renderer = NeRFRenderer(opts, white_bkgd)
    renderer.load_state_dict(state["model"])
    renderer = frozen_renderer(renderer.to(device))
    if renderer.grid is not None:
        saved = state.get("occupancy")
        if renderer.grid.matches(saved):
            renderer.grid.load_state(saved, str(path))
        else:
            renderer.fill_grid()
    return renderer


def load_renderer(path: Path, opts: NeRFOptions, white_bkgd: bool, device: torch.device | str) -> NeRFRenderer:
    """The frozen renderer of the checkpoint at `path`."""
    return renderer_from_state(read_checkpoint(path, device), path, opts, white_bkgd, device)
