"""The object's pixels in a photograph taken against a plain backdrop: where the defect painters may paint
(mad.paint) and where structure-from-motion looks for features (mad.sfm.colmap, `sfm_feature_mask = object`)."""
from __future__ import annotations

import cv2
import numpy as np


def object_mask(image: np.ndarray, blur: float = 3.0) -> np.ndarray:
    """[H, W] bool: the object, for a capture whose object stands out from a darker or lighter background: Otsu's
    threshold on the blurred grey image, the side of it that holds the image centre, its largest connected
    component, holes filled. A capture where this fails brings its own masks."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (0, 0), blur)
    _, bright = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    h, w = grey.shape
    centre = bright[h // 2 - h // 8:h // 2 + h // 8, w // 2 - w // 8:w // 2 + w // 8]
    side = bright if centre.mean() >= 127.5 else 255 - bright
    count, labels, stats, _ = cv2.connectedComponentsWithStats(side.astype(np.uint8), connectivity=8)
    if count < 2:
        return np.zeros((h, w), dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return fill_holes((labels == largest).astype(np.uint8), [(0, 0)])


def fill_holes(mask: np.ndarray, outside: list[tuple[int, int]]) -> np.ndarray:
    """[H, W] bool: the uint8 0/1 `mask` with its holes filled, a hole being any background that the `outside`
    pixels (x, y) do not reach through background (flood fill; a seed on the mask reaches nothing)."""
    height, width = mask.shape
    filled, flooded = mask.copy(), np.zeros((height + 2, width + 2), np.uint8)
    for seed in outside:
        cv2.floodFill(filled, flooded, seed, 1)
    return (mask | (1 - filled)).astype(bool)


def brighter_than_backdrop(image: np.ndarray, fraction: float = 0.6, blur: float = 1.0) -> np.ndarray:
    """[H, W] bool: the pixels brighter than `fraction` of Otsu's threshold of the blurred grey image, with no
    component or hole logic: a mask generous to an object's darker parts (and to whatever else is bright), for
    a vote between views (mad.hull) that carves the rest away."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (0, 0), blur)
    threshold, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return grey > fraction * threshold
