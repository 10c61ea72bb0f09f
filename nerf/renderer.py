"""NeRFRenderer: coarse + fine fields, ray sampling and compositing in one module."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor, nn

from common.camera import Intrinsics
from nerf.compositing import composite
from nerf.field import NeRFField
from nerf.options import NeRFOptions
from nerf.rays import image_rays
from nerf.sampling import merge_samples, sample_pdf, stratified_samples


class NeRFRenderer(nn.Module):
    """Hierarchical volume renderer of Mildenhall et al.: N_samples stratified samples through the
    coarse field, N_importance more drawn from the coarse weights, all of them through the fine field.

    On CUDA with amp=True the MLPs run under bf16 autocast; encoding and compositing stay fp32.
    Background: white with white_bkgd (MAD-Sim), else black: for photos on real backgrounds the field
    learns the backdrop itself (the last sample of each ray, delta = 1e10, acts as a background wall), so
    training, iNeRF and the reference renders all composite the same way.
    """

    def __init__(self, opts: NeRFOptions = NeRFOptions(), white_bkgd: bool = True):
        super().__init__()
        opts.validated()
        field_args = dict(skips=opts.skips, multires=opts.multires, multires_views=opts.multires_views,
                          use_viewdirs=opts.use_viewdirs, density_bias_init=opts.density_bias_init)
        self.coarse = NeRFField(opts.netdepth, opts.netwidth, **field_args)
        self.fine = NeRFField(opts.netdepth_fine, opts.netwidth_fine, **field_args) if opts.has_fine else None
        self.N_samples, self.N_importance = opts.N_samples, opts.N_importance
        self.near, self.far = float(opts.near), float(opts.far)
        self.white_bkgd, self.chunk, self.amp = white_bkgd, opts.chunk, opts.amp

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _autocast(self, device: torch.device):
        if self.amp and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _shade(self, field: NeRFField, rays_o: Tensor, rays_d: Tensor, viewdirs: Tensor | None, z_vals: Tensor,
               raw_noise_std: float, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Evaluate `field` at all samples of all rays in one batched call, then composite."""
        pts = rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., None]          # [R, S, 3] fp32
        with self._autocast(pts.device):
            rgb, sigma = field(pts, viewdirs)
        return composite(sigma, rgb, z_vals, rays_d, white_bkgd=self.white_bkgd,
                         raw_noise_std=raw_noise_std, generator=generator)

    def render_rays(self, rays_o: Tensor, rays_d: Tensor, *, perturb: bool | float = False,
                    raw_noise_std: float = 0.0, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Render rays [..., 3] -> {"rgb", "rgb_coarse" [..., 3], "depth", "acc" [...]} (float32).

        "rgb"/"depth"/"acc" come from the fine pass when N_importance > 0. Differentiable w.r.t. the
        fields and w.r.t. rays_o/rays_d (the fine sample positions are treated as constants).
        `generator` drives the stratified jitter, importance sampling and density noise.
        """
        batch_shape = rays_o.shape[:-1]
        rays_o = rays_o.reshape(-1, 3).float()
        rays_d = rays_d.reshape(-1, 3).float()
        perturb = bool(perturb)
        viewdirs = None
        if self.coarse.use_viewdirs:
            viewdirs = rays_d / torch.linalg.vector_norm(rays_d, dim=-1, keepdim=True)
        z = stratified_samples(self.near, self.far, self.N_samples, rays_o.shape[0], perturb=perturb,
                               device=rays_o.device, generator=generator)
        coarse = self._shade(self.coarse, rays_o, rays_d, viewdirs, z, raw_noise_std, generator)
        out = {"rgb_coarse": coarse["rgb"]}
        final = coarse
        if self.fine is not None:
            with torch.no_grad():
                mids = 0.5 * (z[:, 1:] + z[:, :-1])
                z_fine = sample_pdf(mids, coarse["weights"][:, 1:-1].detach(), self.N_importance,
                                    det=not perturb, generator=generator)
                z_all = merge_samples(z, z_fine)
            final = self._shade(self.fine, rays_o, rays_d, viewdirs, z_all, raw_noise_std, generator)
        out.update(rgb=final["rgb"], depth=final["depth"], acc=final["acc"])
        return {k: v.reshape(*batch_shape, *v.shape[1:]) for k, v in out.items()}

    @torch.no_grad()
    def render_image(self, c2w: Tensor | np.ndarray, height: int, width: int, intrinsics: Intrinsics,
                     chunk: int | None = None) -> Tensor:
        """Render one view (no jitter, no noise, no grad) in chunks of rays -> [H, W, 3] float32 in [0, 1]."""
        device = self.device
        c2w = torch.as_tensor(np.asarray(c2w) if not torch.is_tensor(c2w) else c2w,
                              dtype=torch.float32, device=device)
        rays_o, rays_d = image_rays(c2w, height, width, intrinsics)
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        chunk = chunk or self.chunk
        rgb = [self.render_rays(rays_o[i:i + chunk], rays_d[i:i + chunk])["rgb"]
               for i in range(0, rays_o.shape[0], chunk)]
        return torch.cat(rgb).reshape(height, width, 3).clamp(0.0, 1.0)
