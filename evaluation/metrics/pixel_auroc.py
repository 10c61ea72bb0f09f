"""Pixel-level ROC and AUROC over all pixels of all test images (equal to scikit-learn's, ties included)."""
from __future__ import annotations

from evaluation.metrics.base import RocCurve
from evaluation.metrics.pixel_scores import PixelScores


def pixel_roc_curve(masks, maps, max_pixels: int = 0, seed: int = 0) -> RocCurve:
    """Pixel ROC over all pixels of all images (collinear points dropped, as sklearn's default)."""
    return PixelScores.build(masks, maps, max_pixels, seed).roc()


def pixel_auroc(masks, maps, max_pixels: int = 0, seed: int = 0) -> float:
    """Pixel AUROC over all pixels of all test images (equals sklearn's roc_auc_score)."""
    return PixelScores.build(masks, maps, max_pixels, seed).auroc()
