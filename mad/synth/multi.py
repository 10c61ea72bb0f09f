"""Multi-object scenes (issue 33; OmniAD evaluates on ToyCity, scenes of several objects): three to five generated
LEGO-like objects (mad.synth.scene.make_scene, each from its own seed) standing apart on a ground slab, the whole
scaled into the unit sphere like a single object. Defects land on the objects only: the slab has its own kind
(KIND_GROUND), which no Burrs or Stains picks (they pick brick bodies, kind 0), and none of its boxes is a
removable brick. The cameras are the generator's; a scene class is meant to be seen from around and above
(configs/synthetic/scene.txt: elevations 15-70 degrees).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from mad.synth.scene import Scene, make_scene

KIND_GROUND = 4                 # Scene.kind of the ground slab (0 body, 1 stud, 2 burr, 3 detail part)
MULTI_STREAM = 7933
MAX_OBJECTS = 6
GROUND_COLOR = (0.52, 0.50, 0.46)
_GROUND_DEPTH, _MARGIN = 0.05, 0.06        # the slab's thickness and its rim beyond the objects (before scaling)
_OBJECT_RADIUS = (0.20, 0.26)              # each object's bounding radius on the slab
_JITTER = 0.15                             # radians: each object's angle on the ring, off the even spread


def ring_radius(n_objects: int) -> float:
    """The radius of the ring the objects' centres stand on: wide enough that two neighbours at the closest the
    jitter allows stand a margin apart."""
    closest = 2 * math.pi / n_objects - 2 * _JITTER
    return max(0.5, (2 * _OBJECT_RADIUS[1] + _MARGIN) / (2 * math.sin(closest / 2)))


def make_multi_scene(seed: int, n_objects: int, textured: bool = False) -> Scene:
    """A scene of `n_objects` objects (each make_scene of its own seed, `textured` as a single object's) on a
    ground slab, scaled so every box corner lies within radius 0.98 of the origin; seeded."""
    if not 2 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"a multi-object scene needs 2..{MAX_OBJECTS} objects, got {n_objects}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), MULTI_STREAM]))
    offset, ring = rng.uniform(0.0, 2 * math.pi), ring_radius(n_objects)
    half = ring + _OBJECT_RADIUS[1] + _MARGIN
    parts, removable, next_brick = [], [], 0
    for k in range(n_objects):
        obj = make_scene(int(seed) * 1000 + k + 1, textured=textured)
        radius = rng.uniform(*_OBJECT_RADIUS)
        angle = offset + 2 * math.pi * k / n_objects + rng.uniform(-_JITTER, _JITTER)
        lo, hi = obj.lo * radius, obj.hi * radius        # make_scene's objects lie within radius 0.98
        shift = np.array([ring * math.cos(angle), ring * math.sin(angle), -lo[:, 2].min()])
        parts.append((lo + shift, hi + shift, obj.color, obj.brick + next_brick, obj.kind))
        removable += [b + next_brick for b in obj.removable]
        next_brick += int(obj.brick.max()) + 1
    ground = (np.array([[-half, -half, -_GROUND_DEPTH]]), np.array([[half, half, 0.0]]),
              np.array([GROUND_COLOR]), np.array([next_brick]), np.array([KIND_GROUND]))
    lo, hi, color, brick, kind = (np.concatenate(column) for column in zip(*parts, ground, strict=True))
    centre = 0.5 * (lo.min(0) + hi.max(0))
    corners = np.stack([lo, hi], 1) - centre                              # [B,2,3]
    farthest = np.sqrt((np.abs(corners).max(1) ** 2).sum(-1)).max()
    scale = 0.98 / farthest
    base = make_scene(int(seed) * 1000 + 1, textured=textured)
    return replace(base, lo=(lo - centre) * scale, hi=(hi - centre) * scale, color=color.astype(np.float64),
                   brick=brick, kind=kind, removable=tuple(removable), decals=())
