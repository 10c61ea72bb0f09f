"""Positional encoding (Mildenhall et al. 2020, eq. 4)."""
from __future__ import annotations

import torch
from torch import Tensor


def encoding_dim(in_dim: int, n_freqs: int, include_input: bool = True) -> int:
    """Channels produced by `positional_encoding` for `in_dim` inputs."""
    return in_dim * (2 * n_freqs + int(include_input))


def positional_encoding(x: Tensor, n_freqs: int, include_input: bool = True) -> Tensor:
    """[..., D] -> [..., D*(2F+1)]: [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(F-1) x), cos(2^(F-1) x)].

    Same channel order as nerf-pytorch. Runs in x's dtype (keep it fp32: 2^9 * x in bf16 is noise).
    """
    parts = [x] if include_input else []
    if n_freqs > 0:
        freqs = 2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)      # [F]
        scaled = x[..., None, :] * freqs[:, None]                                 # [..., F, D]
        sincos = torch.stack((torch.sin(scaled), torch.cos(scaled)), dim=-2)      # [..., F, 2, D]
        parts.append(sincos.flatten(-3))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
