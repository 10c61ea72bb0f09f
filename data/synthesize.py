"""Synthetic MAD-format generator: a LEGO-like brick object rendered by analytic ray casting.

    python -m data.synthesize --out data/synthetic --class_name demo --seed 0

writes, in exactly the MAD layout (see data/mad.py),
```
<out>/<class>/transforms.json                   train frames only ("train/good/<i>.png", c2w)
<out>/<class>/train/good/<i>.png                RGB on white
<out>/<class>/test/good/<i>.png
<out>/<class>/test/{Burrs,Missing,Stains}/<i>.png
<out>/<class>/ground_truth/{Burrs,Missing,Stains}/<i>_mask.png   uint8 0/255
<out>/<class>/test_poses.json                   true c2w of every test image (only for pose-accuracy checks)
<out>/<class>/synth_stats.json                  counts, options, defect-mask area statistics
```
Scene: coloured axis-aligned boxes ("bricks" with studs), stacked irregularly from the seed and scaled
into the unit sphere. Shading: Lambert from two fixed world-space directional lights + ambient, no
specular (view independent), on a pure white background, anti-aliased by supersampling (s x s
sub-pixel samples placed symmetrically around each pixel centre).

Cameras (Blender / NeRF-synthetic convention): on a sphere of radius `radius` (default 4) looking at the
origin with world up = +z, no roll; elevation in [elev_min, elev_max] (default [-30, 80] degrees),
azimuth in [0, 360). Training views lie on a Fibonacci spiral over that band (uniform in area), test
views at independent random poses. The object lies inside the unit sphere, so near=2 / far=6 contain it.
Pixel (row j, column i) casts d = ((i + 0.5 - W/2)/f, -(j + 0.5 - H/2)/f, -1) in the camera frame,
rays_d = R @ d, rays_o = c2w[:3, 3], exactly as nerf/rays.py.

Defects (each defect image: its own random pose and its own random defect instance):
* Stains  - a coloured blob decal on a brick face that is visible from that pose;
* Burrs   - a few small darker boxes protruding from a visible brick face;
* Missing - one top-level brick (and its studs) removed, never the largest one or a base brick.
The mask is pixel exact: pixels whose final uint8 colour differs by more than `mask_tolerance`
(default 1/255) between the defect render and the normal render at the same pose. Views whose mask has
fewer than max(1, min_mask_frac * H * W) pixels are rejected and a new pose is drawn.

Determinism: every image uses its own RNG derived from (seed, split, index), so the same seed and
options give byte-identical files whatever the number of workers.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from common.errors import DataError, exit_on_user_error

DEFECT_TYPES = ("Burrs", "Missing", "Stains")
BLENDER_CAMERA_ANGLE_X = 0.6911112070083618
GENERATOR_VERSION = 1

# split codes used to derive per-image random streams
_SPLIT_CODE = {"train": 0, "good": 1, "Burrs": 2, "Missing": 3, "Stains": 4}
_SCENE_STREAM = 7919
_TRAIN_STREAM = 104729

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
STAIN_COLORS = np.array([
    [0.22, 0.13, 0.06],   # oil brown
    [0.06, 0.06, 0.06],   # soot
    [0.62, 0.28, 0.08],   # rust
    [0.10, 0.12, 0.45],   # ink
    [0.93, 0.93, 0.88],   # paint
    [0.35, 0.45, 0.15],   # mould
    [0.75, 0.10, 0.50],   # magenta
])
# lights: the six axis-aligned face orientations all get different brightness
_L1 = np.array([0.35, -0.55, 0.76]) / np.linalg.norm([0.35, -0.55, 0.76])
_L2 = np.array([-0.60, 0.30, -0.20]) / np.linalg.norm([-0.60, 0.30, -0.20])
AMBIENT, K1, K2 = 0.30, 0.70, 0.35

# brick geometry in stud units (pitch 1)
_BRICK_H, _PLATE_H = 1.2, 0.4
_STUD_W, _STUD_H = 0.5, 0.18
_FOOTPRINTS = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4), (1, 6), (2, 6)]
_FOOTPRINT_P = np.array([1, 3, 2, 3, 3, 2, 3, 1, 1], dtype=float)
_HALF_WINDOW = 3  # footprints stay within [-3, 3]^2 stud cells: a compact object that fills its sphere


# ============================================================================ scene

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
    kind: np.ndarray       # [B] int: 0 brick body, 1 stud, 2 burr
    removable: tuple       # brick ids that a 'Missing' defect may remove
    decals: tuple = ()

    @property
    def n_boxes(self) -> int:
        return int(self.lo.shape[0])

    def without_brick(self, brick_id: int) -> "Scene":
        keep = self.brick != brick_id
        return replace(self, lo=self.lo[keep], hi=self.hi[keep], color=self.color[keep],
                       brick=self.brick[keep], kind=self.kind[keep], decals=())

    def with_boxes(self, lo: np.ndarray, hi: np.ndarray, color: np.ndarray, kind: int = 2) -> "Scene":
        n = len(lo)
        return replace(self, lo=np.concatenate([self.lo, lo]), hi=np.concatenate([self.hi, hi]),
                       color=np.concatenate([self.color, color]),
                       brick=np.concatenate([self.brick, np.full(n, -1)]),
                       kind=np.concatenate([self.kind, np.full(n, kind)]))

    def with_decal(self, decal: Decal) -> "Scene":
        return replace(self, decals=self.decals + (decal,))


def make_scene(seed: int) -> Scene:
    """A LEGO-like object: 4-7 layers of irregularly stacked coloured bricks with studs, centred and
    scaled so every box corner lies within radius 0.98 of the origin."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SCENE_STREAM]))
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
                 kind=np.array(kind), removable=tuple(removable))


