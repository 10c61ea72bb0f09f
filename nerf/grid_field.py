"""A grid-based radiance field: multiscale tri-planes (nerf.plane_encoding) read by a tiny MLP.

Same interface as the vanilla field (nerf.field.NeRFField), so the renderer, occupancy grid, iNeRF and
checkpoints use it unchanged: `forward(pts [..., S, 3], viewdirs [..., 3]) -> (rgb, sigma)`,
`density(pts)`, `use_viewdirs`, `regularization()`, `param_groups(lrate)`.
What the grid needs lives here: a density that cannot die at the start (softplus of a biased output, > 0
everywhere, so the occupancy grid's warm-up sees matter and gradients always flow), plane total variation,
and a learning rate of its own for the planes (grids learn at ~1e-2, MLPs at ~1e-3).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerf.encoding import encoding_dim, positional_encoding
from nerf.plane_encoding import TriPlaneEncoding


class TriPlaneField(nn.Module):
    """Tri-plane features -> hidden -> (density, geometry features); geometry features + encoded view
    direction -> hidden -> colour. sigma = softplus(raw + density_bias) >= 0 (ReLU in compositing is then
    the identity); zero outside the grid's cube."""

    def __init__(self, resolutions: Sequence[int], features: int, bound: float, *, hidden: int, multires_views: int,
                 use_viewdirs: bool, density_bias: float, tv_weight: float, grid_lrate: float, geo_features: int = 15):
        """Arguments as NeRFOptions' grid_* options (their defaults live there; nerf.fields builds it)."""
        super().__init__()
        self.encoding = TriPlaneEncoding(resolutions, features, bound)
        self.use_viewdirs, self.multires_views = use_viewdirs, multires_views
        self.density_bias, self.tv_weight, self.grid_lrate = float(density_bias), float(tv_weight), float(grid_lrate)
        self.geo_features = geo_features if use_viewdirs else 3
        self.density_net = nn.Sequential(nn.Linear(self.encoding.out_dim, hidden), nn.ReLU(),
                                         nn.Linear(hidden, 1 + self.geo_features))
        if use_viewdirs:
            self.colour_in = nn.Linear(self.geo_features + encoding_dim(3, multires_views), hidden)
            self.colour_out = nn.Sequential(nn.ReLU(), nn.Linear(hidden, 3))

    def _density_and_geometry(self, pts: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.encoding(pts)
        out = self.density_net(feats)
        inside = (pts.detach().abs() <= self.encoding.bound).all(dim=-1)
        sigma = F.softplus(out[..., 0].float() + self.density_bias) * inside
        return sigma, out[..., 1:]

    def density(self, pts: Tensor) -> Tensor:
        """Density [...] >= 0 at `pts [..., 3]` (what the occupancy grid needs)."""
        return self._density_and_geometry(pts)[0]

    def forward(self, pts: Tensor, viewdirs: Tensor | None = None) -> tuple[Tensor, Tensor]:
        sigma, geo = self._density_and_geometry(pts)
        if not self.use_viewdirs:
            return torch.sigmoid(geo), sigma
        if viewdirs is None:
            raise ValueError("this field uses view directions: pass viewdirs")
        # colour_in(cat[geo, enc(d)]) split into a per-sample and a per-ray part (as in nerf.field)
        d = positional_encoding(viewdirs, self.multires_views)
        w = self.colour_in.weight
        h = F.linear(geo, w[:, :self.geo_features]) + \
            F.linear(d, w[:, self.geo_features:], self.colour_in.bias)[..., None, :]
        return torch.sigmoid(self.colour_out(h)), sigma

    def regularization(self) -> Tensor:
        """tv_weight x plane total variation (added to the training loss)."""
        if self.tv_weight == 0:
            return self.encoding.planes[0].new_zeros(())
        return self.tv_weight * self.encoding.total_variation()

    def param_groups(self, lrate: float) -> list[dict]:
        """Optimizer groups: the planes at grid_lrate, the MLPs at the trainer's lrate (both decayed alike)."""
        planes = list(self.encoding.parameters())
        ids = {id(p) for p in planes}
        return [{"params": planes, "base_lr": self.grid_lrate},
                {"params": [p for p in self.parameters() if id(p) not in ids], "base_lr": lrate}]
