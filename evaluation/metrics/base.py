"""What every metric shares: the good label (mad.layout.GOOD), the metric error, the ROC curve, the area
under a curve, and the input checks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import PadError
from mad.layout import GOOD as GOOD  # the one definition of the good folder's name, re-exported for the metrics


class EvaluationError(PadError, ValueError):
    """The test set cannot be evaluated as asked (e.g. only one label present)."""


@dataclass
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    n_pos: int
    n_neg: int

    def best_f1(self) -> tuple[float, float]:
        """(threshold, F1) maximising F1 = 2TP / (2TP + FP + FN) along the curve.

        Exact even on a curve thinned with drop_intermediate: F1 is linear-fractional along a straight
        ROC segment, so its maximum lies on a kept vertex.
        """
        tp = self.tpr * self.n_pos
        fp = self.fpr * self.n_neg
        f1 = np.divide(2 * tp, tp + fp + self.n_pos, out=np.zeros_like(tp), where=(tp + fp + self.n_pos) > 0)
        f1 = np.where(np.isfinite(self.thresholds), f1, -1.0)
        i = int(np.argmax(f1))
        return float(self.thresholds[i]), float(f1[i])


def area_under_curve(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """Trapezoidal area under (x, y) for x in [x[0], x_max]; y at x_max is linearly interpolated.

    `x` must be non-decreasing (as MVTec AD's `trapezoid`).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = int(np.searchsorted(x, x_max, side="right"))  # = bisect.bisect
            if 0 < ins < len(x):
                y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
                correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) + correction)


def require_both(labels: np.ndarray, what: str, unit: str) -> None:
    n_pos = int(labels.sum())
    if n_pos == 0:
        if unit == "images":
            raise EvaluationError(f"test set has only good images: {what} needs both good and defective images")
        raise EvaluationError(f"ground-truth masks have no defect pixels: {what} needs both normal and "
                              "defective pixels")
    if n_pos == labels.size:
        if unit == "images":
            raise EvaluationError(f"test set has only defective images: {what} needs both good and "
                                  "defective images")
        raise EvaluationError(f"every pixel is marked defective in the ground truth: {what} needs both "
                              "normal and defective pixels")


def require_finite(scores: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(scores)):
        raise EvaluationError(f"{what} contain NaN or infinite values")
