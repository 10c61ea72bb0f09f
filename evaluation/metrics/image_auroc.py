"""Image-level ROC and AUROC (good = 0, any defect = 1), by scikit-learn."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.metrics.base import RocCurve, require_both, require_finite


def image_roc_curve(labels: Sequence[int], scores: Sequence[float]) -> RocCurve:
    from sklearn.metrics import auc, roc_curve

    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    require_both(labels, "image AUROC", unit="images")
    require_finite(scores, "image scores")
    fpr, tpr, thr = roc_curve(labels, scores)
    return RocCurve(fpr, tpr, thr, float(auc(fpr, tpr)), int(labels.sum()), int((~labels).sum()))


def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Image-level AUROC (good = 0, defect = 1)."""
    return image_roc_curve(labels, scores).auc
