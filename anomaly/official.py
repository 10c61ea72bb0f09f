"""The test-set steps of the PAD authors' evaluation script (score_protocol = official), applied at
evaluation time over the saved raw maps, so that the per-image pipeline stays resumable:

* ground-truth masks resized like the images, torchvision Resize(224, NEAREST) on the PIL mask;
* every map min-max normalised with the minimum and maximum over ALL maps of the test set;
* the image score is the plain maximum of the normalised map.

The per-image part (224-px inputs, squared stage-1..4 + RGB differences, Gaussian sigma 4) is
anomaly.scorer (combine_terms).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Binary mask [H,W] brought to `size` (h, w) by PIL nearest-neighbour resizing, as the authors' script."""
    mask = np.asarray(mask)
    if tuple(mask.shape) == tuple(size):
        return mask.astype(bool)
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((int(size[1]), int(size[0])), Image.NEAREST)) > 127


def normalize_test_set(maps: Sequence[np.ndarray]) -> tuple[list[np.ndarray], tuple[float, float]]:
    """(maps min-max normalised over the whole test set, (min, max) used). A constant set maps to zeros."""
    low = float(min(float(np.min(m)) for m in maps))
    high = float(max(float(np.max(m)) for m in maps))
    span = high - low
    normalised = [((m - low) / span if span > 0 else np.zeros_like(m)).astype(np.float32) for m in maps]
    return normalised, (low, high)
