"""Options of the evaluation: metrics, figures and overlays."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.options import Options, option, require


@dataclass(frozen=True)
class EvalOptions(Options):
    GROUP: ClassVar[str] = "evaluation and figures"

    aupro_fpr: float = option(0.3, "integration limit of pixel AUPRO")
    n_qualitative: int = option(6, "images shown in the qualitative figure sheet")
    save_overlays: bool = option(True, "write a heat-map overlay PNG per image")
    eval_max_pixels: int = option(100_000_000, "pixel AUROC / AUPRO use a deterministic random subset of about "
                                               "this many pixels when the test set has more (0 = always all pixels)")
    qual_threshold: float | None = option(None, "score threshold of the predicted masks in qualitative.png "
                                                "(default: the pixel threshold with the best F1 over the test set)")
    heatmap_vmin: float | None = option(None, "lower end of the fixed per-class heat-map colour scale (default: "
                                              "min over the good test images' maps)")
    heatmap_vmax: float | None = option(None, "upper end of the fixed per-class heat-map colour scale (default: "
                                              "max over the good test images' maps)")

    def validated(self) -> EvalOptions:
        require(0.0 < self.aupro_fpr <= 1.0, f"aupro_fpr must be in (0, 1], got {self.aupro_fpr}")
        require(self.n_qualitative >= 0, f"n_qualitative must be >= 0, got {self.n_qualitative}")
        require(self.eval_max_pixels >= 0, f"eval_max_pixels must be >= 0, got {self.eval_max_pixels}")
        return self
