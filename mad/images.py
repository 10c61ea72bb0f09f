"""Reading one image or mask file, and downscaling both alike (area resampling for images, OR for masks).

Masks need not be exactly binary: `binarize_mask` states the rule. Every problem raises `DataError` with
one line naming the file."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError


def _imread(path: Path, what: str) -> np.ndarray:
    """cv2.imread with its failures turned into one DataError line naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise DataError(f"{path}: cannot decode {what} (corrupt or not an image)")
    return raw


def read_image_file(path: Path, white_bkgd: bool = True) -> np.ndarray:
    """Read an image as float32 RGB [H,W,3] in [0,1]. RGBA is composited on white when
    `white_bkgd`, otherwise its alpha is dropped; grayscale is expanded to 3 channels."""
    path = Path(path)
    raw = _imread(path, "image")
    img = _to_unit_float(raw, path)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = np.repeat(img, 3, axis=2)
        elif channels == 2:  # gray + alpha
            gray, alpha = img[:, :, :1], img[:, :, 1:2]
            img = np.repeat(gray * alpha + (1.0 - alpha) if white_bkgd else gray, 3, axis=2)
        elif channels == 3:
            img = img[:, :, ::-1]  # BGR -> RGB
        elif channels == 4:
            rgb, alpha = img[:, :, 2::-1], img[:, :, 3:4]
            img = rgb * alpha + (1.0 - alpha) if white_bkgd else rgb
        else:
            raise DataError(f"{path}: unsupported number of channels ({channels})")
    else:
        raise DataError(f"{path}: unsupported image shape {raw.shape}")
    return np.ascontiguousarray(img, dtype=np.float32)


def read_mask_file(path: Path) -> tuple[np.ndarray, str | None]:
    """Read a mask as (bool [H,W], note). Colour masks take the max over their colour channels (alpha is
    ignored); then `binarize_mask` applies the mask rule. `note` names the file and says what a non-binary
    mask held (None for a binary one), for the caller's one warning."""
    path = Path(path)
    raw = _imread(path, "mask")
    if raw.ndim == 3:
        if raw.shape[2] in (2, 4):  # ignore alpha
            raw = raw[:, :, :-1]
        raw = raw.max(axis=2)
    elif raw.ndim != 2:
        raise DataError(f"{path}: unsupported mask shape {raw.shape}")
    mask, note = binarize_mask(raw)
    return mask, None if note is None else f"{path}: {note}"


def binarize_mask(values: np.ndarray) -> tuple[np.ndarray, str | None]:
    """The mask rule: a pixel is defect when its value lies above the midpoint of the mask's lowest and
    highest values. A two-level mask ({0, 1}, {0, 255}, {0, m}, {a, b}) is thus read exactly: defect where it
    holds its higher level; a constant mask is all defect when non-zero. Grey levels in between (JPEG
    artefacts, anti-aliased edges, low noise) fall to the nearer extreme and are reported in `note`
    ("12 grey levels from 0 to 255: thresholded at 127.5, ..."); None when the mask has at most two levels.

    The midpoint rather than half the maximum: the two agree whenever the mask has a zero, and the midpoint
    also reads a mask whose background is not zero (e.g. {100, 200}) as its two levels."""
    lo, hi = values.min(), values.max()
    if lo == hi:
        return np.full(values.shape, bool(hi > 0)), None
    threshold = (float(lo) + float(hi)) / 2.0
    mask = values > threshold
    if not np.any((values != lo) & (values != hi)):
        return mask, None
    levels = len(np.unique(values))
    return mask, (f"mask is not binary ({levels} grey levels from {lo} to {hi}): thresholded at {threshold:g}, "
                  "halfway between its lowest and highest value")


def _to_unit_float(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / 65535.0
    if raw.dtype in (np.float32, np.float64):
        return np.clip(raw.astype(np.float32), 0.0, 1.0)
    raise DataError(f"{path}: unsupported pixel type {raw.dtype}")


def downscale_image(img: np.ndarray, factor: int) -> np.ndarray:
    """Area resampling by 1/factor: crop to a multiple of `factor`, average each factor x factor block."""
    if factor == 1:
        return img
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    return cv2.resize(img[:h, :w], (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def downscale_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """A block of the downscaled mask is defective when any of its factor x factor pixels is (same crop
    as downscale_image, so image and mask stay aligned; no defect vanishes)."""
    if factor == 1:
        return mask
    h, w = mask.shape[0] // factor, mask.shape[1] // factor
    return mask[:h * factor, :w * factor].reshape(h, factor, w, factor).any(axis=(1, 3))


def check_downscale(factor: int, width: int, height: int, path: Path) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise DataError(f"downscale must be an integer >= 1, got {factor!r}")
    if width < factor or height < factor:
        raise DataError(f"{path}: image {width}x{height} is too small to load at 1/{factor} resolution")


def odd_sizes(paths: Sequence[Path], sizes: Sequence[tuple[int, int]], what: str) -> list[str]:
    """One problem line for each image whose (width, height) differs from the most common size among `sizes`
    (so the odd file is named, not the first one read); none when all agree."""
    counts = Counter(sizes)
    (width, height), n = counts.most_common(1)[0] if counts else ((0, 0), 0)
    return [f"{p}: image size {w}x{h} differs from the {width}x{height} of {n} of the {len(sizes)} {what} "
            f"(they must share one size)" for p, (w, h) in zip(paths, sizes, strict=True) if (w, h) != (width, height)]
