"""Multiscale tri-plane encoding (K-Planes, Fridovich-Keil et al. 2023; TensoRF's plane factors): a point is
described by bilinear reads of three axis-aligned feature planes (xy, xz, yz) at several resolutions,
multiplied over the planes (Hadamard product) and concatenated over the resolutions.

The capacity sits in the planes, read by `F.grid_sample`, so a tiny MLP suffices behind them; everything is
plain PyTorch and runs (and is tested) on the CPU as on the GPU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PLANE_AXES = ((0, 1), (0, 2), (1, 2))      # xy, xz, yz


def plane_coordinates(x: Tensor) -> Tensor:
    """[N, 3] points in [-1, 1]^3 -> [3, 1, N, 2] grid_sample coordinates of the xy, xz and yz planes."""
    return torch.stack([x[:, list(axes)] for axes in PLANE_AXES])[:, None]


def read_planes(planes: Tensor, coords: Tensor) -> Tensor:
    """Bilinear reads of `planes [3, C, R, R]` at `coords [3, 1, N, 2]`, multiplied over the three planes
    -> [N, C]. Outside [-1, 1] the reads are zero (zero padding)."""
    feats = F.grid_sample(planes, coords, mode="bilinear", padding_mode="zeros", align_corners=True)  # [3, C, 1, N]
    return feats[:, :, 0].prod(dim=0).t()


def total_variation(planes: Tensor) -> Tensor:
    """Mean squared difference of neighbouring cells of `planes [..., R, R]` along both plane axes
    (K-Planes' plane TV): the smoothness prior that lets sparse views fill unseen cells sensibly."""
    dh = (planes[..., 1:, :] - planes[..., :-1, :]).square().mean()
    dw = (planes[..., :, 1:] - planes[..., :, :-1]).square().mean()
    return dh + dw


class TriPlaneEncoding(nn.Module):
    """Points in the cube [-bound, bound]^3 -> features [..., features * len(resolutions)].

    One parameter [3, features, R, R] per resolution R, initialised uniformly in [init_low, init_high]
    (K-Planes: 0.1-0.5) so that the product of three reads starts away from zero.
    """

    def __init__(self, resolutions: Sequence[int], features: int, bound: float,
                 init_range: tuple[float, float] = (0.1, 0.5)):
        super().__init__()
        if not resolutions or any(r < 2 for r in resolutions):
            raise ValueError(f"tri-plane resolutions must be >= 2, got {list(resolutions)}")
        self.resolutions, self.features, self.bound = tuple(int(r) for r in resolutions), int(features), float(bound)
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(3, self.features, r, r).uniform_(*init_range)) for r in self.resolutions)

    @property
    def out_dim(self) -> int:
        return self.features * len(self.resolutions)

    def forward(self, pts: Tensor) -> Tensor:
        """pts [..., 3] (world) -> [..., out_dim] float32; zero outside the cube."""
        shape = pts.shape[:-1]
        coords = plane_coordinates(pts.reshape(-1, 3).float() / self.bound)
        feats = [read_planes(planes, coords) for planes in self.planes]
        return torch.cat(feats, dim=-1).reshape(*shape, self.out_dim)

    def total_variation(self) -> Tensor:
        """Plane TV summed over the resolutions."""
        return sum(total_variation(p) for p in self.planes)
