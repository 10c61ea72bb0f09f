"""Pixel anomaly maps from frozen-CNN feature differences between a query and its NeRF reference.

OmniposeAD scoring (the paper's Eqn. 3-4; README, "Scoring"): run the query and the reference rendered at the
refined pose through the SAME frozen backbone, take stage 1..5 feature maps, bring each to the query size,
concatenate (optionally with the RGB image) and take the per-pixel L2 norm of the difference:

    s(u) = || f_q(:, u) - f_ref(:, u) ||_2 ,    then Gaussian smoothing (sigma = 4 in the reference code).

The image score is the maximum of the average-pooled map. That is protocol 'paper' (score_protocol);
protocol 'official' follows the authors' evaluation script instead (combine_terms, README). Nothing here
normalises scores across a test set: every map depends on its own query/reference pair (and, with
score_normalization = residual, on the NeRF's error model fitted on held-out TRAINING views).

Implementation note: bilinear resizing is linear, so resize(f_q) - resize(f_ref) == resize(f_q - f_ref).
The difference is therefore taken at each stage's native resolution and only the difference is
resized; and since only its squared norm is needed, the rows' interpolation is expanded inside the norm
(feature_distance): no [B,C,H,W] volume is ever made, which cut a 400 px map of the five Lite2 stages
from 0.39 to 0.024 s per image on a 2-core CPU (benchmarks/RESULTS.md, "The map's cost").

Everything is pure tensor code on the inputs' device (CPU for tests, CUDA for full runs).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.options import ScoreOptions
from common.errors import ConfigError

_CHANNEL_CHUNK = 64  # channels upsampled at once; bounds peak memory on large maps
OFFICIAL_SIZE = 224  # the authors' evaluation resolution (shorter side)
IMAGENET_STD = (0.229, 0.224, 0.225)  # the RGB term of the official script is on normalised values


def anomaly_map(backbone, query: torch.Tensor, reference: torch.Tensor, opts: ScoreOptions | None = None, *,
                residual=None, stages: Sequence[int] | None = None, include_rgb: bool | None = None,
                stage_weights: Sequence[float] | None = None, sigma: float | None = None,
                unseen: torch.Tensor | None = None) -> torch.Tensor:
    """Anomaly maps [B,h,w] float32 for queries and references [B,3,H,W] in [0,1].

    Options come from `opts` (protocol, stages, RGB term, stage weights, sigma) and are overridden by the
    explicit keyword arguments; with neither, the paper defaults are used. `residual` (an
    anomaly.residual.ResidualModel fitted for the same options) normalises each term's differences first.
    The map has the query's size (protocol 'paper') or the official 224-px size (protocol_size).

    Paper formula with stage weights w_k (optional): s(u) = sqrt(sum_k w_k ||d_k(u)||^2), which is the L2
    norm of the concatenation of the features scaled by sqrt(w_k); all ones (default) is the plain formula.
    A weight list one longer than the stage list weights the RGB term with its last value.
    `unseen` [B,H,W] bool (the reprojected reference's pixels no training view sees, or, with
    reference_spread_limit, whose views disagree) weighs the map down there by unseen_trust when the options'
    reference_unseen_power is > 0.
    Tensors must be on the backbone's device; the result stays there.
    """
    opts = resolve_options(opts, stages=stages, include_rgb=include_rgb, stage_weights=stage_weights, sigma=sigma)
    _check_pair(query, reference)
    size = protocol_size(opts, *query.shape[-2:])
    maps = combine_terms(term_differences(backbone, query, reference, opts), size, opts, residual)
    if unseen is None or opts.reference_unseen_power == 0:
        return maps
    share = unseen.float()
    if tuple(share.shape[-2:]) != tuple(size):
        share = F.interpolate(share[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps * unseen_trust(share, opts.smoothing_sigma(), opts.reference_unseen_power)


def unseen_trust(unseen: torch.Tensor, sigma: float, power: float) -> torch.Tensor:
    """Trust [B,H,W] in [0, 1] of a map whose reference no anomaly-free photograph supports at the pixels
    `unseen` [B,H,W] (bool or a share in [0, 1]): (1 - the Gaussian-weighted share of unseen pixels around)^power.
    Where the reprojected reference falls back to the NeRF's colour (a disocclusion, a thin part's edge), its
    error is the NeRF's, and at full size that error alone reads like a small defect."""
    return (1.0 - gaussian_blur(unseen.float(), sigma)).clamp(0.0, 1.0) ** power


