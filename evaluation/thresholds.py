"""A class's decision threshold and the normalised image score (issue "use a trained class").

Two sources, as anomalib offers them:
* without labels (`false_alarm_threshold`): the image scores of anomaly-free views at a target false-alarm rate.
  A handful of views cannot show a rate of a few per cent, so the threshold is the (1 - rate) quantile of a
  Gumbel distribution (an image score is the maximum of a pooled map, and maxima are Gumbel-like) fitted to their
  scores by their median and median absolute deviation: a few views that fail (a lost pose scores like a
  defect) move it little, where they would drag a mean-and-deviation fit far up. It reaches past the largest view
  score when the views are fewer than the rate needs;
* with labels (`f1_threshold`): the threshold of the best image F1, anomalib's adaptive threshold, placed halfway
  between the lowest score it calls defective and the highest below it.

The normalised score maps the threshold to 0.5 and the calibration scores' spread to 1 (anomalib's min-max
normalisation about the threshold), clipped to [0, 1]: a photo is defective when its raw score is above the
threshold, that is when its normalised score is above 0.5.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from evaluation.metrics.base import EvaluationError
from evaluation.metrics.image_auroc import image_roc_curve

EULER_GAMMA = 0.5772156649015329
GUMBEL_MEDIAN = 0.36651292058166435   # -ln(ln 2): the standard Gumbel's median
GUMBEL_MAD = 0.7670492513257081       # its median absolute deviation (F(m + d) - F(m - d) = 1/2, solved numerically)


@dataclass(frozen=True)
class Threshold:
    value: float           # raw image score above which a photo is defective
    spread: float          # raw-score span mapped onto [0, 1] by the normalised score (> 0)
    source: str            # where it comes from, in words (the report's header)
    n_scores: int          # how many scores it rests on
    rate: float | None = None   # the false-alarm rate asked (unlabelled source)
    few: bool = False      # fewer views than the rate needs (n * rate < 2): an extrapolation

    def normalised(self, raw):
        """0.5 at the threshold, clipped to [0, 1]; scalar or array."""
        return np.clip(0.5 + (np.asarray(raw, dtype=np.float64) - self.value) / self.spread, 0.0, 1.0)

    def defective(self, raw) -> np.ndarray | bool:
        return np.asarray(raw, dtype=np.float64) > self.value

    def record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> Threshold:
        return cls(**{k: record[k] for k in ("value", "spread", "source", "n_scores", "rate", "few")})


def gumbel_quantile(scores: Sequence[float], p: float, fit: str = "robust") -> float:
    """The p quantile of a Gumbel (maximum) distribution fitted to `scores`, m - b ln(-ln p). fit = "robust": by
    median and median absolute deviation (MAD), b = MAD / 0.76705, m = median - 0.36651 b; fit = "moments": by
    mean and standard deviation s, b = s sqrt(6) / pi, m = mean - 0.57722 b (Euler's gamma)."""
    x = np.asarray(scores, dtype=np.float64)
    if fit == "robust":
        median = float(np.median(x))
        scale = float(np.median(np.abs(x - median))) / GUMBEL_MAD
        location = median - GUMBEL_MEDIAN * scale
    elif fit == "moments":
        scale = float(x.std(ddof=1)) * math.sqrt(6.0) / math.pi
        location = float(x.mean()) - EULER_GAMMA * scale
    else:
        raise ValueError(f"fit must be 'robust' or 'moments', got {fit!r}")
    return location - scale * math.log(-math.log(p))


def _spread(scores: np.ndarray) -> float:
    span = float(scores.max() - scores.min())
    return span if span > 0 else max(abs(float(scores.max())), 1.0)


def false_alarm_threshold(good_scores: Sequence[float], rate: float, what: str = "anomaly-free views",
                          fit: str = "robust") -> Threshold:
    """The threshold at which about `rate` of anomaly-free images score above it (see the module docstring;
    `fit`: gumbel_quantile's); needs at least 2 finite scores and 0 < rate < 1."""
    x = np.asarray(good_scores, dtype=np.float64).ravel()
    if not 0.0 < rate < 1.0:
        raise EvaluationError(f"the false-alarm rate must be in (0, 1), got {rate}")
    if x.size < 2 or not np.isfinite(x).all():
        raise EvaluationError(f"a false-alarm threshold needs at least 2 finite scores of {what}, got {x.size}")
    value = gumbel_quantile(x, 1.0 - rate, fit)
    return Threshold(value=value, spread=_spread(x), n_scores=int(x.size), rate=float(rate),
                     few=bool(x.size * rate < 2.0),
                     source=f"{x.size} {what} at {rate:.0%} false alarms ({fit} Gumbel fit)")


def f1_threshold(labels: Sequence[int], scores: Sequence[float], what: str = "labelled validation images") \
        -> Threshold:
    """The best-F1 threshold of labelled scores (good = 0, defect = 1), halfway to the next lower score."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    threshold, _ = image_roc_curve(labels, x).best_f1()
    below = x[x < threshold]
    value = 0.5 * (threshold + float(below.max())) if below.size else threshold - 0.5 * _spread(x)
    return Threshold(value=value, spread=_spread(x), n_scores=int(x.size),
                     source=f"best F1 on {x.size} {what}")
