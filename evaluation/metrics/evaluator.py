"""Every metric of one class at once, and each defect type against the good images."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.metrics.base import GOOD, EvaluationError
from evaluation.metrics.image_auroc import image_auroc, image_roc_curve
from evaluation.metrics.pixel_scores import PixelScores


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
