"""Pixel anomaly maps from frozen-CNN feature differences between a query and its NeRF reference.

OmniposeAD scoring (DESIGN.md §1.4): run the query and the reference rendered at the refined pose
through the SAME frozen backbone, take stage 1..5 feature maps, bring each to the query size,
concatenate (optionally with the RGB image) and take the per-pixel L2 norm of the difference:

    s(u) = || f_q(:, u) - f_ref(:, u) ||_2 ,    then Gaussian smoothing (sigma = 4 in the reference code).

The image score is the maximum of the average-pooled map. Nothing here normalises scores across a
test set: every map and score depends on its own query/reference pair only.

Implementation note: bilinear resizing is linear, so resize(f_q) - resize(f_ref) == resize(f_q - f_ref).
The difference is therefore taken at each stage's native resolution and only the difference is
upsampled, channel chunk by channel chunk, which keeps the peak memory at one stage's worth of
upsampled channels instead of the full concatenated feature volume of query and reference.

Everything is pure tensor code on the inputs' device (CPU for tests, CUDA for full runs).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.options import ScoreOptions
from common.errors import ConfigError

_CHANNEL_CHUNK = 64  # channels upsampled at once; bounds peak memory on large maps


def anomaly_map(backbone, query: torch.Tensor, reference: torch.Tensor, opts: ScoreOptions | None = None, *,
                stages: Sequence[int] | None = None, include_rgb: bool | None = None,
                stage_weights: Sequence[float] | None = None, sigma: float | None = None) -> torch.Tensor:
    """Anomaly maps [B,H,W] float32 for queries and references [B,3,H,W] in [0,1].

    Options come from `opts` (stages, RGB term, stage weights, sigma) and are overridden by the explicit
    keyword arguments; with neither, the paper defaults are used.
    Stage weights w_k (optional) weight the squared distance of each term:
    s(u) = sqrt(sum_k w_k ||d_k(u)||^2), which is the L2 norm of the concatenation of the features
    scaled by sqrt(w_k); all ones (default) is the plain formula. A weight list one longer than
    the stage list weights the RGB term with its last value.
    Tensors must be on the backbone's device; the result stays there.
    """
    overrides = {"score_stages": None if stages is None else tuple(stages), "score_include_rgb": include_rgb,
                 "score_stage_weights": None if stage_weights is None else tuple(stage_weights),
                 "score_sigma": sigma}
    opts = dataclasses.replace(opts or ScoreOptions(), **{k: v for k, v in overrides.items() if v is not None})
    opts.validated()
    _check_pair(query, reference)

    n = query.shape[0]
    if opts.score_stages:
        features = backbone(torch.cat([query, reference], dim=0))  # one batched call of 2B
        if len(features) < max(opts.score_stages):
            raise ConfigError(f"backbone gives {len(features)} stages; score_stages asks for "
                              f"{list(opts.score_stages)}")
        q_feats = [features[s - 1][:n] for s in opts.score_stages]
        r_feats = [features[s - 1][n:] for s in opts.score_stages]
    else:
        q_feats, r_feats = [], []
    stage_w, rgb_w = opts.term_weights()
    maps = feature_distance(q_feats, r_feats, size=tuple(query.shape[-2:]), weights=stage_w,
                            rgb=(query, reference) if opts.score_include_rgb else None, rgb_weight=rgb_w)
    return gaussian_blur(maps, opts.score_sigma)


def feature_distance(q_feats: Sequence[torch.Tensor], r_feats: Sequence[torch.Tensor], size: tuple[int, int],
                     weights: Sequence[float] | None = None,
                     rgb: tuple[torch.Tensor, torch.Tensor] | None = None, rgb_weight: float = 1.0) -> torch.Tensor:
    """Per-pixel L2 distance [B,H,W] of the (weighted) concatenation of feature maps resized to `size`.

    Each feature pair is [B,C_k,h_k,w_k]; it is bilinearly resized (align_corners=False) to `size`.
    `rgb`, when given, is a pair of [B,3,H,W] images appended as one more term.
    """
    weights = [1.0] * len(q_feats) if weights is None else list(weights)
    if not (len(q_feats) == len(r_feats) == len(weights)):
        raise ValueError("q_feats, r_feats and weights must have the same length")
    sq = None
    for fq, fr, w in zip(q_feats, r_feats, weights):
        if fq.shape != fr.shape:
            raise ValueError(f"query and reference features differ in shape: {tuple(fq.shape)} vs {tuple(fr.shape)}")
        diff = fq.float() - fr.float()
        for start in range(0, diff.shape[1], _CHANNEL_CHUNK):
            part = diff[:, start:start + _CHANNEL_CHUNK]
            if tuple(part.shape[-2:]) != tuple(size):
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            term = part.square().sum(dim=1)
            term = term * w if w != 1.0 else term
            sq = term if sq is None else sq + term
    if rgb is not None:
        q_img, r_img = rgb
        term = (q_img.float() - r_img.float()).square().sum(dim=1)
        term = term * rgb_weight if rgb_weight != 1.0 else term
        sq = term if sq is None else sq + term
    if sq is None:
        raise ValueError("no features to compare")
    return sq.clamp_min(0).sqrt()


def gaussian_kernel1d(sigma: float, radius: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of length 2*radius+1."""
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of [B,H,W] maps with reflect padding; sigma = 0 returns the input.

    The kernel has 2*round(4*sigma)+1 taps (truncate = 4, as scipy/skimage). Reflect padding needs
    the radius below the map size, so on maps smaller than the kernel the radius is clipped to
    size-1 per axis (the kernel is renormalised); full-size maps are never affected.
    """
    if sigma < 0:
        raise ConfigError(f"score_sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return maps
    if maps.ndim != 3:
        raise ValueError(f"expected maps [B,H,W], got {tuple(maps.shape)}")
    height, width = maps.shape[-2:]
    radius = int(math.floor(4.0 * sigma + 0.5))
    ry, rx = min(radius, height - 1), min(radius, width - 1)
    x = maps.float()[:, None]
    if ry > 0:
        ky = gaussian_kernel1d(sigma, ry, device=maps.device).view(1, 1, -1, 1)
        x = F.conv2d(F.pad(x, (0, 0, ry, ry), mode="reflect"), ky)
    if rx > 0:
        kx = gaussian_kernel1d(sigma, rx, device=maps.device).view(1, 1, 1, -1)
        x = F.conv2d(F.pad(x, (rx, rx, 0, 0), mode="reflect"), kx)
    return x[:, 0]


def image_scores(maps, pool: int):
    """Image scores [B]: max over the average-pooled map (kernel min(pool, H, W), stride 1).

    Accepts a torch tensor [B,H,W] (returns a tensor on the same device) or a numpy array
    (returns numpy). `pool` = 1 gives the plain maximum.
    """
    if int(pool) < 1:
        raise ConfigError(f"image_score_pool must be >= 1, got {pool}")
    as_numpy = isinstance(maps, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(maps)) if as_numpy else maps
    if x.ndim != 3:
        raise ValueError(f"expected maps [B,H,W], got {tuple(x.shape)}")
    kh, kw = min(int(pool), x.shape[-2]), min(int(pool), x.shape[-1])
    # separable box filter (rows then columns): the same average as one k x k pool, O(k) per pixel
    pooled = F.avg_pool2d(x.float()[:, None], kernel_size=(kh, 1), stride=1)
    pooled = F.avg_pool2d(pooled, kernel_size=(1, kw), stride=1)
    scores = pooled.flatten(1).amax(dim=1)
    return scores.numpy() if as_numpy else scores


def _check_pair(query: torch.Tensor, reference: torch.Tensor) -> None:
    if query.ndim != 4 or query.shape[1] != 3:
        raise ValueError(f"expected query [B,3,H,W], got {tuple(query.shape)}")
    if query.shape != reference.shape:
        raise ValueError(f"query {tuple(query.shape)} and reference {tuple(reference.shape)} differ in shape")
