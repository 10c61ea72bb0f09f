"""Evaluation metrics of the PAD benchmark: pixel / image AUROC, per-defect breakdown, pixel AUPRO.

Conventions (as in MVTec AD and anomalib):

* pixel AUROC: every pixel of every test image is one sample (label = GT mask, score = map value);
* image AUROC: one sample per test image (good = 0, any defect = 1);
* per-defect: each defect type against the good images only (image AUROC on those images; pixel
  AUROC / AUPRO over all pixels of those images);
* pixel AUPRO (MVTec AD's exact-curve implementation): GT masks are split into connected
  components (8-connectivity); at every threshold the per-region overlap (PRO) is the mean over
  all regions of the fraction of the region's pixels above the threshold, and the FPR is the
  fraction of all pixels outside any GT region (in all images) above the threshold. The PRO-vs-FPR
  curve is integrated up to `fpr_limit` (the end point linearly interpolated) and divided by the
  limit, so a perfect map scores 1.

Image AUROC uses scikit-learn. The pixel metrics share ONE descending sort of all pixels
(`PixelScores`): the ROC is built from it exactly as sklearn's roc_curve does (one point per
distinct score, collinear points dropped), so pixel AUROC equals sklearn's roc_auc_score (the tests
check this) at a fraction of the time and memory on millions of pixels, and the per-defect splits
reuse the same order.

Scores are used as they are: no normalisation across the test set.
Inputs are sequences of per-image 2-D arrays (they may differ in size) or stacked [N,H,W] arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from common.errors import PadError

GOOD = "good"


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


# ---------------------------------------------------------------------------------------------
# image level

def image_roc_curve(labels: Sequence[int], scores: Sequence[float]) -> RocCurve:
    from sklearn.metrics import auc, roc_curve

    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    _require_both(labels, "image AUROC", unit="images")
    _require_finite(scores, "image scores")
    fpr, tpr, thr = roc_curve(labels, scores)
    return RocCurve(fpr, tpr, thr, float(auc(fpr, tpr)), int(labels.sum()), int((~labels).sum()))


def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Image-level AUROC (good = 0, defect = 1)."""
    return image_roc_curve(labels, scores).auc


# ---------------------------------------------------------------------------------------------
# pixel level: one descending sort of all pixels serves the ROC, the PRO curve and every subset

def flatten_pixels(masks, maps, max_pixels: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All pixels of all images as (labels bool [P], scores [P]), subsampled like PixelScores."""
    pixels = PixelScores.build(masks, maps, max_pixels, seed, sort=False)
    return pixels.labels, pixels.scores


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask with 8-connectivity: (labels int32 [H,W], count)."""
    from scipy import ndimage

    labeled, count = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=int))
    return labeled.astype(np.int32, copy=False), int(count)


