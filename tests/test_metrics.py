"""AUROC / AUPRO against values computed by hand on tiny fixtures."""
import numpy as np
import pytest

from common.errors import PadError
from evaluation.metrics import (
    EvaluationError,
    area_under_curve,
    evaluate,
    flatten_pixels,
    image_auroc,
    label_regions,
    per_defect_metrics,
    pixel_aupro,
    pixel_auroc,
    pixel_roc_curve,
    pro_curve,
)

# Two 2x2 images. Defect pixels (mask) carry scores {0.9, 0.4}; normal pixels {0.2, 0.1, 0.3, 0.5, 0.0, 0.6}.
MASKS_2x2 = [np.array([[1, 0], [1, 0]], bool), np.zeros((2, 2), bool)]
MAPS_2x2 = [np.array([[0.9, 0.2], [0.4, 0.1]]), np.array([[0.3, 0.5], [0.0, 0.6]])]


def test_pixel_auroc_by_hand():
    # AUROC = P(score_defect > score_normal) over the 2 x 6 pairs: 0.9 beats all 6, 0.4 beats
    # 0.2, 0.1, 0.3, 0.0 (4 of 6) -> 10 / 12.
    assert pixel_auroc(MASKS_2x2, MAPS_2x2) == pytest.approx(10 / 12)
    assert pixel_roc_curve(MASKS_2x2, MAPS_2x2).auc == pytest.approx(10 / 12)
    # stacked arrays work too
    assert pixel_auroc(np.stack(MASKS_2x2), np.stack(MAPS_2x2)) == pytest.approx(10 / 12)


def test_image_auroc_by_hand():
    # defects {0.4, 0.8} vs good {0.1, 0.5}: 0.4>0.1, 0.4<0.5, 0.8>both -> 3 / 4
    assert image_auroc([0, 0, 1, 1], [0.1, 0.5, 0.4, 0.8]) == pytest.approx(0.75)
    # a tie counts one half
    assert image_auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_one_label_sets_are_refused_clearly():
    with pytest.raises(EvaluationError, match="test set has only good images: image AUROC needs both "
                                              "good and defective images"):
        image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(EvaluationError, match="only defective images"):
        image_auroc([1, 1], [0.1, 0.2])
    with pytest.raises(EvaluationError, match="no defect pixels"):
        pixel_auroc([np.zeros((2, 2), bool)], [np.random.rand(2, 2)])
    with pytest.raises(EvaluationError, match="no defect region"):
        pixel_aupro([np.zeros((2, 2), bool)], [np.random.rand(2, 2)])
    err = EvaluationError("x")
    assert isinstance(err, PadError) and isinstance(err, ValueError)


def test_best_f1_threshold_by_hand():
    # defects {0.8, 0.7}, normals {0.75, 0.1, 0.2}; F1 = 2TP / (2TP + FP + FN):
    # t=0.8: 2/3, t=0.75: 2/4, t=0.7: 4/5 (best), t=0.2: 4/6, t=0.1: 4/7.
    masks = [np.array([[1, 1, 0, 0, 0]], bool)]
    maps = [np.array([[0.8, 0.7, 0.75, 0.1, 0.2]])]
    threshold, f1 = pixel_roc_curve(masks, maps).best_f1()
    assert threshold == pytest.approx(0.7) and f1 == pytest.approx(0.8)


# One 3x3 image with two GT regions: A = {(0,0)} (size 1) and B = {(2,1), (2,2)} (size 2);
# 6 normal pixels with scores 0.1, 0.2, 0.3, 0.4, 0.0, 0.5.
MASK_3x3 = np.array([[1, 0, 0],
                     [0, 0, 0],
                     [0, 1, 1]], bool)


def _map_3x3(b2: float) -> np.ndarray:
    return np.array([[0.9, 0.1, 0.2],
                     [0.3, 0.4, 0.0],
                     [0.5, 0.8, b2]])


def test_connected_components_use_8_connectivity():
    assert label_regions(MASK_3x3)[1] == 2
    diagonal = np.array([[1, 0], [0, 1]], bool)
    assert label_regions(diagonal)[1] == 1  # 4-connectivity would give 2


def test_aupro_by_hand_flat_end():
    # B's second pixel scores 0.35. Sweep down the thresholds:
    #   t=0.9 : A covered             PRO=(1+0)/2=0.5    FPR=0
    #   t=0.8 : half of B             PRO=(1+.5)/2=0.75  FPR=0
    #   t=0.5 : normal 0.5            PRO=0.75           FPR=1/6
    #   t=0.4 : normal 0.4            PRO=0.75           FPR=2/6
    #   t=0.35: rest of B             PRO=1              FPR=2/6
    # Up to FPR 0.3 the curve sits at 0.75 -> area 0.225 -> normalised 0.75.
    # Up to FPR 0.5: 1/3*0.75 + (0.5-1/3)*1 = 0.41667 -> normalised 0.83333.
    fpr, pro = pro_curve([MASK_3x3], [_map_3x3(0.35)])
    assert fpr[:4] == pytest.approx([0, 0, 0, 1 / 6]) and pro[:4] == pytest.approx([0, 0.5, 0.75, 0.75])
    assert pixel_aupro([MASK_3x3], [_map_3x3(0.35)], fpr_limit=0.3) == pytest.approx(0.75)
    assert pixel_aupro([MASK_3x3], [_map_3x3(0.35)], fpr_limit=0.5) == pytest.approx(0.5 / 0.6)


