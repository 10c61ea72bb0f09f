"""Run one step for one class, or for every class of a dataset (`--class_name all` / `--obj all`).

With "all", a class that fails does not stop the others: its error is printed as one line, the run
goes on, and a summary table of every class (done / failed, seconds, the error) ends it; the entry
point exits non-zero when any class failed. A class folder without transforms.json is listed as failed
(not silently dropped). With a single class, its error propagates as usual (one line, exit code 2).
"""
from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import DataError, PadError
from mad.layout import TRANSFORMS_FILE, natural_key

ALL = "all"


@dataclass
class ClassOutcome:
    name: str
    result: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def dataset_classes(data_root) -> list[str]:
    """Every class folder of `data_root` (non-hidden sub-folders), in natural order; a folder without
    transforms.json is included so that its run can say what is missing."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: data_root folder not found")
    names = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not names:
        raise DataError(f"{root}: no class folders (each class is a sub-folder with a {TRANSFORMS_FILE})")
    return sorted(names, key=natural_key)


def class_names(data_root, class_name: str) -> list[str]:
    """`all` -> every class folder; `a,b` -> those names; a single name -> [name]."""
    if class_name == ALL:
        return dataset_classes(data_root)
    return [name.strip() for name in class_name.split(",") if name.strip()]


def run_classes(data_root, class_name: str, step: Callable[[str], Any], what: str = "") -> list[ClassOutcome]:
    """`step(name)` for the named class (its errors propagate), or for each class of `all` / `a,b,c` (one
    failing class is recorded and the others go on; a summary table at the end)."""
    if class_name != ALL and "," not in class_name:
        start = time.perf_counter()
        return [ClassOutcome(class_name, step(class_name), seconds=time.perf_counter() - start)]
    outcomes = []
    for name in class_names(data_root, class_name):
        start = time.perf_counter()
        try:
            outcomes.append(ClassOutcome(name, step(name), seconds=time.perf_counter() - start))
        except PadError as err:
            outcomes.append(ClassOutcome(name, error=str(err), seconds=time.perf_counter() - start))
            print(f"error: [{name}] {err}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - an unexpected failure of one class must not stop the others
            outcomes.append(ClassOutcome(name, error=f"{type(err).__name__}: {err}",
                                         seconds=time.perf_counter() - start))
            print(f"error: [{name}] unexpected {type(err).__name__}: {err}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
    print(summary_table(outcomes, what))
    return outcomes


def summary_table(outcomes: list[ClassOutcome], what: str = "") -> str:
    """Markdown table: class, status, seconds, error."""
    failed = [o for o in outcomes if not o.ok]
    title = f"{what}: " if what else ""
    lines = [f"\n{title}{len(outcomes) - len(failed)} of {len(outcomes)} classes done"
             + (f", {len(failed)} failed" if failed else ""),
             "| class | status | seconds | error |", "|---|---|---:|---|"]
    for o in outcomes:
        lines.append(f"| {o.name} | {'done' if o.ok else 'FAILED'} | {o.seconds:.1f} | {o.error or ''} |")
    return "\n".join(lines)


def exit_code(outcomes: list[ClassOutcome]) -> int:
    """0 when every class succeeded, else 1."""
    return 0 if all(o.ok for o in outcomes) else 1
