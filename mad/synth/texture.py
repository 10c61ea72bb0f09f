"""Procedural surface detail for `synth_textured` classes: the look of a worn, printed plastic toy
(mottling, print / dirt dots, scratches and mould lines), so that SIFT and structure-from-motion find
features on the object (the flat-coloured object gives too few: 25-90 SIFT features per 200 px view).

A pure function of the surface point (its two in-plane world coordinates), the face (normal axis, side)
and the brick id, hashed per lattice cell: every view of a point shows the same albedo (view
consistent), and a defect render differs from the normal render only where the defect is (masks stay
exact). Pure numpy, no random state.
"""
from __future__ import annotations

import numpy as np

TEXTURE_STREAM = 15485863
_U64 = np.uint64
_HASH_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)

# dot layers: (cell in world units, density, min / max radius as a fraction of the cell, opacity)
DOT_LAYERS = ((0.12, 0.6, 0.12, 0.30, 0.9), (0.06, 0.6, 0.14, 0.32, 0.85), (0.03, 0.5, 0.18, 0.34, 0.7))
DARK_INK = np.array([0.06, 0.05, 0.05])
LIGHT_INK = np.array([0.88, 0.86, 0.80])


def hash01(cells: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random floats in [0,1) from integer lattice cells [..., K] (K <= 4) and a salt
    (splitmix64 finaliser over a linear mix; uint64 arithmetic wraps modulo 2^64)."""
    c = np.ascontiguousarray(cells, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        h = np.full(c.shape[:-1], _U64(salt & 0xFFFFFFFFFFFFFFFF))
        for k in range(c.shape[-1]):
            h = (h ^ (c[..., k] * _U64(_HASH_MULTIPLIERS[k]))) * _U64(0xBF58476D1CE4E5B9)
            h ^= h >> _U64(31)
        h ^= h >> _U64(30)
        h *= _U64(0xBF58476D1CE4E5B9)
        h ^= h >> _U64(27)
        h *= _U64(0x94D049BB133111EB)
        h ^= h >> _U64(31)
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _salt(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([int(seed), TEXTURE_STREAM, *keys]).generate_state(1, np.uint64)[0])


def _cells(uv: np.ndarray, face: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice cell ids [N,3] (face key, iu, iv) and the position inside the cell [N,2] in [0,1)."""
    q = uv / cell
    c = np.floor(q)
    return np.concatenate([face[:, None], c.astype(np.int64)], -1), q - c


def value_noise(uv: np.ndarray, face: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Smooth 2-D value noise in [0,1] on each face (bilinear between cell corners, smoothstep weights)."""
    ids, f = _cells(uv, face, cell)
    w = f * f * (3.0 - 2.0 * f)
    out = np.zeros(len(uv))
    for du in (0, 1):
        for dv in (0, 1):
            corner = ids + np.array([0, du, dv])
            out += (w[:, 0] if du else 1 - w[:, 0]) * (w[:, 1] if dv else 1 - w[:, 1]) * hash01(corner, salt)
    return out


def dots(uv: np.ndarray, face: np.ndarray, cell: float, density: float, rmin: float, rmax: float, salt: int):
    """At most one disc per lattice cell (present with probability `density`, radius in [rmin, rmax] * cell,
    wholly inside its cell). Returns (inside [N] bool, a per-disc random number [N] in [0,1))."""
    ids, f = _cells(uv, face, cell)
    r = rmin + (rmax - rmin) * hash01(ids, salt + 1)
    centre = np.stack([r + (1 - 2 * r) * hash01(ids, salt + 2 + k) for k in range(2)], -1)
    present = hash01(ids, salt) < density
    inside = present & (((f - centre) ** 2).sum(-1) < r * r)
    return inside, hash01(ids, salt + 9)


def strokes(uv: np.ndarray, face: np.ndarray, cell: float, density: float, half_width: float, salt: int):
    """At most one thin straight segment per lattice cell (both ends inside the cell), `half_width` in world
    units: scratches, mould lines, printed strokes. Returns inside [N] bool."""
    ids, f = _cells(uv, face, cell)
    a = np.stack([hash01(ids, salt + 1 + k) for k in range(2)], -1)
    b = np.stack([hash01(ids, salt + 3 + k) for k in range(2)], -1)
    ab = b - a
    t = np.clip(((f - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    d2 = ((f - a - t[:, None] * ab) ** 2).sum(-1)
    present = hash01(ids, salt) < density
    return present & (d2 < (half_width / cell) ** 2)


def surface_texture(albedo: np.ndarray, points: np.ndarray, axis: np.ndarray, sign: np.ndarray,
                    brick: np.ndarray, seed: int) -> np.ndarray:
    """Textured albedo [N,3] (each channel in [0, 0.95]) of surface points [N,3] on faces with normal
    `axis` (0/1/2) and `sign` (+-1) of bricks `brick`, from the flat albedo [N,3]. Layers:
      * mottling (wear): 3 octaves of value noise (cells 0.16, 0.07, 0.035), brightness x0.7..1.3;
      * dots at 3 scales (cells 0.12, 0.06, 0.03): dark or light print / dirt marks;
      * strokes: thin dark segments (scratches, mould lines), cell 0.15, half-width 0.007.
    Scale: the object fills the unit sphere; from radius 4 with the Blender field of view one world unit
    is about 140 px at 400x400. Each face of each brick has its own pattern."""
    points = np.asarray(points, dtype=np.float64)
    n = np.arange(len(points))
    axis = np.asarray(axis, dtype=np.int64)
    uv = np.stack([points[n, (axis + 1) % 3], points[n, (axis + 2) % 3]], -1)
    face = (np.asarray(brick, dtype=np.int64) + 2) * 6 + axis * 2 + (np.asarray(sign) > 0)
    mottle = (0.5 * value_noise(uv, face, 0.16, _salt(seed, 1)) + 0.3 * value_noise(uv, face, 0.07, _salt(seed, 2))
              + 0.2 * value_noise(uv, face, 0.035, _salt(seed, 3)))
    out = albedo * (0.7 + 0.6 * mottle)[:, None]
    for k, (cell, density, rmin, rmax, opacity) in enumerate(DOT_LAYERS):
        inside, which = dots(uv, face, cell, density, rmin, rmax, _salt(seed, 10 + k))
        if inside.any():
            ink = np.where((which[inside] < 0.5)[:, None], DARK_INK, LIGHT_INK)
            out[inside] = (1 - opacity) * out[inside] + opacity * ink
    scratch = strokes(uv, face, 0.15, 0.5, 0.007, _salt(seed, 30))
    out[scratch] = 0.35 * out[scratch] + 0.65 * DARK_INK
    return np.clip(out, 0.0, 0.95)