def test_aupro_by_hand_interpolated_end():
    # B's second pixel ties with the normal pixel 0.4: the curve goes diagonally from
    # (1/6, 0.75) to (2/6, 1). Limit 0.25: y(0.25) = 0.75 + 0.25 * (0.25-1/6)/(1/6) = 0.875;
    # area = 0.75 * 1/6 + (0.75 + 0.875)/2 * (0.25 - 1/6) = 0.125 + 0.0677083 = 0.1927083;
    # normalised: 0.1927083 / 0.25 = 0.7708333.
    assert pixel_aupro([MASK_3x3], [_map_3x3(0.4)], fpr_limit=0.25) == pytest.approx(0.7708333, abs=1e-6)


def test_aupro_counts_normal_pixels_of_all_images():
    # A good image whose 9 pixels all score above everything: the first threshold gives FPR 9/15 = 0.6
    # with PRO 0, so the curve is 0 on [0, 0.3] -> AUPRO 0.
    good_mask, good_map = np.zeros((3, 3), bool), np.full((3, 3), 0.95)
    assert pixel_aupro([MASK_3x3, good_mask], [_map_3x3(0.35), good_map]) == pytest.approx(0.0)
    # Scoring 0 there, the 15 normal pixels shrink the FPR steps: PRO 0.75 on [0, 2/15], 1 from FPR 2/15
    # (normals 0.5 and 0.4 pass before B's 0.35): area = 2/15*0.75 + (0.3-2/15)*1 = 0.26667 -> 0.88889.
    assert pixel_aupro([MASK_3x3, good_mask], [_map_3x3(0.35), np.zeros((3, 3))]) == pytest.approx(8 / 9)


def test_aupro_perfect_and_inverted_maps():
    rng = np.random.default_rng(0)
    masks = [np.zeros((16, 16), bool) for _ in range(3)]
    masks[0][2:6, 3:9] = True
    masks[1][10:14, 10:12] = True
    masks[1][0:2, 0:2] = True
    perfect = [m.astype(float) + 0.1 * rng.random(m.shape) * (~m) for m in masks]
    inverted = [1.0 - p for p in perfect]
    assert pixel_aupro(masks, perfect) == pytest.approx(1.0)
    assert pixel_auroc(masks, perfect) == pytest.approx(1.0)
    assert pixel_aupro(masks, inverted) < 0.05


def test_area_under_curve_interpolates_the_end_point():
    x, y = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0])
    assert area_under_curve(x, y) == pytest.approx(0.75)
    assert area_under_curve(x, y, x_max=0.25) == pytest.approx(0.5 * 0.25 * 0.5)


def test_per_defect_split():
    # good: scores 0.1, 0.5; Burrs: 0.4; Stains: 0.8.
    # Burrs vs good: 0.4 beats 0.1 only -> 0.5; Stains vs good: 1.0.
    types = ["good", "good", "Burrs", "Stains"]
    scores = [0.1, 0.5, 0.4, 0.8]
    masks = [np.zeros((2, 2), bool), np.zeros((2, 2), bool),
             np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [0, 1]], bool)]
    maps = [np.full((2, 2), 0.1), np.full((2, 2), 0.2),
            np.array([[0.15, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 0.9]])]
    out = per_defect_metrics(types, scores, masks, maps)
    assert list(out) == ["Burrs", "Stains"]
    assert out["Burrs"]["image_auroc"] == pytest.approx(0.5) and out["Burrs"]["n_images"] == 1
    assert out["Stains"]["image_auroc"] == pytest.approx(1.0)
    # Burrs pixels: defect 0.15 vs 11 normals (0.1 x4, 0.2 x4, 0 x3): beats 7 -> 7/11
    assert out["Burrs"]["pixel_auroc"] == pytest.approx(7 / 11)
    assert out["Stains"]["pixel_auroc"] == pytest.approx(1.0)
    assert out["Stains"]["pixel_aupro"] == pytest.approx(1.0)

    full = evaluate(types, scores, masks, maps)
    assert full["image_auroc"] == pytest.approx(0.75)
    assert full["n_images"] == 4 and full["n_good"] == 2 and full["n_defective"] == 2
    assert set(full["per_defect"]) == {"Burrs", "Stains"}


def test_subsampling_is_deterministic_and_bounded():
    rng = np.random.default_rng(1)
    masks = [rng.random((50, 50)) > 0.9 for _ in range(4)]
    maps = [rng.random((50, 50)) for _ in range(4)]
    a = flatten_pixels(masks, maps, max_pixels=2000, seed=0)
    b = flatten_pixels(masks, maps, max_pixels=2000, seed=0)
    assert np.array_equal(a[1], b[1]) and 1700 < a[1].size < 2300
    assert flatten_pixels(masks, maps, max_pixels=0)[1].size == 10000
    assert pixel_auroc(masks, maps, max_pixels=2000) == pytest.approx(pixel_auroc(masks, maps), abs=0.05)


def test_pixel_auroc_and_curve_equal_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(3)
    masks = [rng.random((20, 30)) > 0.8 for _ in range(3)]
    maps = [np.round(rng.random((20, 30)) + 0.3 * m, 1) for m in masks]  # heavy ties
    labels = np.concatenate([m.ravel() for m in masks])
    scores = np.concatenate([m.ravel() for m in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, thr = roc_curve(labels, scores)
    curve = pixel_roc_curve(masks, maps)
    assert np.allclose(curve.fpr, fpr) and np.allclose(curve.tpr, tpr) and np.allclose(curve.thresholds[1:], thr[1:])
