"""One run per class at a time: a lock file beside the class's outputs.

Two runs of one class (say with other settings) would overwrite each other's maps, and run.json, the maps and
metrics.json would then disagree. The lock is a small JSON file created atomically (O_CREAT | O_EXCL) holding
the holder's process id, host, start time and SLURM job; a second run is refused with one line naming them. A
lock left by a process that is gone (same host, no such process), or by an earlier run of the same SLURM job (a
requeued job may restart on another node), is taken over with a notice.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from common.errors import PadError
from common.io import pid_alive

LOCK_NAME = ".run.lock"


class LockedError(PadError):
    """Another live run holds the lock."""


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "slurm_job": _slurm_job()}


def _slurm_job() -> str | None:
    """This SLURM job's id (with its array task): a requeued job keeps it, on whatever node it restarts."""
    job = os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return None if job is None else f"{job}_{task}" if task is not None else job


def _read(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _create(path: Path, holder: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
    return True


@contextlib.contextmanager
def run_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold `<folder>/.run.lock` for the block. LockedError (one line: the holder's process, host and start time)
    when a live run holds it; a stale lock (its process gone, same host) is taken over with a notice."""
    path = Path(folder) / LOCK_NAME
    me = _holder()
    if not _create(path, me):
        holder = _read(path)
        pid, host = holder.get("pid"), holder.get("host")
        dead = host == me["host"] and isinstance(pid, int) and not pid_alive(pid)
        requeued = me["slurm_job"] is not None and holder.get("slurm_job") == me["slurm_job"]
        if dead or requeued:
            why = "this SLURM job's earlier run" if requeued else "no longer running"
            print(f"notice: {path}: taking over the lock of {what} left by process {pid} ({why}, "
                  f"started {holder.get('started', '?')})", file=sys.stderr)
            path.unlink(missing_ok=True)
            holder = None if _create(path, me) else _read(path)
        if holder is not None:
            raise LockedError(f"{path}: {what} is being made by another run (process {holder.get('pid', '?')} on "
                              f"{holder.get('host', '?')}, since {holder.get('started', '?')}); wait for it to end, "
                              f"or stop it (a lock whose process is gone is taken over)")
    try:
        yield
    finally:
        if _read(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
