"""The radiance fields the renderer can use, by name (the `field` option), and how each is built from the
options. Every field has the same interface (nerf.field.NeRFField, nerf.grid_field.TriPlaneField):
forward(pts, viewdirs) -> (rgb, sigma), density(pts), use_viewdirs, regularization(), param_groups(lrate)."""
from __future__ import annotations

from torch import nn

from nerf.field import NeRFField
from nerf.grid_field import TriPlaneField
from nerf.options import FIELD_NAMES, NeRFOptions

__all__ = ["FIELD_NAMES", "build_field"]


def build_field(opts: NeRFOptions, *, fine: bool = False) -> nn.Module:
    """The coarse (or, with `fine`, the fine) field that `opts.field` names."""
    if opts.field == "mlp":
        depth, width = (opts.netdepth_fine, opts.netwidth_fine) if fine else (opts.netdepth, opts.netwidth)
        return NeRFField(depth, width, skips=opts.skips, multires=opts.multires, multires_views=opts.multires_views,
                         use_viewdirs=opts.use_viewdirs, density_bias_init=opts.density_bias_init)
    if opts.field == "triplane":
        return TriPlaneField(opts.grid_resolutions, opts.grid_features, opts.grid_bound, hidden=opts.grid_hidden,
                             multires_views=opts.multires_views, use_viewdirs=opts.use_viewdirs,
                             density_bias=opts.grid_density_bias, tv_weight=opts.grid_tv_weight,
                             grid_lrate=opts.grid_lrate)
    raise ValueError(f"unknown field {opts.field!r} (known: {', '.join(FIELD_NAMES)})")