def _touches(fp: set, cells: set) -> bool:
    return any((x + dx, y + dy) in cells for (x, y) in fp for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))


# ============================================================================ cameras

def look_at_pose(position: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world (OpenGL: camera looks down -z, y up) at `position` looking at `target`."""
    position = np.asarray(position, dtype=np.float64)
    back = position - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    right /= np.linalg.norm(right)
    upv = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, upv, back, position
    return c2w


def spherical_pose(azimuth: float, elevation: float, radius: float) -> np.ndarray:
    ce = math.cos(elevation)
    pos = radius * np.array([ce * math.cos(azimuth), ce * math.sin(azimuth), math.sin(elevation)])
    return look_at_pose(pos)


def train_poses(n: int, radius: float, elev_range_deg=(-30.0, 80.0), seed: int = 0) -> np.ndarray:
    """n poses on a Fibonacci spiral over the elevation band (uniform in area), random azimuth offset."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TRAIN_STREAM]))
    z0, z1 = (math.sin(math.radians(e)) for e in elev_range_deg)
    offset = rng.uniform(0.0, 2 * math.pi)
    golden = math.pi * (3.0 - math.sqrt(5.0))
    poses = []
    for k in range(n):
        z = z0 + (k + 0.5) / n * (z1 - z0)
        poses.append(spherical_pose(offset + k * golden, math.asin(z), radius))
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def random_pose(rng: np.random.Generator, radius: float, elev_range_deg=(-30.0, 80.0)) -> np.ndarray:
    """A pose uniform in area over the elevation band."""
    z0, z1 = (math.sin(math.radians(e)) for e in elev_range_deg)
    z = rng.uniform(z0, z1)
    return spherical_pose(rng.uniform(0.0, 2 * math.pi), math.asin(z), radius)


def focal_from_angle(width: int, camera_angle_x: float) -> float:
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


# ============================================================================ rendering

@dataclass
class _Buffers:
    """Per (super-sampled) pixel ray-cast results."""
    t: np.ndarray          # [h,w] depth along -z (inf for background)
    box: np.ndarray        # [h,w] int box index, -1 for background
    axis: np.ndarray       # [h,w] int normal axis of the hit face
    sign: np.ndarray       # [h,w] int +-1 normal direction of the hit face
    dirs: np.ndarray       # [h,w,3] world ray directions (unnormalised, camera z = -1)
    origin: np.ndarray     # [3]


def camera_dirs(height: int, width: int, focal: float) -> np.ndarray:
    """[H,W,3] camera-frame directions through pixel centres (the shared convention)."""
    i = (np.arange(width, dtype=np.float64) + 0.5 - width / 2) / focal
    j = -(np.arange(height, dtype=np.float64) + 0.5 - height / 2) / focal
    d = np.empty((height, width, 3))
    d[..., 0] = i[None, :]
    d[..., 1] = j[:, None]
    d[..., 2] = -1.0
    return d


def _screen_rects(scene: Scene, c2w: np.ndarray, height: int, width: int, focal: float) -> np.ndarray:
    """Conservative pixel rectangles [B,4] (j0, j1, i0, i1) covering each box's projection."""
    rot, origin = c2w[:3, :3], c2w[:3, 3]
    idx = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    corners = np.stack([scene.lo, scene.hi], 1)
    pts = np.stack([corners[:, idx[:, k], k] for k in range(3)], -1)  # [B,8,3]
    cam = (pts - origin) @ rot  # R^T (p - o)
    depth = -cam[..., 2]
    rects = np.empty((len(pts), 4), dtype=np.int64)
    behind = (depth <= 1e-6).any(1)
    safe = np.where(depth > 1e-6, depth, 1.0)
    ii = focal * cam[..., 0] / safe + width / 2 - 0.5
    jj = height / 2 - 0.5 - focal * cam[..., 1] / safe
    rects[:, 0] = np.floor(jj.min(1)) - 1
    rects[:, 1] = np.ceil(jj.max(1)) + 2
    rects[:, 2] = np.floor(ii.min(1)) - 1
    rects[:, 3] = np.ceil(ii.max(1)) + 2
    rects[behind] = (0, height, 0, width)
    rects[:, 0:2] = np.clip(rects[:, 0:2], 0, height)
    rects[:, 2:4] = np.clip(rects[:, 2:4], 0, width)
    return rects


def _raycast(scene: Scene, c2w: np.ndarray, height: int, width: int, focal: float) -> _Buffers:
    c2w = np.asarray(c2w, dtype=np.float64)
    dirs = camera_dirs(height, width, focal) @ c2w[:3, :3].T
    origin = c2w[:3, 3].copy()
    safe = np.where(dirs == 0.0, 1e-300, dirs)
    inv = 1.0 / safe
    t_buf = np.full((height, width), np.inf)
    box_buf = np.full((height, width), -1, dtype=np.int64)
    axis_buf = np.zeros((height, width), dtype=np.int64)
    rects = _screen_rects(scene, c2w, height, width, focal)
    lo_rel, hi_rel = scene.lo - origin, scene.hi - origin
    for b in range(scene.n_boxes):
        j0, j1, i0, i1 = rects[b]
        if j1 <= j0 or i1 <= i0:
            continue
        inv_v = inv[j0:j1, i0:i1]
        t1 = lo_rel[b] * inv_v
        t2 = hi_rel[b] * inv_v
        t_near = np.minimum(t1, t2)
        t_min = t_near.max(-1)
        t_max = np.maximum(t1, t2).min(-1)
        t_view = t_buf[j0:j1, i0:i1]
        hit = (t_min <= t_max) & (t_min > 0.0) & (t_min < t_view)
        if not hit.any():
            continue
        t_view[hit] = t_min[hit]
        box_buf[j0:j1, i0:i1][hit] = b
        axis_buf[j0:j1, i0:i1][hit] = t_near.argmax(-1)[hit]
    comp = np.take_along_axis(dirs, axis_buf[..., None], -1)[..., 0]
    sign = np.where(comp > 0, -1, 1)
    return _Buffers(t=t_buf, box=box_buf, axis=axis_buf, sign=sign, dirs=dirs, origin=origin)


def _shade(scene: Scene, buf: _Buffers) -> np.ndarray:
    """Float RGB [h,w,3]: Lambert (two world lights) + ambient, white background."""
    rgb = np.ones(buf.box.shape + (3,))
    hit = buf.box >= 0
    if not hit.any():
        return rgb
    box = buf.box[hit]
    axis = buf.axis[hit]
    sign = buf.sign[hit]
    albedo = scene.color[box].copy()
    for dec in scene.decals:
        sel = np.nonzero((box == dec.box) & (axis == dec.axis) & (sign == dec.sign))[0]
        if sel.size == 0:
            continue
        pts = buf.origin + buf.t[hit][sel, None] * buf.dirs[hit][sel]
        d2 = ((pts[:, None, :] - dec.centers[None]) ** 2).sum(-1)
        inside = (d2 < dec.radii[None] ** 2).any(1)
        albedo[sel[inside]] = dec.color
    n1 = sign * _L1[axis]
    n2 = sign * _L2[axis]
    shade = AMBIENT + K1 * np.maximum(n1, 0.0) + K2 * np.maximum(n2, 0.0)
    rgb[hit] = np.clip(albedo * shade[:, None], 0.0, 1.0)
    return rgb


def _downsample_quantise(rgb: np.ndarray, s: int) -> np.ndarray:
    h, w = rgb.shape[0] // s, rgb.shape[1] // s
    if s > 1:
        rgb = rgb.reshape(h, s, w, s, 3).mean(axis=(1, 3))
    return np.floor(rgb * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def _render(scene: Scene, c2w, height: int, width: int, focal: float, supersample: int):
    s = int(supersample)
    if s < 1:
        raise ValueError("supersample must be >= 1")
    # s x s sub-pixel samples at offsets (k + 0.5)/s - 0.5 around each pixel centre == a render at
    # s-times the resolution with focal * s, block-averaged.
    buf = _raycast(scene, c2w, height * s, width * s, focal * s)
    return _downsample_quantise(_shade(scene, buf), s), buf


def render_view(scene: Scene, c2w, height: int, width: int, focal: float, supersample: int = 1) -> np.ndarray:
    """Render `scene` from camera-to-world `c2w` as uint8 RGB [H,W,3] on white."""
    return _render(scene, c2w, height, width, focal, supersample)[0]


# ============================================================================ defects

def _pick_surface_point(rng, scene: Scene, buf: _Buffers, min_cos: float):
    """A random visible point on a brick body face, facing the camera by at least `min_cos`."""
    box = buf.box
    ok = box >= 0
    ok &= scene.kind[np.maximum(box, 0)] == 0
    comp = np.take_along_axis(buf.dirs, buf.axis[..., None], -1)[..., 0]
    cos = np.abs(comp) / np.linalg.norm(buf.dirs, axis=-1)
    ok &= cos >= min_cos
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        return None
    k = cand[int(rng.integers(cand.size))]
    j, i = np.unravel_index(k, box.shape)
    point = buf.origin + buf.t[j, i] * buf.dirs[j, i]
    return int(box[j, i]), int(buf.axis[j, i]), int(buf.sign[j, i]), point


def _make_stain(rng, scene: Scene, buf: _Buffers):
    pick = _pick_surface_point(rng, scene, buf, 0.4)
    if pick is None:
        return None
    b, axis, sign, point = pick
    tangents = [a for a in range(3) if a != axis]
    k = int(rng.integers(2, 5))
    r0 = rng.uniform(0.07, 0.15)
    centers = np.repeat(point[None], k, 0)
    for a in tangents:
        centers[:, a] += rng.uniform(-0.6, 0.6, k) * r0
    centers[0] = point
    radii = rng.uniform(0.45, 1.0, k) * r0
    base = scene.color[b]
    far = [c for c in STAIN_COLORS if np.linalg.norm(c - base) > 0.45]
    color = far[int(rng.integers(len(far)))]
    return scene.with_decal(Decal(box=b, axis=axis, sign=sign, centers=centers, radii=radii, color=np.array(color)))


def _make_burrs(rng, scene: Scene, buf: _Buffers):
    pick = _pick_surface_point(rng, scene, buf, 0.25)
    if pick is None:
        return None
    b, axis, sign, point = pick
    tangents = [a for a in range(3) if a != axis]
    n = int(rng.integers(2, 5))
    lo, hi = np.zeros((n, 3)), np.zeros((n, 3))
    for m in range(n):
        base = point.copy()
        for a in tangents:
            base[a] += rng.uniform(-0.06, 0.06)
            half = 0.5 * rng.uniform(0.04, 0.08)
            lo[m, a], hi[m, a] = base[a] - half, base[a] + half
        length = rng.uniform(0.08, 0.18)
        end = point[axis] + sign * length
        lo[m, axis], hi[m, axis] = min(point[axis], end), max(point[axis], end)
    color = np.repeat((scene.color[b] * 0.55)[None], n, 0)
    return scene.with_boxes(lo, hi, color, kind=2)


def _make_missing(rng, scene: Scene, buf: _Buffers, min_pixels: int):
    visible = buf.box[buf.box >= 0]
    counts = np.bincount(scene.brick[visible][scene.brick[visible] >= 0], minlength=int(scene.brick.max()) + 1)
    cand = [b for b in scene.removable if counts[b] >= min_pixels]
    if not cand:
        return None
    return scene.without_brick(cand[int(rng.integers(len(cand)))])


def make_defect_view(scene: Scene, defect: str, rng: np.random.Generator, *, height: int, width: int,
                     focal: float, supersample: int, radius: float, elev_range_deg, min_mask_pixels: int,
                     mask_tolerance: int = 1, max_attempts: int = 200):
    """Draw poses until a defect instance of type `defect` is visible with >= min_mask_pixels.
    Returns (image uint8 [H,W,3], mask uint8 [H,W] 0/255, c2w [4,4], attempts)."""
    s = int(supersample)
    for attempt in range(1, max_attempts + 1):
        c2w = random_pose(rng, radius, elev_range_deg)
        normal, buf = _render(scene, c2w, height, width, focal, s)
        if defect == "Stains":
            bad = _make_stain(rng, scene, buf)
        elif defect == "Burrs":
            bad = _make_burrs(rng, scene, buf)
        elif defect == "Missing":
            bad = _make_missing(rng, scene, buf, max(1, min_mask_pixels) * s * s)
        else:
            raise ValueError(f"unknown defect type {defect!r} (known: {', '.join(DEFECT_TYPES)})")
        if bad is None:
            continue
        image = render_view(bad, c2w, height, width, focal, s)
        diff = np.abs(image.astype(np.int16) - normal.astype(np.int16)).max(-1)
        mask = diff > mask_tolerance
        if int(mask.sum()) >= max(1, min_mask_pixels):
            return image, (mask.astype(np.uint8) * 255), c2w, attempt
    raise RuntimeError(f"could not place a visible {defect} defect in {max_attempts} attempts")


# ============================================================================ generation

def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = image[:, :, ::-1]  # RGB -> BGR for cv2
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(data.tobytes())


def _work(task: dict) -> dict:
    """Render and write one image (runs in worker processes)."""
    scene: Scene = task["scene"]
    root = Path(task["root"])
    split, index, size, s = task["split"], task["index"], task["size"], task["supersample"]
    focal = task["focal"]
    if split == "train":
        c2w = task["pose"]
        _write_png(root / "train" / "good" / f"{index}.png", render_view(scene, c2w, size, size, focal, s))
        return {"split": split, "index": index, "pose": c2w}
    rng = np.random.default_rng(np.random.SeedSequence([task["seed"], _SPLIT_CODE[split], index]))
    if split == "good":
        c2w = random_pose(rng, task["radius"], task["elev_range"])
        _write_png(root / "test" / "good" / f"{index}.png", render_view(scene, c2w, size, size, focal, s))
        return {"split": split, "index": index, "pose": c2w}
    image, mask, c2w, attempts = make_defect_view(
        scene, split, rng, height=size, width=size, focal=focal, supersample=s, radius=task["radius"],
        elev_range_deg=task["elev_range"], min_mask_pixels=task["min_mask_pixels"])
    _write_png(root / "test" / split / f"{index}.png", image)
    _write_png(root / "ground_truth" / split / f"{index}_mask.png", mask)
    return {"split": split, "index": index, "pose": c2w, "mask_pixels": int((mask > 0).sum()),
            "attempts": attempts}


def _frames(poses: dict, prefix_fn) -> list:
    return [{"file_path": prefix_fn(k), "transform_matrix": np.asarray(poses[k]).tolist()} for k in poses]


def generate_class(out_dir, class_name: str, seed: int = 0, size: int = 400, n_train: int = 200,
                   n_test_good: int = 40, n_test_defect: int = 40, *, supersample: int = 2,
                   workers: int | None = None, camera_angle_x: float = BLENDER_CAMERA_ANGLE_X,
                   radius: float = 4.0, elev_range_deg: Sequence[float] = (-30.0, 80.0),
                   min_mask_frac: float = 0.0008, defect_types: Sequence[str] = DEFECT_TYPES,
                   overwrite: bool = False, progress: bool = True) -> Path:
    """Generate one class in the MAD layout under out_dir/class_name and return that folder.
    The folder is assembled in a hidden temporary sibling and renamed into place at the end."""
    out_dir = Path(out_dir)
    final = out_dir / class_name
    if not class_name or "/" in class_name or class_name.startswith("."):
        raise DataError(f"{final}: invalid class name {class_name!r}")
    if final.exists() and not overwrite:
        raise DataError(f"{final}: already exists (pass --overwrite to replace it)")
    if size < 1 or n_train < 1 or n_test_good < 0 or n_test_defect < 0 or supersample < 1:
        raise DataError(f"{final}: need size >= 1, n_train >= 1, n_test_* >= 0, supersample >= 1")
    elev = (float(elev_range_deg[0]), float(elev_range_deg[1]))
    if not (-90.0 < elev[0] < elev[1] < 90.0):
        raise DataError(f"{final}: elevation range must satisfy -90 < min < max < 90 degrees, got {elev}")
    for d in defect_types:
        if d not in DEFECT_TYPES:
            raise DataError(f"{final}: unknown defect type {d!r} (known: {', '.join(DEFECT_TYPES)})")

    scene = make_scene(seed)
    focal = focal_from_angle(size, camera_angle_x)
    min_mask_pixels = max(1, int(math.ceil(min_mask_frac * size * size)))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{class_name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in ["train/good", "test/good"] + [f"test/{d}" for d in defect_types] + \
                   [f"ground_truth/{d}" for d in defect_types]:
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        common = dict(scene=scene, root=str(tmp), size=size, supersample=supersample, focal=focal,
                      seed=int(seed), radius=radius, elev_range=elev, min_mask_pixels=min_mask_pixels)
        tasks = [dict(common, split=d, index=i) for d in defect_types for i in range(n_test_defect)]
        tasks += [dict(common, split="good", index=i) for i in range(n_test_good)]
        tasks += [dict(common, split="train", index=i, pose=p)
                  for i, p in enumerate(train_poses(n_train, radius, elev, seed))]
        results = _run_tasks(tasks, workers, progress, f"synth {class_name}")

        by_split: dict = {}
        for r in results:
            by_split.setdefault(r["split"], {})[r["index"]] = r
        train = {i: by_split["train"][i]["pose"] for i in range(n_train)}
        _write_json(tmp / "transforms.json", {
            "camera_angle_x": camera_angle_x,
            "frames": _frames(train, lambda i: f"train/good/{i}.png")})
        test_frames = []
        for split in ["good", *defect_types]:
            for i in sorted(by_split.get(split, {})):
                test_frames.append({"file_path": f"test/{split}/{i}.png",
                                    "transform_matrix": np.asarray(by_split[split][i]["pose"]).tolist()})
        _write_json(tmp / "test_poses.json", {"camera_angle_x": camera_angle_x, "frames": test_frames})
        stats = {
            "generator": f"data.synthesize v{GENERATOR_VERSION}",
            "class_name": class_name, "seed": int(seed), "size": size, "supersample": supersample,
            "camera_angle_x": camera_angle_x, "radius": radius, "elevation_range_deg": list(elev),
            "min_mask_pixels": min_mask_pixels,
            "counts": {"train": n_train, "test_good": n_test_good,
                       **{f"test_{d}": n_test_defect for d in defect_types}},
            "mask_area_percent": {}, "rejected_views": {},
        }
        for d in defect_types:
            rs = list(by_split.get(d, {}).values())
            if not rs:
                continue
            pct = np.array([r["mask_pixels"] for r in rs]) / (size * size) * 100.0
            stats["mask_area_percent"][d] = {k: round(float(f(pct)), 4) for k, f in
                                             (("min", np.min), ("median", np.median), ("max", np.max),
                                              ("mean", np.mean))}
            stats["rejected_views"][d] = int(sum(r["attempts"] - 1 for r in rs))
        _write_json(tmp / "synth_stats.json", stats)

        if final.exists():
            old = out_dir / f".{class_name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _run_tasks(tasks: list, workers: int | None, progress: bool, desc: str) -> list:
    from tqdm import tqdm

    workers = int(workers or os.cpu_count() or 1)
    workers = max(1, min(workers, len(tasks)))
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    results = []
    try:
        if workers == 1:
            for t in tasks:
                results.append(_work(t))
                bar.update()
        else:
            ctx = mp.get_context("spawn")  # safe even when the caller has torch/OpenMP threads running
            with ctx.Pool(workers) as pool:
                for r in pool.imap_unordered(_work, tasks, chunksize=1):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    return results


# ============================================================================ CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data.synthesize",
        description="Generate a synthetic LEGO-like class in the MAD layout (train/good with poses, "
                    "test/{good,Burrs,Missing,Stains}, ground_truth masks, test_poses.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="data/synthetic", help="dataset root; the class goes to <out>/<class_name>")
    p.add_argument("--class_name", required=True, help="class folder name")
    p.add_argument("--seed", type=int, default=0, help="seed for the object, the poses and the defects")
    p.add_argument("--size", type=int, default=400, help="image width = height in pixels")
    p.add_argument("--n_train", type=int, default=200, help="number of training views (with poses)")
    p.add_argument("--n_test_good", type=int, default=40, help="number of anomaly-free test views")
    p.add_argument("--n_test_defect", type=int, default=40, help="number of test views per defect type")
    p.add_argument("--defect_types", nargs="+", default=list(DEFECT_TYPES), choices=DEFECT_TYPES,
                   help="defect types to generate")
    p.add_argument("--supersample", type=int, default=2,
                   help="anti-aliasing: s x s samples per pixel, symmetric around the pixel centre")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--camera_angle_x", type=float, default=BLENDER_CAMERA_ANGLE_X,
                   help="horizontal field of view in radians (default: Blender lego)")
    p.add_argument("--radius", type=float, default=4.0,
                   help="camera distance from the origin (object lies in the unit sphere; keep 3..5 for near=2/far=6)")
    p.add_argument("--elev_min", type=float, default=-30.0, help="lowest camera elevation in degrees")
    p.add_argument("--elev_max", type=float, default=80.0, help="highest camera elevation in degrees")
    p.add_argument("--min_mask_frac", type=float, default=0.0008,
                   help="reject defect views whose mask covers fewer than this fraction of the image (at least 1 px)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing class folder")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    path = generate_class(
        args.out, args.class_name, args.seed, args.size, args.n_train, args.n_test_good, args.n_test_defect,
        supersample=args.supersample, workers=args.workers, camera_angle_x=args.camera_angle_x,
        radius=args.radius, elev_range_deg=(args.elev_min, args.elev_max), min_mask_frac=args.min_mask_frac,
        defect_types=args.defect_types, overwrite=args.overwrite, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    stats = json.loads((path / "synth_stats.json").read_text())
    counts = ", ".join(f"{k} {v}" for k, v in stats["counts"].items())
    print(f"wrote {path} in {seconds:.1f} s: {counts}")
    for d, a in stats["mask_area_percent"].items():
        print(f"  {d:8s} mask area % of image: min {a['min']:.3f}  median {a['median']:.3f}  "
              f"max {a['max']:.3f}  (rejected views: {stats['rejected_views'][d]})")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