@dataclass
class PixelScores:
    """All (optionally subsampled) pixels of a test set, sorted by descending score.

    Per pixel: score, GT label, image index and its region weight 1/|region| (0 outside GT;
    regions are 8-connected components of each image's mask). Subsets of images keep the order,
    so one sort serves the whole class and every per-defect split.

    When `max_pixels` > 0 and the test set has more pixels, a deterministic (seeded) uniform random
    subset of about `max_pixels` pixels is used by all pixel metrics; region sizes are then counted
    over the kept pixels (regions with no kept pixel are dropped).
    """

    scores: np.ndarray          # [P] float, descending when sorted
    labels: np.ndarray          # [P] bool
    image: np.ndarray           # [P] int32 image index
    region_weight: np.ndarray   # [P] float64, 1/|region| inside GT, 0 outside
    regions_per_image: np.ndarray  # [N] int64

    @classmethod
    def build(cls, masks, maps, max_pixels: int = 0, seed: int = 0, sort: bool = True) -> "PixelScores":
        masks, maps = _as_lists(masks, maps)
        total = sum(m.size for m in maps)
        keep_fraction = 1.0 if max_pixels <= 0 or total <= max_pixels else max_pixels / total
        rng = np.random.default_rng(seed)
        scores, labels, image, weights, counts = [], [], [], [], []
        for i, (mask, amap) in enumerate(zip(masks, maps)):
            regions, _ = label_regions(mask)
            regions = regions.ravel()
            values = amap.ravel()
            if keep_fraction < 1.0:
                keep = rng.random(values.size) < keep_fraction
                regions, values = regions[keep], values[keep]
            sizes = np.bincount(regions, minlength=1).astype(np.float64)
            inverse = np.divide(1.0, sizes, out=np.zeros_like(sizes), where=sizes > 0)
            inverse[0] = 0.0
            scores.append(values)
            labels.append(regions > 0)
            image.append(np.full(values.size, i, dtype=np.int32))
            weights.append(inverse[regions])
            counts.append(int(np.count_nonzero(sizes[1:])))
        pixels = cls(np.concatenate(scores), np.concatenate(labels), np.concatenate(image),
                     np.concatenate(weights), np.asarray(counts, dtype=np.int64))
        _require_finite(pixels.scores, "score maps")
        if sort:
            order = np.argsort(-pixels.scores, kind="quicksort")  # ties are resolved per group below
            pixels = cls(pixels.scores[order], pixels.labels[order], pixels.image[order],
                         pixels.region_weight[order], pixels.regions_per_image)
        return pixels

    def subset(self, images: Sequence[int]) -> "PixelScores":
        """The pixels of the given images, still sorted."""
        chosen = np.zeros(len(self.regions_per_image), dtype=bool)
        chosen[np.asarray(images, dtype=np.int64)] = True
        keep = chosen[self.image]
        counts = np.where(chosen, self.regions_per_image, 0)
        return PixelScores(self.scores[keep], self.labels[keep], self.image[keep], self.region_weight[keep], counts)

    def _tie_ends(self) -> np.ndarray:
        """Index of the last pixel of each group of equal scores (one curve point per threshold)."""
        return np.flatnonzero(np.append(self.scores[1:] != self.scores[:-1], True))

    def roc(self, drop_intermediate: bool = True) -> RocCurve:
        """Exact ROC (as sklearn.metrics.roc_curve) from the sorted pixels; AUC by trapezoid,
        i.e. the Mann-Whitney statistic with ties counting one half."""
        _require_both(self.labels, "pixel AUROC", unit="pixels")
        ends = self._tie_ends()
        tps = np.cumsum(self.labels, dtype=np.int64)[ends]
        fps = (ends + 1) - tps
        thresholds = self.scores[ends].astype(np.float64)
        if drop_intermediate and len(tps) > 2:  # sklearn's rule: drop collinear points
            optimal = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
            tps, fps, thresholds = tps[optimal], fps[optimal], thresholds[optimal]
        n_pos, n_neg = int(self.labels.sum()), int(self.labels.size - self.labels.sum())
        tpr = np.r_[0.0, tps / n_pos]
        fpr = np.r_[0.0, fps / n_neg]
        thresholds = np.r_[np.inf, thresholds]
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
        return RocCurve(fpr, tpr, thresholds, auc, n_pos, n_neg)

    def auroc(self) -> float:
        return self.roc(drop_intermediate=True).auc

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """The exact PRO curve (fpr, pro), both starting at 0, one point per distinct score.

        As MVTec AD's reference `compute_pro`: sweeping the threshold down, each pixel outside GT
        adds 1/num_ok_pixels to the FPR and each pixel of region r adds 1/(|r| * num_regions) to the
        PRO; the last point of each group of tied scores is kept.
        """
        num_regions = int(self.regions_per_image.sum())
        num_ok = int(self.labels.size - self.labels.sum())
        if num_regions == 0:
            raise EvaluationError("ground-truth masks contain no defect region: pixel AUPRO needs "
                                  "at least one defective pixel")
        if num_ok == 0:
            raise EvaluationError("every pixel is marked defective in the ground truth: pixel AUPRO needs "
                                  "normal pixels too")
        ends = self._tie_ends()
        fpr = np.cumsum(~self.labels, dtype=np.int64)[ends] / num_ok
        pro = np.cumsum(self.region_weight, dtype=np.float64)[ends] / num_regions
        return np.r_[0.0, np.clip(fpr, 0.0, 1.0)], np.r_[0.0, np.clip(pro, 0.0, 1.0)]

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """Normalised area under the PRO curve for FPR in [0, fpr_limit], in [0, 1]."""
        if not 0.0 < fpr_limit <= 1.0:
            raise EvaluationError(f"AUPRO FPR limit must be in (0, 1], got {fpr_limit}")
        fpr, pro = self.pro_curve()
        return area_under_curve(fpr, pro, x_max=fpr_limit) / fpr_limit


def pixel_roc_curve(masks, maps, max_pixels: int = 0, seed: int = 0) -> RocCurve:
    """Pixel ROC over all pixels of all images (collinear points dropped, as sklearn's default)."""
    return PixelScores.build(masks, maps, max_pixels, seed).roc()


def pixel_auroc(masks, maps, max_pixels: int = 0, seed: int = 0) -> float:
    """Pixel AUROC over all pixels of all test images (equals sklearn's roc_auc_score)."""
    return PixelScores.build(masks, maps, max_pixels, seed).auroc()


