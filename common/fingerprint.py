"""Content hashes of named tensors and values: what a cache or a run identity is keyed on."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def feed(h, name: str, value: Any) -> None:
    """Feed one named tensor or array (dtype, shape and bytes) or plain value to the hash `h`."""
    h.update(name.encode())
    if torch.is_tensor(value):
        value = value.detach().cpu().contiguous()
        h.update(f"{value.dtype}{tuple(value.shape)}".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value)
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    else:
        h.update(repr(value).encode())


def array_digest(array: np.ndarray) -> str:
    """BLAKE2b hex digest of an array's dtype, shape and bytes: the content hash of image data (fast on the
    hundreds of MB of a full-size class's training views)."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(f"{array.dtype}{array.shape}".encode(), digest_size=32)
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def digest(named: Iterable[tuple[str, Any]]) -> str:
    """SHA-256 hex digest of (name, value) pairs in the order given."""
    h = hashlib.sha256()
    for name, value in named:
        feed(h, name, value)
    return h.hexdigest()
