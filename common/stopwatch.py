"""Where a run's time goes: wall seconds per named stage, and the process's peak memory."""
from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class StageTimes:
    """Wall seconds per stage, in the order the stages first ran (a stage timed twice adds up)."""
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def line(self) -> str:
        """'data 3.1 s, nerf 240.0 s, ...; total 250.2 s'."""
        parts = ", ".join(f"{name} {value:.1f} s" for name, value in self.seconds.items())
        return f"{parts}; total {sum(self.seconds.values()):.1f} s"


def peak_rss_gb() -> float:
    """The largest resident memory this process has had, in GB (getrusage: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)
