"""Occupancy grid for empty-space skipping (Instant-NGP, Mueller et al. 2022, app. E; nerfacc's OccGridEstimator).

A cube of resolution^3 cells over [-bound, bound]^3 keeps, per cell, a decaying maximum of the field's
density; a cell is occupied when that value exceeds a threshold. The renderer evaluates the field only at
samples inside occupied cells; every other sample (and every sample outside the cube) has zero density.

Update rule, called by the trainer every `occupancy_update_every` steps once the warm-up is over (until
its first update the grid is inactive and the renderer samples as plain NeRF does):
  1. every cell decays: v <- decay * v (Instant-NGP: 0.95);
  2. candidate cells take v <- max(v, density at a uniformly random point inside the cell): all cells at
     the first update; afterwards a quarter of all cells drawn uniformly plus as many drawn among the
     occupied ones (Instant-NGP, nerfacc);
  3. occupied = v > min(threshold, mean of the positive values) (nerfacc: the mean keeps a young field,
     whose densities are all still small, from emptying the grid).
The threshold is a density: the one at which one marching step is `opacity` opaque (Instant-NGP: 0.01),
i.e. -ln(1 - opacity) / step.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from common.errors import PadError

DensityFn = Callable[[Tensor], Tensor]          # points [N, 3] -> density [N] (>= 0)


def cell_index(pts: Tensor, bound: float, resolution: int) -> tuple[Tensor, Tensor]:
    """(flat cell index [...] long, inside the cube [...] bool) of points `pts [..., 3]`.
    Cells are numbered x-major: ((i * res) + j) * res + k; points outside get a clamped index."""
    ijk = torch.floor((pts + bound) * (resolution / (2.0 * bound))).long()
    inside = ((ijk >= 0) & (ijk < resolution)).all(dim=-1)
    ijk = ijk.clamp(0, resolution - 1)
    return (ijk[..., 0] * resolution + ijk[..., 1]) * resolution + ijk[..., 2], inside


def cell_points(flat: Tensor, offsets: Tensor, bound: float, resolution: int) -> Tensor:
    """World points [N, 3] at `offsets [N, 3]` (in [0, 1)^3; 0.5 = the centre) inside the cells `flat [N]`."""
    ijk = torch.stack((flat // (resolution * resolution), (flat // resolution) % resolution, flat % resolution), -1)
    return (ijk.to(offsets.dtype) + offsets) * (2.0 * bound / resolution) - bound


def occupied_groups(mask: np.ndarray, max_boxes: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Cell-index boxes (lo [K, 3] inclusive, hi [K, 3] exclusive) around the connected groups of True cells of
    `mask [R, R, R]` (26 neighbours, scipy.ndimage.label); beyond `max_boxes` groups the smallest ones share one
    box around all of them (still holding every True cell). K = 0 for an empty mask."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    slices = ndimage.find_objects(labels)
    lo = np.array([[d.start for d in box] for box in slices], dtype=np.float64).reshape(-1, 3)
    hi = np.array([[d.stop for d in box] for box in slices], dtype=np.float64).reshape(-1, 3)
    if count > max_boxes:
        order = np.argsort(-np.bincount(labels.ravel(), minlength=count + 1)[1:], kind="stable")
        kept, rest = order[:max_boxes - 1], order[max_boxes - 1:]
        lo = np.concatenate([lo[kept], lo[rest].min(axis=0, keepdims=True)])
        hi = np.concatenate([hi[kept], hi[rest].max(axis=0, keepdims=True)])
    return lo, hi


def density_threshold(opacity: float, step: float) -> float:
    """The density at which a marching step of length `step` has opacity `opacity`: -ln(1 - opacity) / step."""
    return -math.log1p(-opacity) / step


def binarize(values: Tensor, threshold: float) -> Tensor:
    """occupied = values > min(threshold, mean of the positive values); no host sync."""
    positive = values > 0
    mean = (values * positive).sum() / positive.sum().clamp_min(1)
    return values > torch.clamp(mean, max=threshold)


class OccupancyGrid(nn.Module):
    """The grid's state: `values [res^3]` (decaying max density) and `occupied [res^3]` (bool).

    Both are non-persistent buffers: they follow the renderer's device but stay out of its state_dict,
    so model weights load with the grid on or off; the trainer saves `state()` beside them.
    """

    def __init__(self, resolution: int, bound: float):
        super().__init__()
        self.resolution, self.bound = int(resolution), float(bound)
        n = self.resolution ** 3
        self.register_buffer("values", torch.zeros(n), persistent=False)
        self.register_buffer("occupied", torch.ones(n, dtype=torch.bool), persistent=False)
        self.updates = 0
        self._boxes = None          # (digest of the occupied cells, their boxes): occupied_boxes' cache

    @property
    def n_cells(self) -> int:
        return self.resolution ** 3

    @property
    def active(self) -> bool:
        """Whether the grid holds information (has been updated or filled at least once)."""
        return self.updates > 0

    def occupied_at(self, pts: Tensor) -> Tensor:
        """[...] bool: whether each point of `pts [..., 3]` lies in an occupied cell (False outside the cube)."""
        flat, inside = cell_index(pts, self.bound, self.resolution)
        return self.occupied[flat] & inside

    def occupied_boxes(self) -> tuple[Tensor, Tensor]:
        """World corners (lo [K, 3], hi [K, 3]) of boxes of whole cells that together hold every occupied cell: one
        around each connected group (26 neighbours), so that a stray occupied cell (a floater) gets a box of its
        own instead of stretching one box over the cube; past 128 groups, the smallest share one box. K = 0
        when no cell is occupied. Every point `occupied_at` calls occupied lies in one of them. Recomputed only
        when the occupied cells change (a digest of them; one host copy of the mask)."""
        mask = self.occupied.detach().cpu().numpy().reshape((self.resolution,) * 3)
        key = (mask.shape, hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest())
        if self._boxes is None or self._boxes[0] != key:
            lo, hi = occupied_groups(mask)
            size = 2.0 * self.bound / self.resolution
            self._boxes = key, (torch.as_tensor(lo * size - self.bound, dtype=torch.float32),
                                torch.as_tensor(hi * size - self.bound, dtype=torch.float32))
        lo, hi = self._boxes[1]
        return lo.to(self.occupied.device), hi.to(self.occupied.device)

    def occupied_fraction(self) -> float:
        """Share of occupied cells (one host sync: for reports, not for the training loop)."""
        return float(self.occupied.float().mean())

    def _max_density(self, density_fn: DensityFn, cells: Tensor, offsets: Tensor, chunk: int) -> Tensor:
        pts = cell_points(cells, offsets, self.bound, self.resolution)
        return torch.cat([density_fn(pts[i:i + chunk]).float() for i in range(0, len(pts), chunk)])

    def _candidates(self, generator: torch.Generator | None) -> Tensor:
        device = self.values.device
        if self.updates == 0:
            return torch.arange(self.n_cells, device=device)
        n = self.n_cells // 4
        uniform = torch.randint(self.n_cells, (n,), device=device, generator=generator)
        occupied = torch.nonzero(self.occupied)[:, 0]            # one host sync per update
        if len(occupied) == 0:
            return uniform
        pick = torch.randint(len(occupied), (min(n, len(occupied)),), device=device, generator=generator)
        return torch.cat([uniform, occupied[pick]])

    @torch.no_grad()
    def update(self, density_fn: DensityFn, *, threshold: float, decay: float,
               generator: torch.Generator | None = None, chunk: int = 1 << 16) -> None:
        """One update (module docstring: decay, max with the density at a random point of each candidate
        cell, re-threshold). `generator` draws the candidate cells and the points."""
        cells = self._candidates(generator)
        offsets = torch.rand(len(cells), 3, device=cells.device, generator=generator)
        density = self._max_density(density_fn, cells, offsets, chunk)
        self.values.mul_(decay).scatter_reduce_(0, cells, density, reduce="amax")
        self.occupied.copy_(binarize(self.values, threshold))
        self.updates += 1

    @torch.no_grad()
    def fill(self, density_fn: DensityFn, *, threshold: float, points_per_cell: int = 4, seed: int = 0,
             chunk: int = 1 << 16) -> None:
        """Rebuild the grid from a trained field: each cell's value is the max density over its centre and
        `points_per_cell` random points (seeded, so the same field gives the same grid), then thresholded."""
        device = self.values.device
        generator = torch.Generator(device=device).manual_seed(seed)
        cells = torch.arange(self.n_cells, device=device)
        values = self._max_density(density_fn, cells, torch.full((self.n_cells, 3), 0.5, device=device), chunk)
        for _ in range(points_per_cell):
            offsets = torch.rand(self.n_cells, 3, device=device, generator=generator)
            values = torch.maximum(values, self._max_density(density_fn, cells, offsets, chunk))
        self.values.copy_(values)
        self.occupied.copy_(binarize(self.values, threshold))
        self.updates += 1

    def state(self) -> dict:
        """What a checkpoint needs to resume the grid exactly."""
        return {"resolution": self.resolution, "bound": self.bound, "updates": self.updates,
                "values": self.values.detach().clone(), "occupied": self.occupied.detach().clone()}

    def matches(self, state: dict | None) -> bool:
        """Whether a saved `state()` has this grid's resolution and bound."""
        return bool(state) and state.get("resolution") == self.resolution and state.get("bound") == self.bound

    def load_state(self, state: dict, source: str) -> None:
        """Restore a `state()`; PadError naming `source` when its resolution or bound differ."""
        if not self.matches(state):
            raise PadError(f"{source}: its occupancy grid is {state.get('resolution')}^3 cells over "
                           f"+-{state.get('bound')}, the options ask for {self.resolution}^3 over +-{self.bound}; "
                           f"use the training settings (occupancy_resolution, occupancy_bound) or retrain")
        self.values.copy_(state["values"].to(self.values.device))
        self.occupied.copy_(state["occupied"].to(self.occupied.device))
        self.updates = int(state["updates"])
