"""The vanilla NeRF MLP (Mildenhall et al. 2020, fig. 7): encoded xyz -> density (+ feature);
feature + encoded view direction -> colour."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerf.encoding import encoding_dim, positional_encoding


class NeRFField(nn.Module):
    """depth x width ReLU MLP; the encoded input is concatenated again after each layer index in `skips`.

    forward(pts [..., S, 3], viewdirs [..., 3] unit, one per ray) -> (rgb [..., S, 3] in (0,1), sigma_raw [..., S]).
    sigma_raw is the raw density (ReLU is applied in compositing, after optional noise).
    density_bias_init: initial bias of the density output (None = PyTorch's default init).
    """

    def __init__(self, depth: int = 8, width: int = 256, skips: Sequence[int] = (4,),
                 multires: int = 10, multires_views: int = 4, use_viewdirs: bool = True,
                 density_bias_init: float | None = 0.1):
        super().__init__()
        if depth < 1 or width < 2:
            raise ValueError(f"NeRF MLP needs depth >= 1 and width >= 2, got {depth}x{width}")
        if any(not 0 <= s < depth - 1 for s in skips):
            raise ValueError(f"skips {list(skips)} must be layer indices in [0, {depth - 2}] for depth {depth}")
        self.multires, self.multires_views = multires, multires_views
        self.skips = tuple(int(s) for s in skips)
        self.use_viewdirs = use_viewdirs
        in_ch = encoding_dim(3, multires)
        self.in_ch = in_ch
        layers = [nn.Linear(in_ch, width)]
        for i in range(1, depth):
            layers.append(nn.Linear(width + (in_ch if (i - 1) in self.skips else 0), width))
        self.pts_linears = nn.ModuleList(layers)
        if use_viewdirs:
            self.in_ch_views = encoding_dim(3, multires_views)
            self.feature_linear = nn.Linear(width, width)
            self.alpha_linear = nn.Linear(width, 1)
            self.views_linear = nn.Linear(width + self.in_ch_views, width // 2)
            self.rgb_linear = nn.Linear(width // 2, 3)
        else:
            self.output_linear = nn.Linear(width, 4)
        if density_bias_init is not None:
            # A small positive start keeps the ReLU density alive: with PyTorch's default init the raw density
            # is nearly constant over space, and if that constant is negative no gradient ever reaches it.
            with torch.no_grad():
                bias = self.alpha_linear.bias if use_viewdirs else self.output_linear.bias[3:]
                bias.fill_(density_bias_init)

    def _trunk(self, pts: Tensor) -> Tensor:
        """Features of the position MLP at `pts [..., 3]` (before the density and colour heads)."""
        x = positional_encoding(pts, self.multires)                  # [..., C] (fp32 even under autocast)
        h = x
        for i, layer in enumerate(self.pts_linears):
            h = F.relu(layer(h))
            if i in self.skips:
                h = torch.cat([x, h], dim=-1)
        return h

    def density(self, pts: Tensor) -> Tensor:
        """Raw density [...] at `pts [..., 3]` alone (no colour branch): what the occupancy grid needs."""
        h = self._trunk(pts)
        if not self.use_viewdirs:
            return self.output_linear(h)[..., 3]
        return self.alpha_linear(h)[..., 0]

    def forward(self, pts: Tensor, viewdirs: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self._trunk(pts)
        if not self.use_viewdirs:
            out = self.output_linear(h)
            return torch.sigmoid(out[..., :3]), out[..., 3]
        if viewdirs is None:
            raise ValueError("this field uses view directions: pass viewdirs")
        sigma = self.alpha_linear(h)[..., 0]
        feature = self.feature_linear(h)
        # views_linear(cat[feature, enc(d)]) split into a per-sample and a per-ray part:
        # the direction term is computed once per ray and broadcast over its samples.
        d = positional_encoding(viewdirs, self.multires_views)       # [..., Cd]
        w = self.views_linear.weight
        width = feature.shape[-1]
        h = F.linear(feature, w[:, :width]) + F.linear(d, w[:, width:], self.views_linear.bias)[..., None, :]
        rgb = torch.sigmoid(self.rgb_linear(F.relu(h)))
        return rgb, sigma

    def regularization(self) -> Tensor:
        """The vanilla field has no regulariser: zero (the field interface's training-loss term)."""
        return self.pts_linears[0].weight.new_zeros(())

    def param_groups(self, lrate: float) -> list[dict]:
        """One optimizer group at the trainer's learning rate (the field interface)."""
        return [{"params": list(self.parameters()), "base_lr": lrate}]
