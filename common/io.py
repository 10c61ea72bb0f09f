"""Atomic writes: every file is written to a temporary sibling and renamed into place,
so an interrupted run never leaves a half-written checkpoint, map or JSON behind.

A temporary file is named `.<name>.<pid>.<random>.tmp`; one left by a killed process (its pid no longer
runs) is removed by `remove_stale_temps` when the next run starts."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


TEMP_SUFFIX = ".tmp"


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files under `folder` (recursively) left by processes that no longer run;
    returns what was removed. Temporaries of a live process (another run writing there) are kept."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for tmp in folder.rglob(f".*{TEMP_SUFFIX}"):
        parts = tmp.name[:-len(TEMP_SUFFIX)].split(".")
        pid = next((int(p) for p in reversed(parts[:-1]) if p.isdigit()), None)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def ensure_writable(folder: str | os.PathLike, what: str) -> Path:
    """Create `folder` if needed and check a file can be written there; DataError naming it otherwise.
    Called before expensive work so that results are never lost to a read-only or misplaced folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{folder}: cannot create the {what} folder (a file of that name exists)") from None
    except NotADirectoryError:
        raise DataError(f"{folder}: cannot create the {what} folder (a parent path is a regular file)") from None
    except OSError as err:
        raise DataError(f"{folder}: cannot create the {what} folder ({err.strerror})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.", suffix=TEMP_SUFFIX):
            pass
    except OSError as err:
        raise DataError(f"{folder}: the {what} folder is not writable ({err.strerror})") from None
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call `writer(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image (uint8, or float in [0, 1]) as PNG."""
    import imageio.v3 as iio

    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # torch tensors
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
