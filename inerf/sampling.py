"""Where iNeRF draws its rays in a query image.

Strategies (iNeRF, Yen-Chen et al. 2021):
* ``random``            every pixel is a candidate;
* ``interest_points``   only keypoint pixels (SIFT, or ORB) are candidates;
* ``interest_regions``  keypoints dilated with a ``kernel_size x kernel_size`` kernel for
                        ``dil_iter`` iterations (cv2.dilate); paper: 5x5, 3 iterations.
When a detector finds fewer than ``min_points`` keypoints (or the region is empty) the image
falls back to ``random``; the fallback is recorded in `Candidates.fallback`.

`candidate_pixels` builds the candidate set of one image (numpy, pure). `PixelSampler` holds the
candidate sets of a batch of queries on the compute device and draws ``n`` pixels per query each
step (uniformly with replacement from the candidate set, seeded, no host round trip).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from inerf.options import DETECTORS, STRATEGIES


@dataclass
class Candidates:
    pixels: np.ndarray   # [M, 2] int64 (row, column)
    strategy: str        # strategy actually used ("random" after a fallback)
    n_keypoints: int
    fallback: bool


def _to_gray_u8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    return img


def detect_keypoints(image: np.ndarray, detector: str = "sift") -> np.ndarray:
    """Keypoint pixel positions [K, 2] (row, column), deduplicated, inside the image."""
    gray = _to_gray_u8(image)
    if detector == "sift":
        det = cv2.SIFT_create()
    elif detector == "orb":
        border = int(max(3, min(31, min(gray.shape) // 8)))  # ORB's 31-pixel default border empties small images
        det = cv2.ORB_create(nfeatures=2000, edgeThreshold=border, patchSize=border)
    else:
        raise ValueError(f"unknown keypoint detector {detector!r}; choose one of {DETECTORS}")
    keypoints = det.detect(gray, None)
    if not keypoints:
        return np.zeros((0, 2), dtype=np.int64)
    xy = np.array([kp.pt for kp in keypoints], dtype=np.float64)
    h, w = gray.shape
    cols = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, h - 1)
    return np.unique(np.stack([rows, cols], axis=1), axis=0)


def _all_pixels(h: int, w: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows.reshape(-1), cols.reshape(-1)], axis=1).astype(np.int64)


def interest_region_mask(shape: tuple[int, int], keypoints: np.ndarray, kernel_size: int = 5,
                         dil_iter: int = 3) -> np.ndarray:
    """Boolean [H, W] mask: keypoint pixels dilated by a square kernel `dil_iter` times."""
    mask = np.zeros(shape, dtype=np.uint8)
    if len(keypoints):
        mask[keypoints[:, 0], keypoints[:, 1]] = 1
    if kernel_size > 1 and dil_iter > 0:
        mask = cv2.dilate(mask, np.ones((kernel_size, kernel_size), np.uint8), iterations=dil_iter)
    return mask.astype(bool)


def candidate_pixels(image: np.ndarray, strategy: str = "interest_regions", kernel_size: int = 5,
                     dil_iter: int = 3, detector: str = "sift", min_points: int = 8) -> Candidates:
    """Candidate pixels of one [H, W, 3] image for the given strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {STRATEGIES}")
    h, w = image.shape[:2]
    if strategy == "random":
        return Candidates(_all_pixels(h, w), "random", 0, False)
    keypoints = detect_keypoints(image, detector)
    if len(keypoints) < max(min_points, 1):
        return Candidates(_all_pixels(h, w), "random", len(keypoints), True)
    if strategy == "interest_points":
        return Candidates(keypoints, strategy, len(keypoints), False)
    mask = interest_region_mask((h, w), keypoints, kernel_size, dil_iter)
    pixels = np.argwhere(mask).astype(np.int64)
    if len(pixels) == 0:
        return Candidates(_all_pixels(h, w), "random", len(keypoints), True)
    return Candidates(pixels, strategy, len(keypoints), False)


class PixelSampler:
    """Per-query candidate sets on `device`; `sample(n)` -> LongTensor [B, n, 2] (row, column).

    Each call draws n pixels per query uniformly (with replacement) from that query's candidate
    set, using a torch.Generator seeded with `seed` on `device`, so sampling stays on the GPU.
    """

    def __init__(self, images, strategy: str = "interest_regions", kernel_size: int = 5, dil_iter: int = 3,
                 detector: str = "sift", min_points: int = 8, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.candidates = [candidate_pixels(np.asarray(img), strategy, kernel_size, dil_iter, detector, min_points)
                           for img in images]
        counts = [len(c.pixels) for c in self.candidates]
        padded = np.zeros((len(counts), max(counts), 2), dtype=np.int64)
        for i, c in enumerate(self.candidates):
            padded[i, :len(c.pixels)] = c.pixels
        self.pixels = torch.from_numpy(padded).to(self.device)
        self.counts = torch.tensor(counts, dtype=torch.float64, device=self.device)
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def reset(self, seed: int | None = None) -> None:
        self.generator.manual_seed(self.seed if seed is None else seed)

    def sample(self, n: int, generator: torch.Generator | None = None, *, same_draw: bool = False) -> torch.Tensor:
        """n pixels per query. same_draw=True uses one set of n uniform numbers for every query, so a
        query's pixels depend only on its candidate set (its image) and the generator, not on its place
        in the batch (what makes losses of the same query in different batches comparable)."""
        b = self.pixels.shape[0]
        shape = (1, n) if same_draw else (b, n)
        u = torch.rand(shape, generator=generator or self.generator, device=self.device, dtype=torch.float64)
        u = u.expand(b, n)
        idx = (u * self.counts[:, None]).long().clamp_max(self.pixels.shape[1] - 1)
        return torch.gather(self.pixels, 1, idx[..., None].expand(b, n, 2))
