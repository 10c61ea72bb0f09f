"""The figures of benchmarks.bench_reference_detail on images whose answer is known: a render equal to its
photograph keeps all its detail, a blurred one less the more it is blurred; a warp shifted by (2, 1) px reads
about 2.2 px, an aligned one 0."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmarks.bench_reference_detail import detail_figures, grey, patch_shifts


def _texture() -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.normal(size=(96, 128, 3)), (0.7, 0.7, 0))
    return np.clip(0.5 + 0.2 * noise, 0, 1).astype(np.float32)


def test_the_detail_ratio_is_one_for_the_photograph_and_falls_with_blur():
    photo = _texture()
    assert detail_figures(photo, photo)[1] == pytest.approx(1.0)
    ratios = [detail_figures(photo, ndimage.gaussian_filter(photo, (s, s, 0)))[1] for s in (0.5, 1.0, 2.0)]
    assert ratios == pytest.approx([0.83, 0.46, 0.14], abs=0.05)
    photo_psnr, blurred_psnr = detail_figures(photo, photo * 0.9)[0], detail_figures(photo, photo * 0.5)[0]
    assert photo_psnr > blurred_psnr


def test_patch_shifts_read_a_shifted_warp_and_only_where_it_sees():
    image = grey(_texture())
    seen = np.ones(image.shape, bool)
    assert np.median(patch_shifts(image, image, seen)) < 0.05
    shifted = np.roll(image, (2, 1), (0, 1))
    assert 1.5 < np.median(patch_shifts(image, shifted, seen)) < 2.5
    assert patch_shifts(image, shifted, np.zeros(image.shape, bool)) == []
