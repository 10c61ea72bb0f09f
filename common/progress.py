"""Progress bars that stay readable in log files: one factory for every bar of the project."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

LOG_REDRAW_SECONDS = 10.0


def _is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm, redrawing at most every LOG_REDRAW_SECONDS when it writes to a file rather than a terminal (a log
    then holds a line per bar every few seconds, not one per step and megabytes); an explicit `mininterval`
    or the environment's TQDM_MININTERVAL wins."""
    if "mininterval" not in kwargs and "TQDM_MININTERVAL" not in os.environ \
            and not _is_terminal(kwargs.get("file") or sys.stderr):
        kwargs["mininterval"] = LOG_REDRAW_SECONDS
    return tqdm(iterable, **kwargs)


def progress_write(line: str) -> None:
    """Print a line without breaking the bars on screen."""
    tqdm.write(line)
