"""Where to evaluate the field along each ray: stratified (coarse) and importance (fine) samples."""
from __future__ import annotations

import torch
from torch import Tensor


def stratified_samples(near: float, far: float, n_samples: int, n_rays: int, *, perturb: bool,
                       device=None, generator: torch.Generator | None = None) -> Tensor:
    """[n_rays, n_samples] sorted depths in [near, far] (nerf-pytorch's `lindisp=False` scheme).

    Deterministic: linspace(near, far). Perturbed: one uniform sample inside each sample's bin,
    the bins being bounded by the midpoints between neighbouring linspace depths (and near/far).
    """
    t = torch.linspace(0.0, 1.0, n_samples, device=device)
    z = near * (1.0 - t) + far * t
    z = z.expand(n_rays, n_samples)
    if not perturb:
        return z
    lower, upper = sample_bins(z)
    u = torch.rand(z.shape, device=device, generator=generator)
    return lower + (upper - lower) * u


def sample_bins(z: Tensor) -> tuple[Tensor, Tensor]:
    """Lower and upper bin bounds of sorted samples `z [..., S]`: midpoints, clamped to the end samples."""
    mids = 0.5 * (z[..., 1:] + z[..., :-1])
    upper = torch.cat([mids, z[..., -1:]], dim=-1)
    lower = torch.cat([z[..., :1], mids], dim=-1)
    return lower, upper


def sample_pdf(bins: Tensor, weights: Tensor, n_samples: int, *, det: bool,
               generator: torch.Generator | None = None) -> Tensor:
    """Inverse-CDF samples from the piecewise-constant pdf `weights [R, B]` over edges `bins [R, B+1]`.

    det=True uses evenly spaced CDF levels (reproducible); otherwise uniform random levels.
    Returns [R, n_samples], sorted, within [bins[:, 0], bins[:, -1]]. Not differentiable w.r.t. weights
    (callers detach; the samples only choose where to look).
    """
    weights = weights + 1e-5                                           # no zero-probability NaNs
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], dim=-1)     # [R, B+1]
    shape = (*cdf.shape[:-1], n_samples)
    if det:
        u = torch.linspace(0.0, 1.0, n_samples, device=cdf.device, dtype=cdf.dtype).expand(shape)
    else:
        u = torch.rand(shape, device=cdf.device, dtype=cdf.dtype, generator=generator)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    t = (u - cdf_lo) / denom
    return bin_lo + t * (bin_hi - bin_lo)


def merge_samples(z_coarse: Tensor, z_fine: Tensor) -> Tensor:
    """Union of two sample sets along the last dim, sorted."""
    return torch.sort(torch.cat([z_coarse, z_fine], dim=-1), dim=-1).values
