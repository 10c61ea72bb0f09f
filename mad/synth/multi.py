"""Multi-object scenes (issue 33; OmniAD evaluates on ToyCity, scenes of several objects): two to six generated
LEGO-like objects (mad.synth.scene.make_scene, each from its own seed) standing apart at seed-drawn places on an
oblong ground slab with one corner of another colour, the whole scaled into the unit sphere like a single object.
Defects land on the objects only: the slab has its own kind (KIND_GROUND), which no Burrs or Stains picks (they
pick brick bodies, kind 0), and none of its boxes is a removable brick. The cameras are the generator's; a scene
class is meant to be seen from around and above (configs/synthetic/scene.txt: elevations 15-70 degrees).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from mad.synth.scene import Scene, make_scene

KIND_GROUND = 4                 # Scene.kind of the ground slab (0 body, 1 stud, 2 burr, 3 detail part)
MULTI_STREAM = 7933
MAX_OBJECTS = 6
GROUND_COLORS = ((0.52, 0.50, 0.46), (0.36, 0.40, 0.47))   # the slab, and the patch that breaks its symmetry
_GROUND_DEPTH, _MARGIN = 0.05, 0.06        # the slab's thickness and the least gap between objects / to its rim
_OBJECT_RADIUS = (0.20, 0.26)              # each object's bounding radius on the slab


def slab_half_size(n_objects: int) -> tuple[float, float]:
    """Half the slab's length and width (before the final scaling): an oblong that grows with the objects."""
    half_x = 0.55 + 0.12 * n_objects
    return half_x, 0.7 * half_x


def make_multi_scene(seed: int, n_objects: int, textured: bool = False) -> Scene:
    """A scene of `n_objects` objects (each make_scene of its own seed, `textured` as a single object's) standing at
    seed-drawn places on an oblong ground slab, at least a margin apart and inside its rim, scaled so every box corner
    lies within radius 0.98 of the origin; seeded. The slab is not symmetric: one corner is a patch of another
    colour, and the objects stand irregularly, so no turn of the scene looks like another (a 4-fold symmetric
    scene of a square slab and a ring of objects lost 15 % of its poses by 90 degrees)."""
    if not 2 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"a multi-object scene needs 2..{MAX_OBJECTS} objects, got {n_objects}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), MULTI_STREAM]))
    half_x, half_y = slab_half_size(n_objects)
    inset = _OBJECT_RADIUS[1] + _MARGIN
    centres: list[np.ndarray] = []
    for _ in range(10000):
        if len(centres) == n_objects:
            break
        c = rng.uniform([-half_x + inset, -half_y + inset], [half_x - inset, half_y - inset])
        if all(np.linalg.norm(c - other) >= 2 * _OBJECT_RADIUS[1] + _MARGIN for other in centres):
            centres.append(c)
    else:
        raise RuntimeError(f"could not place {n_objects} objects apart on the slab")
    parts, removable, next_brick = [], [], 0
    objects = [make_scene(int(seed) * 1000 + k + 1, textured=textured) for k in range(n_objects)]
    for obj, (cx, cy) in zip(objects, centres, strict=True):
        radius = rng.uniform(*_OBJECT_RADIUS)
        lo, hi = obj.lo * radius, obj.hi * radius        # make_scene's objects lie within radius 0.98
        shift = np.array([cx, cy, -lo[:, 2].min()])
        parts.append((lo + shift, hi + shift, obj.color, obj.brick + next_brick, obj.kind))
        removable += [b + next_brick for b in obj.removable]
        next_brick += int(obj.brick.max()) + 1
    # the slab in three boxes side by side: the main one, and at one end a patch of another colour and the rest
    split = half_x - 0.5 * half_y
    ground = (np.array([[-half_x, -half_y, -_GROUND_DEPTH], [split, -half_y, -_GROUND_DEPTH],
                        [split, 0.0, -_GROUND_DEPTH]]),
              np.array([[split, half_y, 0.0], [half_x, 0.0, 0.0], [half_x, half_y, 0.0]]),
              np.array([GROUND_COLORS[0], GROUND_COLORS[1], GROUND_COLORS[0]]),
              np.arange(next_brick, next_brick + 3), np.full(3, KIND_GROUND))
    lo, hi, color, brick, kind = (np.concatenate(column) for column in zip(*parts, ground, strict=True))
    centre = 0.5 * (lo.min(0) + hi.max(0))
    corners = np.stack([lo, hi], 1) - centre                              # [B,2,3]
    farthest = np.sqrt((np.abs(corners).max(1) ** 2).sum(-1)).max()
    scale = 0.98 / farthest
    return replace(objects[0], lo=(lo - centre) * scale, hi=(hi - centre) * scale, color=color.astype(np.float64),
                   brick=brick, kind=kind, removable=tuple(removable), decals=())
