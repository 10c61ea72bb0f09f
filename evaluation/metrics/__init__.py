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
from evaluation.metrics.aupro import pixel_aupro, pro_curve
from evaluation.metrics.base import GOOD, EvaluationError, RocCurve, area_under_curve
from evaluation.metrics.evaluator import evaluate, per_defect_metrics
from evaluation.metrics.image_auroc import image_auroc, image_roc_curve
from evaluation.metrics.pixel_auroc import pixel_auroc, pixel_roc_curve
from evaluation.metrics.pixel_scores import PixelScores, flatten_pixels, label_regions

__all__ = ["GOOD", "EvaluationError", "PixelScores", "RocCurve", "area_under_curve", "evaluate", "flatten_pixels",
           "image_auroc", "image_roc_curve", "label_regions", "per_defect_metrics", "pixel_aupro", "pixel_auroc",
           "pixel_roc_curve", "pro_curve"]
