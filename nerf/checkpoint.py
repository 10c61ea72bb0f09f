"""NeRF checkpoints (ckpts/<dataset>/<class>/nerf.pt): written atomically, read with architecture checks.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings), so it is read
with `torch.load(weights_only=True)`: a file carrying any other pickled object (which could run code on
load) is refused. `weights_digest` names the trained model by its content (the run identity records it).
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.errors import PadError
from common.fingerprint import digest
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
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's problem to fix
        raise PadError(_unreadable(path, err)) from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise PadError(f"{path} is not a NeRF checkpoint written by train_nerf.py (missing 'model'/'arch')")
    broken = [name for name, value in state["model"].items()
              if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise PadError(f"NeRF checkpoint {path} has non-finite weights (NaN or inf in {', '.join(broken[:3])}"
                       f"{', ...' if len(broken) > 3 else ''}): its training diverged; retrain, e.g. with a lower "
                       "lrate")
    return state


def _unreadable(path: Path, err: Exception) -> str:
    """One line on why `path` did not load: unsafe Python objects (named), or a damaged file."""
    unsafe: list[str] = []
    if isinstance(err, pickle.UnpicklingError):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - a damaged file: reported below
            unsafe = []
    if unsafe:
        return (f"refusing to load NeRF checkpoint {path}: it holds Python objects ({', '.join(unsafe)}) besides "
                "tensors and plain values, and loading them could run code; use a checkpoint written by "
                "train_nerf.py")
    return (f"cannot read NeRF checkpoint {path}: the file is damaged, truncated or not a torch checkpoint "
            f"({type(err).__name__}); retrain or copy it again")


def check_views(path: Path, state: dict[str, Any], views) -> None:
    """PadError unless the checkpoint was trained on `views` (mad.loader.TrainViews): the fingerprint of the
    training images, poses and intrinsics saved at training must equal today's. A checkpoint written before
    fingerprints were saved cannot be checked: one notice says so."""
    saved = (state.get("data") or {}).get("views")
    if saved is None:
        print(f"note: NeRF checkpoint {path} does not record what it was trained on (written by an older "
              "version), so it cannot be checked against the training views; retrain to have it checked")
        return
    if saved != views.fingerprint:
        raise PadError(f"NeRF checkpoint {path} was trained on other training images or poses than those in "
                       f"{views.folder} (checkpoint {saved[:12]}, data {views.fingerprint[:12]}): retrain it "
                       f"(move {path} away) or point the config at the data it was trained on")


def weights_digest(model: Mapping[str, torch.Tensor], occupancy: Mapping[str, Any] | None) -> str:
    """SHA-256 of a NeRF's parameters (`state_dict`) and its occupancy grid (`OccupancyGrid.state`, or None):
    equal exactly when the trained models are bitwise equal, whatever the step, seed or file they came from."""
    return digest([*sorted(model.items()), *((f"occupancy.{k}", v) for k, v in sorted((occupancy or {}).items()))])


def check_arch(path: Path, saved: dict[str, Any], opts: NeRFOptions) -> None:
    """PadError listing every architecture option where the checkpoint and the options disagree."""
    wanted = opts.architecture()
    if saved.get("field", "mlp") != opts.field:
        raise PadError(f"NeRF checkpoint {path} holds a {saved.get('field', 'mlp')!r} field, the config asks for "
                       f"field = {opts.field!r}; use the training config or retrain")
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
