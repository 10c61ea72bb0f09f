"""Defects painted on photographs, for test sets of real captures (whose objects have no defects of their own).

The generator places its defects in 3-D (mad.synth.defects); a photograph has no scene, so these painters work
in the image, on the object's pixels (mad.foreground.object_mask), with the same three types and the same
promise: the mask is exactly the pixels the painting changed.

- Stains: a soft irregular blot that darkens and tints the surface (a discolouration), kept inside the object.
- Burrs: a few thin slivers standing out of the object's outline, in the object's own colour there, shaded.
- Missing: a bite out of the outline: the object's pixels in a disc on its edge are replaced by the background,
  filled in from around it (OpenCV inpainting).

Pure functions of an RGB uint8 image [H, W, 3], the object mask [H, W] bool and a numpy Generator.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from common.errors import DataError

PAINTED_TYPES = ("Burrs", "Missing", "Stains")
REMOVES_MATERIAL = frozenset({"Missing"})   # its painted pixels show what is behind the object


def _changed(before: np.ndarray, after: np.ndarray, threshold: int = 3) -> np.ndarray:
    """[H, W] bool: the pixels whose colour moved by more than `threshold` grey levels in some channel."""
    return (np.abs(after.astype(np.int16) - before.astype(np.int16)) > threshold).any(-1)


def _inner_point(obj: np.ndarray, rng: np.random.Generator, margin: int) -> tuple[int, int]:
    """(x, y) of a random object pixel at least `margin` pixels inside the outline."""
    inner = cv2.erode(obj.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)).astype(bool)
    ys, xs = np.nonzero(inner if inner.any() else obj)
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


def _edge_point(obj: np.ndarray, rng: np.random.Generator) -> tuple[tuple[int, int], np.ndarray]:
    """((x, y) of a random pixel on the object's outline, its outward unit normal (x, y))."""
    mask = obj.astype(np.uint8)
    edge = mask - cv2.erode(mask, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(edge)
    i = int(rng.integers(len(xs)))
    x, y = int(xs[i]), int(ys[i])
    smooth = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 4.0)
    gy, gx = np.gradient(smooth)
    normal = -np.array([gx[y, x], gy[y, x]], dtype=np.float64)      # the mask falls off outwards
    norm = float(np.linalg.norm(normal))
    return (x, y), (normal / norm if norm > 1e-9 else np.array([1.0, 0.0]))


def paint_stain(image: np.ndarray, obj: np.ndarray, rng: np.random.Generator,
                radius_frac: tuple[float, float] = (0.03, 0.06)) -> np.ndarray:
    """A soft irregular blot on the object, darkening it towards a brownish tint; returns the painted image."""
    h, w = obj.shape
    size = math.sqrt(float(obj.sum()))
    radius = max(2.0, float(rng.uniform(*radius_frac)) * size * 2.0)
    x, y = _inner_point(obj, rng, int(radius))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = np.arctan2(yy - y, xx - x)
    wobble = 1.0 + sum(0.15 * rng.uniform(0.5, 1.0) * np.cos(k * angle + rng.uniform(0, 2 * math.pi))
                       for k in (2, 3, 5))
    distance = np.hypot(xx - x, yy - y) / (radius * wobble)
    alpha = np.clip(1.5 - 1.5 * distance, 0.0, 1.0) * obj * float(rng.uniform(0.45, 0.7))
    tint = np.array([0.55, 0.42, 0.30]) * float(rng.uniform(0.6, 0.9))
    out = image.astype(np.float64) * (1.0 - alpha[..., None] * (1.0 - tint))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def paint_burrs(image: np.ndarray, obj: np.ndarray, rng: np.random.Generator,
                length_frac: tuple[float, float] = (0.03, 0.07)) -> np.ndarray:
    """Two to four thin slivers standing out of the outline near one point, in the object's colour there
    (shaded darker); returns the painted image."""
    size = math.sqrt(float(obj.sum()))
    (x, y), normal = _edge_point(obj, rng)
    ys, xs = np.nonzero(obj)
    near = np.hypot(xs - x, ys - y) < 0.05 * size + 3
    colour = np.median(image[ys[near], xs[near]], axis=0)
    out = image.copy()
    tangent = np.array([-normal[1], normal[0]])
    for _ in range(int(rng.integers(2, 5))):
        base = np.array([x, y], np.float64) + tangent * rng.uniform(-0.03, 0.03) * size - normal * 2.0
        length = rng.uniform(*length_frac) * size
        width = max(1.5, rng.uniform(0.006, 0.012) * size)
        direction = normal + tangent * rng.uniform(-0.4, 0.4)
        direction /= np.linalg.norm(direction)
        side = np.array([-direction[1], direction[0]]) * width / 2
        tip = base + direction * length
        corners = np.array([base - side, base + side, tip + side * 0.3, tip - side * 0.3])
        shade = float(rng.uniform(0.55, 0.8))
        cv2.fillPoly(out, [np.rint(corners).astype(np.int32)], tuple(float(c) * shade for c in colour),
                     lineType=cv2.LINE_AA)
    return out


def paint_missing(image: np.ndarray, obj: np.ndarray, rng: np.random.Generator,
                  radius_frac: tuple[float, float] = (0.05, 0.09)) -> np.ndarray:
    """A bite out of the outline: the object's pixels in a disc centred on its edge, filled in from the
    background around them; returns the painted image."""
    size = math.sqrt(float(obj.sum()))
    (x, y), normal = _edge_point(obj, rng)
    radius = max(3, round(float(rng.uniform(*radius_frac)) * size))
    bite = np.zeros(obj.shape, np.uint8)
    cv2.circle(bite, (int(x - normal[0] * radius * 0.3), int(y - normal[1] * radius * 0.3)), radius, 1, -1)
    return _fill_from_background(image, obj, bite.astype(bool) & obj, radius)


def _fill_from_background(image: np.ndarray, obj: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    """The image with `hole` (object pixels) filled from the background: the whole object is masked out for the
    inpainting, so only background colours flow in; the rest of the object is then put back."""
    filled = cv2.inpaint(image, obj.astype(np.uint8), max(3, radius // 2), cv2.INPAINT_TELEA)
    out = image.copy()
    out[hole] = filled[hole]
    return out


PAINTERS: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    "Burrs": paint_burrs, "Missing": paint_missing, "Stains": paint_stain}


def paint_defect(image: np.ndarray, obj: np.ndarray, defect: str, rng: np.random.Generator,
                 min_pixels: int = 20, tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(painted image, mask [H, W] bool of the pixels the painting changed) of one `defect` (PAINTED_TYPES) on
    the object `obj`; drawn again (up to `tries` times) while the change covers fewer than `min_pixels`."""
    if defect not in PAINTERS:
        raise DataError(f"no painter for defect type {defect!r} (known: {', '.join(PAINTED_TYPES)})")
    if obj.sum() < 100:
        raise DataError(f"the object mask has {int(obj.sum())} pixels: too small to paint a defect on")
    for _ in range(tries):
        painted = PAINTERS[defect](image, obj, rng)
        mask = _changed(image, painted)
        if mask.sum() >= min_pixels:
            return painted, mask
    raise DataError(f"painting {defect} changed fewer than {min_pixels} pixels in {tries} tries")