def pro_curve(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve over all pixels of all images (see PixelScores.pro_curve)."""
    return PixelScores.build(masks, maps).pro_curve()


def pixel_aupro(masks, maps, fpr_limit: float = 0.3, max_pixels: int = 0, seed: int = 0) -> float:
    """Normalised area under the PRO curve for FPR in [0, fpr_limit], in [0, 1]."""
    if not 0.0 < fpr_limit <= 1.0:
        raise EvaluationError(f"AUPRO FPR limit must be in (0, 1], got {fpr_limit}")
    return PixelScores.build(masks, maps, max_pixels, seed).aupro(fpr_limit)


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


# ---------------------------------------------------------------------------------------------
# per defect type and everything at once

def per_defect_metrics(defect_types: Sequence[str], scores: Sequence[float], masks, maps, *,
                       fpr_limit: float = 0.3, max_pixels: int = 0, seed: int = 0,
                       pixels: PixelScores | None = None) -> dict[str, dict]:
    """Each defect type against the good images: {type: {n_images, image_auroc, pixel_auroc, pixel_aupro}}.

    Pixel metrics use all pixels of that type's images plus all pixels of the good images. A value
    that is undefined for a type (e.g. its masks are all empty) is None. `pixels` (the sorted pixels
    of the same images, from PixelScores.build) avoids sorting again.
    """
    defect_types = list(defect_types)
    scores = np.asarray(scores, dtype=np.float64)
    if pixels is None:
        pixels = PixelScores.build(masks, maps, max_pixels, seed)
    if not (len(defect_types) == len(scores) == len(pixels.regions_per_image)):
        raise ValueError(f"{len(defect_types)} defect types, {len(scores)} scores, "
                         f"{len(pixels.regions_per_image)} maps")
    good = [i for i, t in enumerate(defect_types) if t == GOOD]
    if not good:
        raise EvaluationError("test set has no good images: the per-defect breakdown compares each "
                              "defect type with the good images")
    out: dict[str, dict] = {}
    for dtype in sorted({t for t in defect_types if t != GOOD}):
        idx = good + [i for i, t in enumerate(defect_types) if t == dtype]
        labels = np.array([defect_types[i] != GOOD for i in idx])
        entry = {"n_images": int(labels.sum()), "image_auroc": image_auroc(labels, scores[idx])}
        sub = pixels.subset(idx)
        try:
            entry["pixel_auroc"] = sub.auroc()
            entry["pixel_aupro"] = sub.aupro(fpr_limit)
        except EvaluationError:
            entry["pixel_auroc"] = entry["pixel_aupro"] = None
        out[dtype] = entry
    return out


def evaluate(defect_types: Sequence[str], scores: Sequence[float], masks, maps, *,
             fpr_limit: float = 0.3, max_pixels: int = 0, seed: int = 0) -> dict:
    """All metrics of one class. Labels follow the defect types (good = 0, anything else = 1).

    Returns a JSON-ready dict: image_auroc, pixel_auroc, pixel_aupro, per_defect, n_images, n_good,
    n_defective, pixel_threshold (best pixel F1 threshold), pixel_f1, and the curves under "_curves"
    (RocCurve objects for plotting; drop that key before writing JSON).
    """
    labels = np.array([t != GOOD for t in defect_types])
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} defect types but {len(scores)} scores")
    image_curve = image_roc_curve(labels, scores)
    pixels = PixelScores.build(masks, maps, max_pixels, seed)
    pixel_curve = pixels.roc()
    threshold, f1 = pixel_curve.best_f1()
    return {
        "pixel_auroc": pixel_curve.auc,
        "image_auroc": image_curve.auc,
        "pixel_aupro": pixels.aupro(fpr_limit),
        "aupro_fpr_limit": fpr_limit,
        "per_defect": per_defect_metrics(defect_types, scores, None, None, fpr_limit=fpr_limit, pixels=pixels),
        "n_images": int(labels.size),
        "n_good": int((~labels).sum()),
        "n_defective": int(labels.sum()),
        "pixel_threshold": threshold,
        "pixel_f1": f1,
        "_curves": {"pixel": pixel_curve, "image": image_curve},
    }


# ---------------------------------------------------------------------------------------------
# helpers

def _as_lists(masks, maps) -> tuple[list[np.ndarray], list[np.ndarray]]:
    masks = [np.asarray(m).astype(bool, copy=False) for m in masks]
    maps = [np.asarray(m) for m in maps]
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} maps")
    if not masks:
        raise EvaluationError("no test images to evaluate")
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        if mask.shape != amap.shape or amap.ndim != 2:
            raise ValueError(f"image {i}: mask shape {mask.shape} and map shape {amap.shape} differ (expected [H,W])")
    return masks, maps


def _require_both(labels: np.ndarray, what: str, unit: str) -> None:
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


def _require_finite(scores: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(scores)):
        raise EvaluationError(f"{what} contain NaN or infinite values")
