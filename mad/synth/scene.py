"""The LEGO-like object: coloured axis-aligned boxes ("bricks" with studs), stacked irregularly from the
seed and scaled into the unit sphere; defects edit a Scene (remove a brick, add boxes, add a decal)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SCENE_STREAM = 7919

# LEGO-ish albedos (kept <= 0.95 per channel so the object never renders as pure white)
PALETTE = np.array([
    [0.80, 0.10, 0.08],   # red
    [0.05, 0.30, 0.75],   # blue
    [0.95, 0.78, 0.05],   # yellow
    [0.10, 0.55, 0.20],   # green
    [0.95, 0.45, 0.05],   # orange
    [0.34, 0.36, 0.38],   # dark grey
    [0.66, 0.68, 0.70],   # light grey
    [0.80, 0.70, 0.50],   # tan
    [0.60, 0.80, 0.10],   # lime
    [0.20, 0.65, 0.90],   # azure
    [0.45, 0.20, 0.60],   # purple
    [0.90, 0.45, 0.65],   # pink
])

# brick geometry in stud units (pitch 1)
_BRICK_H, _PLATE_H = 1.2, 0.4
_STUD_W, _STUD_H = 0.5, 0.18
_FOOTPRINTS = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4), (1, 6), (2, 6)]
_FOOTPRINT_P = np.array([1, 3, 2, 3, 3, 2, 3, 1, 1], dtype=float)
_HALF_WINDOW = 3  # footprints stay within [-3, 3]^2 stud cells: a compact object that fills its sphere


@dataclass(frozen=True, eq=False)
class Decal:
    """A flat coloured blob on one face of one box: the union of discs (centres on the face plane)."""
    box: int
    axis: int              # 0/1/2: face normal axis
    sign: int              # +1: the box's high face, -1: its low face
    centers: np.ndarray    # [K,3]
    radii: np.ndarray      # [K]
    color: np.ndarray      # [3]


@dataclass(frozen=True, eq=False)
class Scene:
    lo: np.ndarray         # [B,3] box minimum corners (world units, object inside the unit sphere)
    hi: np.ndarray         # [B,3] box maximum corners
    color: np.ndarray      # [B,3] albedo in [0,1]
    brick: np.ndarray      # [B] int: brick id of each box (studs share their brick's id), -1 for added parts
    kind: np.ndarray       # [B] int: 0 brick body, 1 stud, 2 burr, 3 detail part (mad.synth.detail)
    removable: tuple       # brick ids that a 'Missing' defect may remove
    decals: tuple = ()
    texture_seed: int | None = None  # None: one flat albedo per box; else the seed of mad.synth.texture
    detail_seed: int | None = None   # None: no printed marks, no specular; else the seed of mad.synth.detail

    @property
    def n_boxes(self) -> int:
        return int(self.lo.shape[0])

    def without_brick(self, brick_id: int) -> Scene:
        keep = self.brick != brick_id
        return replace(self, lo=self.lo[keep], hi=self.hi[keep], color=self.color[keep],
                       brick=self.brick[keep], kind=self.kind[keep], decals=())

    def with_boxes(self, lo: np.ndarray, hi: np.ndarray, color: np.ndarray, kind: int = 2) -> Scene:
        n = len(lo)
        return replace(self, lo=np.concatenate([self.lo, lo]), hi=np.concatenate([self.hi, hi]),
                       color=np.concatenate([self.color, color]),
                       brick=np.concatenate([self.brick, np.full(n, -1)]),
                       kind=np.concatenate([self.kind, np.full(n, kind)]))

    def with_decal(self, decal: Decal) -> Scene:
        return replace(self, decals=(*self.decals, decal))


def make_scene(seed: int, textured: bool = False) -> Scene:
    """A LEGO-like object: 4-7 layers of irregularly stacked coloured bricks with studs, centred and
    scaled so every box corner lies within radius 0.98 of the origin. `textured` adds the view-consistent
    surface detail of mad.synth.texture; the geometry and base colours are the same. (The fine structure of
    the detail mode is added on top by mad.synth.detail.class_scene.)"""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SCENE_STREAM]))
    n_layers = int(rng.integers(4, 8))
    bricks = []  # (x0, y0, w, d, layer)
    layer_cells: list[set] = []
    layer_z = [0.0]
    layer_h = []
    for layer in range(n_layers):
        h = _BRICK_H if (layer == 0 or rng.random() < 0.75) else _PLATE_H
        layer_h.append(h)
        layer_z.append(layer_z[-1] + h)
        cells: set = set()
        target = int(rng.integers(2, 5)) if layer == 0 else int(rng.integers(1, 5))
        placed = 0
        for _ in range(60):
            if placed >= target:
                break
            w, d = _FOOTPRINTS[int(rng.choice(len(_FOOTPRINTS), p=_FOOTPRINT_P / _FOOTPRINT_P.sum()))]
            if rng.random() < 0.5:
                w, d = d, w
            if layer == 0:
                if not cells:
                    x0, y0 = -(w // 2), -(d // 2)
                else:  # touch or overlap the footprint of the existing base bricks
                    ax, ay = sorted(cells)[int(rng.integers(len(cells)))]
                    x0 = ax - int(rng.integers(0, w)) + int(rng.integers(-1, 2))
                    y0 = ay - int(rng.integers(0, d)) + int(rng.integers(-1, 2))
            else:  # rest on a supporting cell of the layer below
                below = sorted(layer_cells[layer - 1])
                sx, sy = below[int(rng.integers(len(below)))]
                x0, y0 = sx - int(rng.integers(0, w)), sy - int(rng.integers(0, d))
            fp = {(x0 + i, y0 + j) for i in range(w) for j in range(d)}
            if fp & cells or x0 < -_HALF_WINDOW or y0 < -_HALF_WINDOW \
                    or x0 + w > _HALF_WINDOW or y0 + d > _HALF_WINDOW:
                continue
            if layer == 0 and cells and not _touches(fp, cells):
                continue
            cells |= fp
            bricks.append((x0, y0, w, d, layer))
            placed += 1
        layer_cells.append(cells)

    lo, hi, color, brick_id, kind = [], [], [], [], []
    colors = []
    for b, (x0, y0, w, d, layer) in enumerate(bricks):
        z0, z1 = layer_z[layer], layer_z[layer] + layer_h[layer]
        c = PALETTE[int(rng.integers(len(PALETTE)))]
        colors.append(c)
        lo.append([x0, y0, z0]), hi.append([x0 + w, y0 + d, z1]), color.append(c), brick_id.append(b), kind.append(0)
        for i in range(w):
            for j in range(d):
                cx, cy = x0 + i + 0.5, y0 + j + 0.5
                lo.append([cx - _STUD_W / 2, cy - _STUD_W / 2, z1])
                hi.append([cx + _STUD_W / 2, cy + _STUD_W / 2, z1 + _STUD_H])
                color.append(c), brick_id.append(b), kind.append(1)
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    center = 0.5 * (lo.min(0) + hi.max(0))
    corners = np.stack([lo, hi], 1)  # [B,2,3]
    idx = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    all_corners = np.stack([corners[:, idx[:, k], k] for k in range(3)], -1) - center  # [B,8,3]
    scale = 0.98 / np.linalg.norm(all_corners, axis=-1).max()
    lo, hi = (lo - center) * scale, (hi - center) * scale

    # removable bricks: not on the base layer, nothing resting on them, not the largest brick
    areas = np.array([w * d for (_, _, w, d, _) in bricks])
    largest = int(np.argmax(areas))
    removable = []
    for b, (x0, y0, w, d, layer) in enumerate(bricks):
        fp = {(x0 + i, y0 + j) for i in range(w) for j in range(d)}
        covered = layer + 1 < n_layers and bool(fp & layer_cells[layer + 1])
        if layer > 0 and not covered and b != largest:
            removable.append(b)
    if not removable:
        removable = [b for b, br in enumerate(bricks) if br[4] > 0 and b != largest] or [len(bricks) - 1]
    return Scene(lo=lo, hi=hi, color=np.array(color, dtype=np.float64), brick=np.array(brick_id),
                 kind=np.array(kind), removable=tuple(removable), texture_seed=int(seed) if textured else None)


def _touches(fp: set, cells: set) -> bool:
    return any((x + dx, y + dy) in cells for (x, y) in fp for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
