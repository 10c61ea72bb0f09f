"""Volume rendering: alpha-composite field samples along rays (Mildenhall et al. 2020, eq. 3)."""
from __future__ import annotations

import torch
from torch import Tensor


def sample_deltas(z_vals: Tensor, rays_d: Tensor) -> Tensor:
    """[R, S] world-space distances between consecutive samples; the last one is 1e10 (to infinity)."""
    dists = z_vals[..., 1:] - z_vals[..., :-1]
    dists = torch.cat([dists, torch.full_like(dists[..., :1], 1e10)], dim=-1)
    return dists * torch.linalg.vector_norm(rays_d, dim=-1, keepdim=True)


def passing(alpha: Tensor) -> Tensor:
    """1 - alpha_i (+ 1e-10, nerf-pytorch's guard): the share of the light that passes sample i."""
    return 1.0 - alpha + 1e-10


def transmittance(alpha: Tensor) -> Tensor:
    """T_i = prod_{j<i} (1 - alpha_j): the light left when reaching sample i (exclusive cumulative product)."""
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), passing(alpha)], dim=-1), dim=-1)
    return trans[..., :-1]


def alpha_from_deltas(sigma_raw: Tensor, deltas: Tensor) -> Tensor:
    """alpha = 1 - exp(-relu(sigma) * delta) of samples with world-space step lengths `deltas` (sample_deltas)."""
    return 1.0 - torch.exp(-torch.relu(sigma_raw) * deltas)


def alpha_of(sigma_raw: Tensor, z_vals: Tensor, rays_d: Tensor) -> Tensor:
    """alpha = 1 - exp(-relu(sigma) * delta * ||d||) of samples at depths z_vals [R, S] along rays rays_d [R, 3]."""
    return alpha_from_deltas(sigma_raw, sample_deltas(z_vals, rays_d))


def alpha_weights(alpha: Tensor) -> Tensor:
    """w_i = alpha_i * prod_{j<i} (1 - alpha_j) (exclusive cumulative transmittance)."""
    return alpha * transmittance(alpha)


def composite(sigma_raw: Tensor, rgb: Tensor, z_vals: Tensor, rays_d: Tensor, *, white_bkgd: bool,
              raw_noise_std: float = 0.0, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Composite samples (sigma_raw [R, S], rgb [R, S, 3], depths z_vals [R, S]) of rays rays_d [R, 3].

    alpha = 1 - exp(-relu(sigma) * delta * ||d||). Computed in fp32 whatever the field's dtype.
    Returns rgb [R, 3] (+ (1 - acc) white background), depth [R], acc [R], weights [R, S].
    """
    sigma_raw, rgb = sigma_raw.float(), rgb.float()
    if raw_noise_std > 0.0:
        sigma_raw = sigma_raw + raw_noise_std * torch.randn(sigma_raw.shape, device=sigma_raw.device,
                                                            generator=generator)
    alpha = alpha_of(sigma_raw, z_vals, rays_d)
    weights = alpha_weights(alpha)
    acc = weights.sum(dim=-1)
    color = (weights[..., None] * rgb).sum(dim=-2)
    if white_bkgd:
        color = color + (1.0 - acc[..., None])
    depth = (weights * z_vals).sum(dim=-1)
    return {"rgb": color, "depth": depth, "acc": acc, "weights": weights}
