"""NeRFRenderer: coarse + fine fields, ray sampling and compositing in one module."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import Tensor, nn

from common.camera import Intrinsics
from nerf.compositing import alpha_from_deltas, alpha_of, composite, passing, sample_deltas, transmittance
from nerf.fields import build_field
from nerf.occupancy import OccupancyGrid, density_threshold
from nerf.options import NeRFOptions
from nerf.rays import image_rays, ray_box_interval
from nerf.sampling import merge_samples, sample_pdf, stratified_samples

RENDER_PIECES = 8       # pieces of the march evaluated front to back by renders without gradients (render_early_stop)


class NeRFRenderer(nn.Module):
    """Hierarchical volume renderer of Mildenhall et al.: N_samples stratified samples through the
    coarse field, N_importance more drawn from the coarse weights, all of them through the fine field.

    With `occupancy_grid` (nerf.occupancy), once the grid is active (after the training warm-up, or loaded),
    both passes evaluate their MLP only at the samples inside occupied cells (a packed batch: one host sync
    per pass for its size); the skipped samples keep their place along the ray with zero density, so the
    deltas and the compositing are those of plain sampling over the same depths. The coarse pass then
    marches `occupancy_samples` stratified depths (a finer step for the same or less work), and the fine
    pass draws N_importance samples from those weights. An inactive grid renders exactly as plain NeRF.

    On CUDA with amp=True the MLPs run under bf16 autocast; encoding and compositing stay fp32.
    Background: white with white_bkgd (MAD-Sim), else black: for photos on real backgrounds the field
    learns the backdrop itself (the last sample of each ray, delta = 1e10, acts as a background wall), so
    training, iNeRF and the reference renders all composite the same way.
    """

    def __init__(self, opts: NeRFOptions = NeRFOptions(), white_bkgd: bool = True):
        super().__init__()
        opts.validated()
        self.coarse = build_field(opts)
        self.fine = build_field(opts, fine=True) if opts.has_fine else None
        self.N_samples, self.N_importance, self.march_samples = opts.N_samples, opts.N_importance, opts.march_samples
        self.image_march_samples = opts.image_march_samples                      # whole images (render_image)
        self.near, self.far = float(opts.near), float(opts.far)
        self.white_bkgd, self.chunk, self.amp = white_bkgd, opts.chunk, opts.amp
        self.grid = OccupancyGrid(opts.occupancy_resolution, opts.occupancy_bound) if opts.occupancy_grid else None
        self.grid_threshold = density_threshold(opts.occupancy_threshold, (self.far - self.near) / self.march_samples)
        self.early_stop = opts.occupancy_early_stop
        self.render_early_stop = opts.render_early_stop

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def background(self) -> float:
        """The colour of a ray that meets nothing (every channel): 1 with white_bkgd, else 0."""
        return 1.0 if self.white_bkgd else 0.0

    def _autocast(self, device: torch.device):
        if self.amp and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def fields(self) -> list[nn.Module]:
        return [self.coarse] + ([self.fine] if self.fine is not None else [])

    def regularization(self) -> Tensor:
        """The fields' own regularisers (e.g. plane total variation), summed: added to the training loss."""
        return sum(f.regularization() for f in self.fields)

    def param_groups(self, lrate: float) -> list[dict]:
        """Optimizer parameter groups of the fields, each with its own "base_lr" (decayed by the trainer)."""
        return [group for f in self.fields for group in f.param_groups(lrate)]

    def density(self, pts: Tensor) -> Tensor:
        """Density [N] >= 0 at points `pts [N, 3]`: the max over the coarse and fine fields (what the
        occupancy grid tracks, so that a cell is skipped only when neither field sees matter there)."""
        with self._autocast(pts.device):
            density = torch.stack([f.density(pts).float() for f in self.fields]).amax(dim=0)
        return torch.relu(density)

    def update_grid(self, *, decay: float, generator: torch.Generator | None = None) -> None:
        """One training-time update of the occupancy grid from the current fields (nerf.occupancy)."""
        self.grid.update(self.density, threshold=self.grid_threshold, decay=decay, generator=generator)

    def fill_grid(self) -> None:
        """Rebuild the occupancy grid from the fields alone (for a checkpoint saved without one)."""
        self.grid.fill(self.density, threshold=self.grid_threshold)

    @property
    def _skipping(self) -> bool:
        return self.grid is not None and self.grid.active

    def _kept(self, field: nn.Module, pts: Tensor, z_vals: Tensor, rays_d: Tensor,
              occupied: Tensor | None = None) -> Tensor | None:
        """[R, S] bool: the samples to evaluate (None = all, without an active grid): those in occupied cells,
        and, with early termination while gradients are on (training, iNeRF), only those before the ray's
        transmittance falls below `occupancy_early_stop` (found by a density-only pass without gradients,
        cheaper than the forward and backward passes it saves)."""
        if not self._skipping:
            return None
        keep = self.grid.occupied_at(pts.detach()) if occupied is None else occupied
        if self.early_stop > 0 and torch.is_grad_enabled():
            with torch.no_grad():
                ray, sample = torch.nonzero(keep, as_tuple=True)
                with self._autocast(pts.device):
                    density = field.density(pts[ray, sample])
                sigma = torch.full(keep.shape, -math.inf, device=pts.device).index_put((ray, sample), density.float())
                keep = keep & (transmittance(alpha_of(sigma, z_vals, rays_d)) > self.early_stop)
        return keep

    def _query(self, field: nn.Module, pts: Tensor, viewdirs: Tensor | None,
               keep: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(rgb [R, S, 3], sigma_raw [R, S], evaluated samples per ray [R]) of `field` at `pts [R, S, 3]`.

        Only the samples in `keep` are evaluated (packed, one host sync for their number); the others get
        sigma_raw = -inf (zero density whatever the density noise) and rgb = 0. keep=None: all of them.
        """
        if keep is None:
            with self._autocast(pts.device):
                rgb, sigma = field(pts, viewdirs)
            return rgb, sigma, torch.full(pts.shape[:1], float(pts.shape[1]), device=pts.device)
        ray, sample = torch.nonzero(keep, as_tuple=True)
        with self._autocast(pts.device):
            rgb_kept, sigma_kept = field(pts[ray, sample][:, None], None if viewdirs is None else viewdirs[ray])
        sigma = torch.full(keep.shape, -math.inf, device=pts.device).index_put((ray, sample), sigma_kept[:, 0].float())
        rgb = pts.new_zeros((*keep.shape, 3)).index_put((ray, sample), rgb_kept[:, 0].float())
        return rgb, sigma, keep.sum(dim=-1).float()

    def _query_front_to_back(self, field: nn.Module, pts: Tensor, viewdirs: Tensor | None, keep: Tensor,
                             z_vals: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """_query without gradients, front to back in RENDER_PIECES pieces of the march: a ray whose transmittance
        has fallen below render_early_stop is not evaluated further (its samples left out get zero density, so
        the ray composites as if the rest were empty: at most render_early_stop of its colour and opacity
        lost). One host sync per piece."""
        sigma = torch.full(keep.shape, -math.inf, device=pts.device)
        rgb = pts.new_zeros((*keep.shape, 3))
        deltas = sample_deltas(z_vals, rays_d)
        light = torch.ones(keep.shape[0], device=pts.device)                     # transmittance so far
        evaluated = torch.zeros(keep.shape[0], device=pts.device)
        step = -(-keep.shape[1] // RENDER_PIECES)
        for start in range(0, keep.shape[1], step):
            piece = keep[:, start:start + step] & (light > self.render_early_stop)[:, None]
            ray, sample = torch.nonzero(piece, as_tuple=True)
            if len(ray) == 0:
                continue
            sample = sample + start
            with self._autocast(pts.device):
                rgb_kept, sigma_kept = field(pts[ray, sample][:, None], None if viewdirs is None else viewdirs[ray])
            sigma[ray, sample] = sigma_kept[:, 0].float()
            rgb[ray, sample] = rgb_kept[:, 0].float()
            alpha = alpha_from_deltas(sigma[:, start:start + step], deltas[:, start:start + step])
            light = light * passing(alpha).prod(dim=-1)
            evaluated += piece.sum(dim=-1)
        return rgb, sigma, evaluated

    def _shade(self, field: nn.Module, rays_o: Tensor, rays_d: Tensor, viewdirs: Tensor | None, z_vals: Tensor,
               raw_noise_std: float, generator: torch.Generator | None,
               occupied: Tensor | None = None) -> dict[str, Tensor]:
        """Evaluate `field` at the (kept) samples of all rays in one batched call, then composite. `occupied`: the
        grid's mask of these samples when the caller has it already."""
        pts = rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., None]          # [R, S, 3] fp32
        keep = self._kept(field, pts, z_vals, rays_d, occupied)
        if keep is not None and self.render_early_stop > 0 and not torch.is_grad_enabled():
            rgb, sigma, evaluated = self._query_front_to_back(field, pts, viewdirs, keep, z_vals, rays_d)
        else:
            rgb, sigma, evaluated = self._query(field, pts, viewdirs, keep)
        out = composite(sigma, rgb, z_vals, rays_d, white_bkgd=self.white_bkgd,
                        raw_noise_std=raw_noise_std, generator=generator)
        return {**out, "samples": evaluated}

    def _march_occupancy(self, rays_o: Tensor, rays_d: Tensor, z: Tensor) -> Tensor | None:
        """The grid's mask [R, S] of the march `z [R, S]`, or None when more of its samples lie in occupied cells
        than plain sampling evaluates (N_samples per ray). A young field, still dense everywhere (the paper's 8x256
        MLP kept every cell occupied after 25 s of training on an H200: benchmarks/RESULTS.md, "GPU"), would
        otherwise make the finer march cost more than no grid at all. One host sync; the mask is reused by the
        coarse pass."""
        occupied = self.grid.occupied_at(rays_o[:, None, :] + rays_d[:, None, :] * z[..., None])
        return None if self._over_budget(occupied, rays_o.shape[0]) else occupied

    def _over_budget(self, occupied: Tensor, n_rays: int) -> bool:
        """Whether a march's occupied samples (`occupied`, the grid's mask) outnumber what plain sampling evaluates
        for `n_rays` rays (N_samples each): the march's cost rule. One host sync."""
        return int(occupied.sum()) > n_rays * self.N_samples

    def _crossing(self, rays_o: Tensor, rays_d: Tensor, z: Tensor) -> tuple[Tensor, slice, Tensor]:
        """(indices [R'] of the rays that cross a box of occupied cells, the columns of `z [R, S]` that may lie in
        one for any of them, the grid's mask [R', W] of those samples). Every other sample is in an empty cell, so
        it has zero density and its ray composites as if it were not there: a ray that crosses no box renders the
        background, and the columns before the window (alpha 0, transmittance unchanged) or after it add nothing.
        The window keeps one column past the last one that may be inside (an empty sample), so the last kept
        sample's delta is the one of the whole march. The grid is looked up only at the samples between where a
        ray enters its first box and leaves its last (the boxes widened by a quarter cell against rounding). A few
        host syncs."""
        lo, hi = self.grid.occupied_boxes()
        none_cross = (torch.zeros(0, dtype=torch.long, device=z.device), slice(0, 0),
                      torch.zeros(0, 0, dtype=torch.bool, device=z.device))
        if len(lo) == 0:
            return none_cross
        margin = 0.25 * 2.0 * self.grid.bound / self.grid.resolution
        t_enter, t_exit = ray_box_interval(rays_o, rays_d, lo - margin, hi + margin)
        index = torch.nonzero((t_exit >= t_enter) & (t_exit >= z[:, 0]) & (t_enter <= z[:, -1]))[:, 0]
        zs = z[index]
        inside = (zs >= t_enter[index, None]) & (zs <= t_exit[index, None])
        columns = torch.nonzero(inside.any(dim=0))[:, 0]
        if len(columns) == 0:
            return none_cross
        window = slice(int(columns[0]), min(int(columns[-1]) + 2, z.shape[1]))
        inside = inside[:, window]
        ray, column = torch.nonzero(inside, as_tuple=True)
        pts = rays_o[index[ray]] + rays_d[index[ray]] * zs[:, window][ray, column][:, None]
        occupied = torch.zeros_like(inside).index_put((ray, column), self.grid.occupied_at(pts))
        return index, window, occupied

    def render_rays(self, rays_o: Tensor, rays_d: Tensor, *, perturb: bool | float = False,
                    raw_noise_std: float = 0.0, generator: torch.Generator | None = None,
                    march_samples: int | None = None) -> dict[str, Tensor]:
        """Render rays [..., 3] -> {"rgb", "rgb_coarse" [..., 3], "depth", "acc", "samples" [...]} (float32).

        "rgb"/"depth"/"acc" come from the fine pass when N_importance > 0; "samples" counts the MLP
        evaluations of each ray (both passes; fewer than the samples with the grid). Differentiable w.r.t. the
        fields and w.r.t. rays_o/rays_d (the fine sample positions are treated as constants).
        `generator` drives the stratified jitter, importance sampling and density noise. `march_samples`
        replaces the coarse march of an active grid (default: the training march, march_samples).

        With the grid, the training march (march_samples not given) never evaluates more samples than plain
        sampling: when more of its samples lie in occupied cells than N_samples per ray, the coarse pass marches
        the N_samples depths of plain NeRF instead (skipping the empty ones all the same); the fine pass then
        evaluates at most N_samples + N_importance per ray, as plain NeRF does. An explicit `march_samples` (the
        whole-image march, render_samples) is kept as asked.

        With the grid and no fine pass or density noise, only the rays that cross a box of occupied cells are
        marched, over the depths that may lie in one (_crossing): the same result for a fraction of the grid
        look-ups (most of a whole-image render's time on a CPU, where the object covers a fifth of the image).
        """
        batch_shape = rays_o.shape[:-1]
        rays_o = rays_o.reshape(-1, 3).float()
        rays_d = rays_d.reshape(-1, 3).float()
        n_rays = rays_o.shape[0]
        perturb = bool(perturb)
        n_coarse = (march_samples or self.march_samples) if self._skipping else self.N_samples
        z = stratified_samples(self.near, self.far, n_coarse, n_rays, perturb=perturb,
                               device=rays_o.device, generator=generator)
        rule = self._skipping and march_samples is None and n_coarse > self.N_samples    # the march's cost rule
        if not (self._skipping and self.fine is None and raw_noise_std == 0.0):
            occupied = self._march_occupancy(rays_o, rays_d, z) if rule else None
            if rule and occupied is None:
                z = self._plain_march(n_rays, perturb, rays_o.device, generator)
            out = self._render_marched(rays_o, rays_d, z, occupied, perturb, raw_noise_std, generator)
            return {k: v.reshape(*batch_shape, *v.shape[1:]) for k, v in out.items()}
        index, window, occupied = self._crossing(rays_o, rays_d, z)
        if rule and self._over_budget(occupied, n_rays):
            z = self._plain_march(n_rays, perturb, rays_o.device, generator)
            index, window, occupied = self._crossing(rays_o, rays_d, z)
        out = {"rgb": rays_o.new_full((n_rays, 3), self.background), "depth": rays_o.new_zeros(n_rays),
               "acc": rays_o.new_zeros(n_rays), "samples": rays_o.new_zeros(n_rays)}
        if len(index) > 0:
            part = self._render_marched(rays_o[index], rays_d[index], z[index, window], occupied, perturb,
                                        raw_noise_std, generator)
            out = {k: v.index_put((index,), part[k]) for k, v in out.items()}
        out["rgb_coarse"] = out["rgb"]
        return {k: v.reshape(*batch_shape, *v.shape[1:]) for k, v in out.items()}

    def _plain_march(self, n_rays: int, perturb: bool, device: torch.device,
                     generator: torch.Generator | None) -> Tensor:
        """The N_samples depths of plain NeRF [n_rays, N_samples] (the march's cost rule falls back to them)."""
        return stratified_samples(self.near, self.far, self.N_samples, n_rays, perturb=perturb, device=device,
                                  generator=generator)

    def _render_marched(self, rays_o: Tensor, rays_d: Tensor, z: Tensor, occupied: Tensor | None, perturb: bool,
                        raw_noise_std: float, generator: torch.Generator | None) -> dict[str, Tensor]:
        """render_rays on flat rays whose coarse march `z [R, S]` is settled (`occupied`: the grid's mask of it,
        when known)."""
        viewdirs = None
        if self.coarse.use_viewdirs:
            viewdirs = rays_d / torch.linalg.vector_norm(rays_d, dim=-1, keepdim=True)
        coarse = self._shade(self.coarse, rays_o, rays_d, viewdirs, z, raw_noise_std, generator, occupied)
        out = {"rgb_coarse": coarse["rgb"], "samples": coarse["samples"]}
        final = coarse
        if self.fine is not None:
            with torch.no_grad():
                mids = 0.5 * (z[:, 1:] + z[:, :-1])
                z_fine = sample_pdf(mids, coarse["weights"][:, 1:-1].detach(), self.N_importance,
                                    det=not perturb, generator=generator)
                z_all = merge_samples(z, z_fine)
            final = self._shade(self.fine, rays_o, rays_d, viewdirs, z_all, raw_noise_std, generator)
            out["samples"] = out["samples"] + final["samples"]
        out.update(rgb=final["rgb"], depth=final["depth"], acc=final["acc"])
        return out

    @torch.no_grad()
    def render_image(self, c2w: Tensor | np.ndarray, height: int, width: int, intrinsics: Intrinsics,
                     chunk: int | None = None) -> Tensor:
        """Render one view (no jitter, no noise, no grad) in chunks of rays -> [H, W, 3] float32 in [0, 1]; with an
        active grid the march has render_samples steps (the images that are scored and compared)."""
        return self.render_buffers(c2w, height, width, intrinsics, chunk)["rgb"]

    @torch.no_grad()
    def render_buffers(self, c2w: Tensor | np.ndarray, height: int, width: int, intrinsics: Intrinsics,
                       chunk: int | None = None) -> dict[str, Tensor]:
        """render_image's view with its depth and opacity: {"rgb" [H, W, 3] in [0, 1], "depth" [H, W] (expected
        depth along the optical axis, weighted by opacity: divide by acc for the surface), "acc" [H, W]}."""
        device = self.device
        c2w = torch.as_tensor(np.asarray(c2w) if not torch.is_tensor(c2w) else c2w,
                              dtype=torch.float32, device=device)
        rays_o, rays_d = image_rays(c2w, height, width, intrinsics)
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        chunk = chunk or self.chunk
        # render_samples, when set, is a finer march asked for on purpose; otherwise the training march and its rule
        march = self.image_march_samples if self.image_march_samples != self.march_samples else None
        parts = [self.render_rays(rays_o[i:i + chunk], rays_d[i:i + chunk], march_samples=march)
                 for i in range(0, rays_o.shape[0], chunk)]
        return {"rgb": torch.cat([p["rgb"] for p in parts]).reshape(height, width, 3).clamp(0.0, 1.0),
                "depth": torch.cat([p["depth"] for p in parts]).reshape(height, width),
                "acc": torch.cat([p["acc"] for p in parts]).reshape(height, width)}
