"""All pixels of a test set in ONE descending sort: the pixel ROC, the PRO curve and every per-defect
subset are read from it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.metrics.base import EvaluationError, RocCurve, area_under_curve, require_both, require_finite


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
    def build(cls, masks, maps, max_pixels: int = 0, seed: int = 0, sort: bool = True) -> PixelScores:
        masks, maps = _as_lists(masks, maps)
        total = sum(m.size for m in maps)
        keep_fraction = 1.0 if max_pixels <= 0 or total <= max_pixels else max_pixels / total
        rng = np.random.default_rng(seed)
        scores, labels, image, weights, counts = [], [], [], [], []
        for i, (mask, amap) in enumerate(zip(masks, maps, strict=True)):
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
        require_finite(pixels.scores, "score maps")
        if sort:
            order = np.argsort(-pixels.scores, kind="quicksort")  # ties are resolved per group below
            pixels = cls(pixels.scores[order], pixels.labels[order], pixels.image[order],
                         pixels.region_weight[order], pixels.regions_per_image)
        return pixels

    def subset(self, images: Sequence[int]) -> PixelScores:
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
        require_both(self.labels, "pixel AUROC", unit="pixels")
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


def _as_lists(masks, maps) -> tuple[list[np.ndarray], list[np.ndarray]]:
    masks = [np.asarray(m).astype(bool, copy=False) for m in masks]
    maps = [np.asarray(m) for m in maps]
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} maps")
    if not masks:
        raise EvaluationError("no test images to evaluate")
    for i, (mask, amap) in enumerate(zip(masks, maps, strict=True)):
        if mask.shape != amap.shape or amap.ndim != 2:
            raise ValueError(f"image {i}: mask shape {mask.shape} and map shape {amap.shape} differ (expected [H,W])")
    return masks, maps
