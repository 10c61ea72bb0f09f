"""Pixel AUPRO: the normalised area under the per-region-overlap curve up to an FPR limit (MVTec AD)."""
from __future__ import annotations

import numpy as np

from evaluation.metrics.base import EvaluationError
from evaluation.metrics.pixel_scores import PixelScores


def pro_curve(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve over all pixels of all images (see PixelScores.pro_curve)."""
    return PixelScores.build(masks, maps).pro_curve()


def pixel_aupro(masks, maps, fpr_limit: float = 0.3, max_pixels: int = 0, seed: int = 0) -> float:
    """Normalised area under the PRO curve for FPR in [0, fpr_limit], in [0, 1]."""
    if not 0.0 < fpr_limit <= 1.0:
        raise EvaluationError(f"AUPRO FPR limit must be in (0, 1], got {fpr_limit}")
    return PixelScores.build(masks, maps, max_pixels, seed).aupro(fpr_limit)