def resolve_options(opts: ScoreOptions | None = None, **overrides) -> ScoreOptions:
    """`opts` (default: the paper's) with the non-None keyword overrides, validated."""
    names = {"stages": "score_stages", "include_rgb": "score_include_rgb", "stage_weights": "score_stage_weights",
             "sigma": "score_sigma"}
    changes = {names[k]: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in overrides.items()
               if v is not None}
    return dataclasses.replace(opts or ScoreOptions(), **changes).validated()


def protocol_size(opts: ScoreOptions, height: int, width: int) -> tuple[int, int]:
    """Size of the anomaly map of a [height, width] query: the query's own (paper), or the official script's
    torchvision Resize(224): the shorter side to 224, the longer one int(224 * long / short)."""
    if opts.score_protocol != "official":
        return int(height), int(width)
    if height <= width:
        return OFFICIAL_SIZE, int(OFFICIAL_SIZE * width / height)
    return int(OFFICIAL_SIZE * height / width), OFFICIAL_SIZE


def term_differences(backbone, query: torch.Tensor, reference: torch.Tensor, opts: ScoreOptions) -> list[torch.Tensor]:
    """Query minus reference per compared term, each at its native resolution: [B,C_k,h_k,w_k] for each
    compared stage, then [B,3,h,w] for the RGB term when compared.

    'official' first resizes both images to protocol_size (bilinear with antialiasing, as torchvision's
    Resize on PIL images) and measures the RGB term on ImageNet-normalised values, as the authors' script.
    """
    if opts.score_protocol == "official":
        size = protocol_size(opts, *query.shape[-2:])
        query, reference = (F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
                            for x in (query, reference))
    if opts.score_colour_gain:
        reference = colour_matched_reference(reference, query)
    reference = relit_reference(reference, query, opts.score_relight_sigma)
    n, stages, diffs = query.shape[0], opts.compared_stages(), []
    if stages:
        features = backbone(torch.cat([query, reference], dim=0))  # one batched call of 2B
        if len(features) < max(stages):
            raise ConfigError(f"backbone gives {len(features)} stages; score_stages asks for {list(stages)}")
        diffs = [features[s - 1][:n].float() - features[s - 1][n:].float() for s in stages]
    if opts.compares_rgb():
        rgb = query.float() - reference.float()
        if opts.score_protocol == "official":
            rgb = rgb / torch.tensor(IMAGENET_STD, device=rgb.device).view(1, 3, 1, 1)
        diffs.append(rgb)
    return diffs


RELIGHT_GAIN_LIMIT = 2.0   # the relighting's gain stays within [1/this, this]
RELIGHT_FLOOR = 0.02       # added to both blurs: dark (or black backdrop) regions keep a gain near 1


