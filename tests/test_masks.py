"""The mask rule (mad.images.binarize_mask): two-level masks read exactly, grey levels thresholded halfway
with one warning naming the file, so noisy masks give the clean masks; a mask of another size stops the
pipeline before any work."""
from __future__ import annotations

import shutil
import warnings

import cv2
import numpy as np
import pytest

import anomaly_nerf_lego
from mad.images import binarize_mask, read_mask_file
from mad.loader import load_test_set
from tests.test_data import _write, make_class
from tests.test_reliability import PIPELINE_TINY, _main_fails, _paths

SQUARE = np.zeros((6, 8), bool)
SQUARE[1:3, 2:5] = True


@pytest.mark.parametrize("low, high", [(0, 1), (0, 255), (0, 100), (100, 200)])
def test_two_level_masks_are_read_exactly_without_a_note(low, high):
    mask, note = binarize_mask(np.where(SQUARE, high, low).astype(np.uint8))
    np.testing.assert_array_equal(mask, SQUARE)
    assert note is None


@pytest.mark.parametrize("value, expected", [(0, False), (255, True)])
def test_constant_masks_are_all_normal_or_all_defect(value, expected):
    mask, note = binarize_mask(np.full((4, 5), value, np.uint8))
    assert mask.dtype == bool and mask.shape == (4, 5) and np.all(mask == expected) and note is None


def test_grey_levels_fall_to_the_nearer_extreme_and_are_noted():
    values = np.array([[0, 3, 127, 128], [200, 255, 252, 1]], np.uint8)
    mask, note = binarize_mask(values)
    np.testing.assert_array_equal(mask, [[False, False, False, True], [True, True, True, False]])
    assert note == ("mask is not binary (8 grey levels from 0 to 255): thresholded at 127.5, "
                    "halfway between its lowest and highest value")


def test_colour_masks_take_the_max_channel_and_ignore_alpha(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[SQUARE, 0] = 255          # red defect
    rgba[..., 3] = 255 * ~SQUARE   # an alpha that would invert the mask if it were read
    mask, note = read_mask_file(_write(tmp_path / "m.png", rgba))
    np.testing.assert_array_equal(mask, SQUARE)
    assert note is None


def _add_low_noise(path, rng) -> None:
    """Levels 1..3 away from the clean value on a third of the pixels (up on 0, down on 255)."""
    clean = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(clean)) <= {0, 255}
    noise = rng.integers(1, 4, clean.shape) * (rng.random(clean.shape) < 1 / 3)
    noisy = np.where(clean > 0, clean.astype(int) - noise, noise).astype(np.uint8)
    assert cv2.imwrite(str(path), noisy)


def test_noisy_masks_of_a_generated_class_read_as_the_clean_ones_with_one_warning(tiny_class_dir, tmp_path):
    cdir = tmp_path / "tiny"
    shutil.copytree(tiny_class_dir, cdir)
    rng = np.random.default_rng(0)
    mask_files = sorted((cdir / "ground_truth").glob("*/*_mask.png"))
    for path in mask_files:
        _add_low_noise(path, rng)
    clean = load_test_set(tiny_class_dir)
    with pytest.warns(UserWarning) as caught:
        noisy = load_test_set(cdir)
    assert len(caught) == 1
    first = cdir / "ground_truth" / "Burrs" / "0_mask.png"   # the first defect sample in the reader's order
    message = str(caught[0].message)
    assert message.startswith(f"{first}: mask is not binary (")
    assert "thresholded at 127.5" in message and f"(and {len(mask_files) - 1} more masks like it)" in message
    assert [s.name for s in noisy] == [s.name for s in clean]
    for a, b in zip(clean, noisy, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
    raw = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    assert np.any((raw > 0) != next(s for s in clean if s.name == "Burrs/0").mask)  # "> 0" would have misread it


def test_a_binary_class_loads_without_a_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samples = load_test_set(make_class(tmp_path, mask_max=1))
    assert all((s.mask == SQUARE).all() for s in samples if s.label == 1)


def test_a_mask_of_another_size_stops_the_pipeline_before_any_work(tiny_class_dir, tmp_path, capsys):
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_class_dir, data_root / "tiny")
    mask = data_root / "tiny" / "ground_truth" / "Stains" / "1_mask.png"
    assert cv2.imwrite(str(mask), np.full((16, 32), 255, np.uint8))
    lines = _main_fails(anomaly_nerf_lego.main, [*_paths(tmp_path, data_root), "--class_name", "tiny",
                                                 *PIPELINE_TINY], capsys)
    image = data_root / "tiny" / "test" / "Stains" / "1.png"
    assert lines == [f"error: {mask}: mask size 32x16 differs from its image {image} (32x32)"]
    assert not (tmp_path / "ckpts").exists()                                    # no training started
    assert not [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]   # no run.json, no map
