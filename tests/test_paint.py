"""Defects painted on photographs (mad.paint): the object found on a plain background, each painter's mask is
exactly what it changed and lies where its defect belongs, the same seed paints the same, bad input is refused."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from common.errors import DataError
from mad.paint import PAINTED_TYPES, object_mask, paint_defect

H, W = 120, 160


def disc_photo(object_colour=(200, 180, 140), background=(20, 18, 15), seed: int = 0):
    """A textured disc (the object) on a darker plain background with a little noise: (image, true object)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((H, W), np.uint8)
    cv2.circle(truth, (W // 2, H // 2), 40, 1, -1)
    image = np.where(truth[..., None].astype(bool), np.array(object_colour), np.array(background)).astype(np.float64)
    image += rng.normal(0, 4, image.shape) + 25 * np.sin(np.arange(W) / 3.0)[None, :, None] * truth[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), truth.astype(bool)


@pytest.mark.parametrize("colours", [((200, 180, 140), (20, 18, 15)), ((30, 30, 30), (230, 230, 225))])
def test_the_object_is_found_on_a_plain_background(colours):
    image, truth = disc_photo(*colours)
    found = object_mask(image)
    assert (found & truth).sum() / (found | truth).sum() > 0.95


@pytest.mark.parametrize("defect", PAINTED_TYPES)
def test_each_painter_changes_exactly_its_mask_where_its_defect_belongs(defect):
    image, truth = disc_photo()
    painted, mask = paint_defect(image, truth, defect, np.random.default_rng(1))
    changed = (np.abs(painted.astype(int) - image.astype(int)) > 3).any(-1)
    assert np.array_equal(mask, changed) and mask.sum() >= 20
    inside = (mask & truth).sum() / mask.sum()
    if defect == "Stains":                     # a discolouration of the surface: on the object, darker there
        assert inside == 1.0 and painted[mask].mean() < image[mask].mean()
    elif defect == "Missing":                  # a bite out of the object: its pixels now look like the background
        assert inside == 1.0 and painted[mask].mean() < 80 < image[mask].mean()
        assert cv2.connectedComponents(mask.astype(np.uint8))[0] - 1 == 1
    else:                                      # burrs stand out of the outline (rooted just inside it)
        assert inside < 0.75 and (mask & ~truth).sum() >= 10


def test_the_same_seed_paints_the_same_and_another_seed_elsewhere():
    image, truth = disc_photo()
    first = paint_defect(image, truth, "Stains", np.random.default_rng(5))
    again = paint_defect(image, truth, "Stains", np.random.default_rng(5))
    other = paint_defect(image, truth, "Stains", np.random.default_rng(6))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_bad_input_is_refused():
    image, truth = disc_photo()
    with pytest.raises(DataError, match="no painter for defect type 'Scratch'"):
        paint_defect(image, truth, "Scratch", np.random.default_rng(0))
    tiny = np.zeros_like(truth)
    tiny[:5, :5] = True
    with pytest.raises(DataError, match="too small"):
        paint_defect(image, tiny, "Stains", np.random.default_rng(0))


def test_a_capture_becomes_a_class_in_the_mad_layout(tmp_path):
    """mad.capture: every test_every-th photograph held out, the rest train/good (downscaled); each held-out one is
    a good test image and a painted one per defect type whose mask is exactly where it differs from the good
    one; the reader accepts the class; the same seed writes the same bytes."""
    from mad.capture import build_capture_class
    from mad.loader import load_test_set

    (tmp_path / "cap" / "images").mkdir(parents=True)
    for i in range(6):
        image, _ = disc_photo(seed=i)
        big = cv2.resize(image, (2 * W, 2 * H), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(tmp_path / "cap" / "images" / f"{i + 1:02d}.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    record = build_capture_class(tmp_path / "cap", tmp_path / "real" / "toy", size=W, test_every=3, seed=0)
    root = tmp_path / "real" / "toy"
    assert sorted(record["train"].values()) == ["01.jpg", "03.jpg", "04.jpg", "06.jpg"]
    assert sorted(set(record["test"].values())) == ["02.jpg", "05.jpg"]
    assert cv2.imread(str(root / "train" / "good" / "0.png")).shape == (H, W, 3)
    samples = load_test_set(root, downscale=1, white_bkgd=False, allow_empty_masks=False)
    assert sorted({s.defect_type for s in samples}) == ["Burrs", "Missing", "Stains", "good"] and len(samples) == 8
    good = {s.name.split("/")[1]: s.image for s in samples if s.defect_type == "good"}
    for s in samples:
        if s.defect_type != "good":
            differs = (np.abs(s.image - good[s.name.split("/")[1]]) > 3.5 / 255).any(-1)
            assert np.array_equal(differs, s.mask > 0)
    build_capture_class(tmp_path / "cap", tmp_path / "again" / "toy", size=W, test_every=3, seed=0)
    for path in sorted(root.rglob("*.png")):
        assert path.read_bytes() == (tmp_path / "again" / "toy" / path.relative_to(root)).read_bytes()
    with pytest.raises(DataError, match="images/ folder"):
        build_capture_class(tmp_path / "nothing", tmp_path / "x", size=W)
