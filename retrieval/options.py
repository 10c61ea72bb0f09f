"""Options of the coarse-pose retrieval database."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.options import Options, option, require


@dataclass(frozen=True)
class RetrievalOptions(Options):
    GROUP: ClassVar[str] = "coarse pose retrieval"

    desc_dim: int = option(64, "descriptor dimension after PCA (paper: 64)")
    retrieval_size: int = option(224, "images are resized to this square size before computing descriptors")
    retrieval_topk: int = option(1, "nearest training views returned per query")
    retrieval_batch: int = option(32, "images per backbone forward pass when computing descriptors")

    def validated(self) -> RetrievalOptions:
        for name in ("desc_dim", "retrieval_size", "retrieval_topk", "retrieval_batch"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        return self