def colour_gains(reference: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """[B,3,1,1] each colour channel's least-squares gain of the reference [B,3,H,W] to the query,
    sum(query * reference) / sum(reference^2) over the image, within [1/2, 2]."""
    ref = reference.float()
    gain = (query.float() * ref).sum((-2, -1), keepdim=True) / (ref * ref).sum((-2, -1), keepdim=True).clamp_min(1e-8)
    return gain.clamp(1 / RELIGHT_GAIN_LIMIT, RELIGHT_GAIN_LIMIT)


def colour_matched_reference(reference: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] the reference times its colour_gains to the query: an exposure or white balance that changes from
    photograph to photograph, undone with three numbers per image, which a small defect moves little."""
    return (reference.float() * colour_gains(reference, query)).clamp(0.0, 1.0)


def relit_reference(reference: torch.Tensor, query: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B,3,H,W] the reference with the query's low-frequency shading: each channel times
    (blur(query) + floor) / (blur(reference) + floor), Gaussian blurs of `sigma` pixels (taken at 1/k of the size,
    k = sigma // 4, which a blur that wide does not notice), the gain within [1/2, 2]; `sigma` = 0 returns the
    reference. A light that moves with the camera, or another exposure, changes the shading over regions far
    larger than a defect: this takes that out, and a defect much smaller than the blur moves the gain little."""
    if sigma <= 0:
        return reference
    factor = max(1, int(sigma // 4))

    def low(x: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(x.float(), factor, ceil_mode=True) if factor > 1 else x.float()
        b, c, h, w = small.shape
        blurred = gaussian_blur(small.reshape(b * c, h, w), sigma / factor).reshape(b, c, h, w)
        return F.interpolate(blurred, size=x.shape[-2:], mode="bilinear", align_corners=False)

    gain = ((low(query) + RELIGHT_FLOOR) / (low(reference) + RELIGHT_FLOOR)).clamp(1 / RELIGHT_GAIN_LIMIT,
                                                                                   RELIGHT_GAIN_LIMIT)
    return (reference.float() * gain).clamp(0.0, 1.0)


def combine_terms(diffs: Sequence[torch.Tensor], size: tuple[int, int], opts: ScoreOptions,
                  residual=None) -> torch.Tensor:
    """Maps [B,*size] from per-term differences (term_differences), optionally residual-normalised.

    paper:    sqrt(sum_k w_k ||resize(d_k)||^2), Gaussian-smoothed (score_sigma);
    official: sum_k resize(||d_k||^2) (squared, summed over channels BEFORE resizing, no root), smoothed
              with sigma 4; the test-set min-max normalisation follows at evaluation (normalize_test_set).
    """
    if residual is not None:
        diffs = residual.normalise(diffs)
    stage_w, rgb_w = opts.term_weights()
    weights = stage_w + ([rgb_w] if opts.compares_rgb() else [])
    if len(weights) != len(diffs):
        raise ValueError(f"{len(diffs)} difference terms but {len(weights)} weights")
    if opts.score_protocol == "official":
        squared = None
        for diff, w in zip(diffs, weights, strict=True):
            term = diff.square().sum(dim=1, keepdim=True)
            if tuple(term.shape[-2:]) != tuple(size):
                term = F.interpolate(term, size=size, mode="bilinear", align_corners=False)
            squared = w * term[:, 0] if squared is None else squared + w * term[:, 0]
        return gaussian_blur(squared, opts.smoothing_sigma())
    return gaussian_blur(feature_distance(diffs, size, weights), opts.smoothing_sigma())


def feature_distance(diffs: Sequence[torch.Tensor], size: tuple[int, int],
                     weights: Sequence[float] | None = None) -> torch.Tensor:
    """Per-pixel L2 norm [B,H,W] of the (weighted) concatenation of difference maps resized to `size`.

    Each difference is [B,C_k,h_k,w_k]; it is bilinearly resized (align_corners=False) to `size`, without ever
    holding a [B,C_k,H,W] volume: resizing is separable, so each term is resized along the columns at its own
    rows, and the rows' interpolation is expanded inside the squared norm (_resized_square_norm).
    """
    weights = [1.0] * len(diffs) if weights is None else list(weights)
    if len(diffs) != len(weights):
        raise ValueError(f"{len(diffs)} difference terms but {len(weights)} weights")
    sq = None
    for diff, w in zip(diffs, weights, strict=True):
        term = _resized_square_norm(diff.float(), size)
        term = term * w if w != 1.0 else term
        sq = term if sq is None else sq + term
    if sq is None:
        raise ValueError("no features to compare")
    return sq.clamp_min(0).sqrt()


def _resized_square_norm(diff: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """|| bilinear_resize(diff)(u) ||^2 over the channels [B,H,W] of diff [B,C,h,w], exactly (to rounding) as
    F.interpolate(diff, size, mode='bilinear', align_corners=False).square().sum(1), at the cost of C x h x W
    instead of C x H x W: an output row is w0 a + w1 b of two source rows a, b (after resizing the columns), and
    ||w0 a + w1 b||^2 = w0^2 |a|^2 + 2 w0 w1 <a, b> + w1^2 |b|^2 needs only each source row's norms and its inner
    products with the next row, summed over the channels chunk by chunk."""
    height, width = size
    norms = inner = None
    for start in range(0, diff.shape[1], _CHANNEL_CHUNK):
        part = diff[:, start:start + _CHANNEL_CHUNK]
        if part.shape[-1] != width:
            part = F.interpolate(part, size=(part.shape[-2], width), mode="bilinear", align_corners=False)
        part_norms = part.square().sum(dim=1)
        norms = part_norms if norms is None else norms + part_norms
        if part.shape[-2] != height:
            below = torch.cat([part[:, :, 1:], part[:, :, -1:]], dim=2)       # row i + 1, the last row clamped
            part_inner = (part * below).sum(dim=1)
            inner = part_inner if inner is None else inner + part_inner
    if inner is None:
        return norms
    first, second, weight = _bilinear_rows(norms.shape[-2], height, norms.device)
    w0, w1 = (1.0 - weight)[:, None], weight[:, None]
    return w0 * w0 * norms[:, first] + 2.0 * w0 * w1 * inner[:, first] + w1 * w1 * norms[:, second]


def _bilinear_rows(rows_in: int, rows_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first source row, second source row, weight of the second) [rows_out] of each output row of a bilinear
    resize with align_corners=False, PyTorch's rule: source = (out + 0.5) * in / out - 0.5, clamped at 0; the
    second row is the first's successor, or the first itself on the last row."""
    source = ((torch.arange(rows_out, device=device, dtype=torch.float32) + 0.5) * (rows_in / rows_out) - 0.5)
    source = source.clamp_min(0.0)
    first = source.long().clamp_max(rows_in - 1)
    second = (first + 1).clamp_max(rows_in - 1)
    return first, second, source - first.float()


def gaussian_kernel1d(sigma: float, radius: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of length 2*radius+1."""
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of [B,H,W] maps, equal to scipy.ndimage.gaussian_filter(map, sigma)
    with its defaults (mode='reflect', i.e. edge-inclusive mirroring d c b a | a b c d, truncate=4:
    2*int(4*sigma+0.5)+1 taps), the smoothing of the authors' script; sigma = 0 returns the input.
    Maps smaller than the kernel are mirrored repeatedly, as scipy does."""
    if sigma < 0:
        raise ConfigError(f"score_sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return maps
    if maps.ndim != 3:
        raise ValueError(f"expected maps [B,H,W], got {tuple(maps.shape)}")
    radius = int(4.0 * sigma + 0.5)
    kernel = gaussian_kernel1d(sigma, radius, device=maps.device)
    x = maps.float()[:, None]
    x = F.conv2d(x.index_select(2, _mirror_index(x.shape[2], radius, x.device)), kernel.view(1, 1, -1, 1))
    x = F.conv2d(x.index_select(3, _mirror_index(x.shape[3], radius, x.device)), kernel.view(1, 1, 1, -1))
    return x[:, 0]


def _mirror_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of a length-n axis padded by `radius` on both sides with scipy's 'reflect' rule."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def image_scores(maps, pool: int):
    """Image scores [B]: max over the average-pooled map (kernel min(pool, H, W), stride 1).

    Accepts a torch tensor [B,H,W] (returns a tensor on the same device) or a numpy array
    (returns numpy). `pool` = 1 gives the plain maximum.
    """
    as_numpy = isinstance(maps, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(maps)) if as_numpy else maps
    scores = _box_average(x, pool).flatten(1).amax(dim=1)
    return scores.numpy() if as_numpy else scores


def defect_masks(maps, threshold: float, pool: int) -> np.ndarray:
    """Binary defect masks [B,H,W] bool of maps [B,H,W] (numpy or torch): every pixel of a pool x pool window
    whose average is above `threshold`. With the image threshold and the image score's pool, a mask is empty
    exactly when the image score is at or below the threshold (pool = 1: the pixels above it)."""
    x = torch.from_numpy(np.ascontiguousarray(maps)) if isinstance(maps, np.ndarray) else maps.detach().cpu()
    above = (_box_average(x, pool) > threshold).float()
    kh, kw = x.shape[-2] - above.shape[-2] + 1, x.shape[-1] - above.shape[-1] + 1
    # a pixel is covered by the windows whose top-left corner is at most (kh - 1, kw - 1) above and left of it
    covered = F.max_pool2d(F.pad(above, (kw - 1, kw - 1, kh - 1, kh - 1)), kernel_size=(kh, kw), stride=1)
    return covered[:, 0].numpy() > 0.5


def _box_average(x: torch.Tensor, pool: int) -> torch.Tensor:
    """Average over every pool x pool window (the kernel capped by the map's size), stride 1: [B,1,h,w]."""
    if int(pool) < 1:
        raise ConfigError(f"image_score_pool must be >= 1, got {pool}")
    if x.ndim != 3:
        raise ValueError(f"expected maps [B,H,W], got {tuple(x.shape)}")
    kh, kw = min(int(pool), x.shape[-2]), min(int(pool), x.shape[-1])
    # separable box filter (rows then columns): the same average as one k x k pool, O(k) per pixel
    pooled = F.avg_pool2d(x.float()[:, None], kernel_size=(kh, 1), stride=1)
    return F.avg_pool2d(pooled, kernel_size=(1, kw), stride=1)


def _check_pair(query: torch.Tensor, reference: torch.Tensor) -> None:
    if query.ndim != 4 or query.shape[1] != 3:
        raise ValueError(f"expected query [B,3,H,W], got {tuple(query.shape)}")
    if query.shape != reference.shape:
        raise ValueError(f"query {tuple(query.shape)} and reference {tuple(reference.shape)} differ in shape")
