"""Fine detail for `synth_detail` classes: a stand-in for real detailed objects such as MAD-Sim's LEGO
toys, whose fine structure a NeRF blurs (so the anomaly detector has to cope with it):

  * small parts (`add_detail`): many small boxes ("greebles": knobs, rivet rows, ridges, vents, caps on
    studs) on the top and side faces of the bricks, world size about 0.015-0.05 (ridges and vent slats are
    longer, up to most of a face), standing 0.006-0.035 out of it, in contrasting colours;
  * seams (`add_detail`): thin near-black strips protruding 0.004 from side faces, like the gaps between
    stacked plates and neighbouring parts;
  * printed marks (`printed_albedo`): fine black / white patterns (stripes, checker bits, eyes, rows of
    glyph-like marks) on some brick faces, a pure function of the surface point (view consistent);
  * a specular (Blinn-Phong) highlight, view dependent, added by mad.synth.render for these scenes.

The added boxes have Scene.kind == KIND_DETAIL (never 2, the burr kind) and carry the brick id of the brick
they sit on: 'Missing' chooses among Scene.removable (brick ids of the layout, unchanged), so a part is never
the thing removed on its own; it only goes away together with its brick, as a real part would. Stains and
burrs are only placed on brick bodies (kind 0). Everything is drawn from its own random stream
(DETAIL_STREAM) or hashed from the seed, so flat and textured classes are unchanged by this module.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from mad.synth.multi import make_multi_scene
from mad.synth.scene import PALETTE, Scene, make_scene
from mad.synth.texture import hash01

DETAIL_STREAM = 32452843
KIND_DETAIL = 3             # Scene.kind of greebles and seams (0 body, 1 stud, 2 burr)
MAX_GREEBLES = 500          # caps that keep the box raycaster within about 2-3x of the flat object's time
MAX_SEAMS = 70
SEAM_DEPTH = 0.004          # how far a seam strip stands out of its face (world units)
SEAM_COLOR = np.array([0.03, 0.03, 0.03])
MAX_RADIUS = 0.995          # detail boxes stay inside the unit sphere (near = 2 / far = 6 keep holding)

# contrasting part colours: near-black, near-white, metal greys, and the palette
DETAIL_COLORS = np.concatenate([np.array([[0.05, 0.05, 0.06], [0.92, 0.92, 0.90], [0.55, 0.56, 0.58],
                                          [0.78, 0.72, 0.35]]), PALETTE])
INK_DARK = np.array([0.04, 0.04, 0.04])
INK_LIGHT = np.array([0.93, 0.93, 0.91])

# specular (Blinn-Phong, white) of detail scenes: strength, shininess, weight of the second light
SPEC_STRENGTH, SPEC_SHININESS, SPEC_L2_WEIGHT = 0.5, 80.0, 0.5
# printed marks: fraction of brick body faces that carry one, and the patterns
PRINT_FRACTION = 0.85
PRINT_PATTERNS = ("stripes", "checker", "eyes", "glyphs")


def _contrast_color(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    far = DETAIL_COLORS[np.linalg.norm(DETAIL_COLORS - base, axis=1) > 0.45]
    return far[int(rng.integers(len(far)))]


class _Boxes:
    """Collects (lo, hi, colour, brick) of the added parts."""

    def __init__(self):
        self.lo, self.hi, self.color, self.brick = [], [], [], []

    def add(self, lo, hi, color, brick: int) -> None:
        self.lo.append(np.asarray(lo, dtype=np.float64))
        self.hi.append(np.asarray(hi, dtype=np.float64))
        self.color.append(np.asarray(color, dtype=np.float64))
        self.brick.append(int(brick))

    def add_on_face(self, brick: int, axis: int, sign: int, plane: float, centre_uv, half_uv, height: float,
                    color) -> None:
        """A box standing `height` out of the face plane (normal `axis`, side `sign`) with its in-plane
        centre and half sizes given along the two other axes in increasing order."""
        lo, hi = np.zeros(3), np.zeros(3)
        tangents = [a for a in range(3) if a != axis]
        for k, a in enumerate(tangents):
            lo[a], hi[a] = centre_uv[k] - half_uv[k], centre_uv[k] + half_uv[k]
        lo[axis], hi[axis] = (plane, plane + height) if sign > 0 else (plane - height, plane)
        self.add(lo, hi, color, brick)

    def arrays(self):
        if not self.lo:
            return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
        return np.stack(self.lo), np.stack(self.hi), np.stack(self.color), np.array(self.brick, dtype=np.int64)


def _side_faces(lo: np.ndarray, hi: np.ndarray):
    """The four side faces (axis 0/1, sign +-1) of a box: (axis, sign, plane, in-plane lo, in-plane hi)."""
    for axis in (0, 1):
        tangents = [a for a in range(3) if a != axis]
        for sign in (-1, 1):
            plane = hi[axis] if sign > 0 else lo[axis]
            yield axis, sign, plane, lo[tangents], hi[tangents]


def _greebles(rng: np.random.Generator, scene: Scene, pitch: float) -> _Boxes:
    out = _Boxes()
    bodies = np.flatnonzero(scene.kind == 0)
    for b in bodies:
        lo, hi, base, brick = scene.lo[b], scene.hi[b], scene.color[b], int(scene.brick[b])
        # top face: knobs at the stud-cell corners (between four studs) and caps on some studs
        nx, ny = (round(v) for v in (hi[:2] - lo[:2]) / pitch)
        for i in range(nx + 1):
            for j in range(ny + 1):
                if rng.random() >= 0.5:
                    continue
                half = 0.5 * rng.uniform(0.015, 0.04, 2)
                centre = lo[:2] + pitch * np.array([i, j])
                centre = np.clip(centre, lo[:2] + half, hi[:2] - half)
                out.add_on_face(brick, 2, 1, hi[2], centre, half, rng.uniform(0.012, 0.035),
                                _contrast_color(rng, base))
        studs = np.flatnonzero((scene.brick == brick) & (scene.kind == 1))
        for s in studs:
            if rng.random() >= 0.25:
                continue
            centre = 0.5 * (scene.lo[s, :2] + scene.hi[s, :2])
            half = 0.5 * rng.uniform(0.015, 0.03, 2)
            out.add_on_face(brick, 2, 1, scene.hi[s, 2], centre, half, rng.uniform(0.006, 0.012),
                            _contrast_color(rng, base))
        # side faces: knobs, rivet rows, ridges, vents
        for axis, sign, plane, tlo, thi in _side_faces(lo, hi):
            size = thi - tlo  # (along the face, height)
            for _ in range(int(rng.integers(1, 6))):
                what = rng.random()
                color = _contrast_color(rng, base)
                if what < 0.35:  # a knob
                    half = 0.5 * rng.uniform(0.015, 0.05, 2)
                    centre = tlo + half + rng.random(2) * np.maximum(size - 2 * half, 0.0)
                    out.add_on_face(brick, axis, sign, plane, centre, half, rng.uniform(0.01, 0.035), color)
                elif what < 0.6:  # a row of rivets
                    n = int(rng.integers(2, 6))
                    half = np.full(2, 0.5 * rng.uniform(0.015, 0.025))
                    _row_of_parts(out, rng, brick, (axis, sign, plane, tlo, size), n, half,
                                  rng.uniform(0.03, 0.05), (0.008, 0.02), color)
                elif what < 0.85:  # a horizontal ridge
                    half = np.array([0.5 * rng.uniform(0.06, 0.6) * size[0], 0.5 * rng.uniform(0.012, 0.025)])
                    half[0] = max(half[0], 0.01)
                    centre = tlo + half + rng.random(2) * np.maximum(size - 2 * half, 0.0)
                    out.add_on_face(brick, axis, sign, plane, centre, half, rng.uniform(0.008, 0.025), color)
                else:  # a vent: parallel vertical slats
                    n = int(rng.integers(3, 6))
                    half = np.array([0.5 * rng.uniform(0.008, 0.014), 0.5 * rng.uniform(0.04, 0.7) * size[1]])
                    _row_of_parts(out, rng, brick, (axis, sign, plane, tlo, size), n, half,
                                  rng.uniform(0.022, 0.035), (0.008, 0.018), color)
    return out


def _row_of_parts(out: _Boxes, rng: np.random.Generator, brick: int, face: tuple, n: int, half: np.ndarray,
                  step: float, depth_range: tuple[float, float], color: np.ndarray) -> None:
    """`n` equal parts `step` apart along a side face (rivets, vent slats) at a random place on it, when they fit;
    face = (axis, sign, plane, its lower corner, its size)."""
    axis, sign, plane, tlo, size = face
    length = (n - 1) * step
    if length + 2 * half[0] > size[0]:
        return
    u0 = tlo[0] + half[0] + rng.random() * (size[0] - length - 2 * half[0])
    v = tlo[1] + half[1] + rng.random() * max(size[1] - 2 * half[1], 0.0)
    depth = rng.uniform(*depth_range)
    for k in range(n):
        out.add_on_face(brick, axis, sign, plane, (u0 + k * step, v), half, depth, color)


def _seams(rng: np.random.Generator, scene: Scene, pitch: float) -> _Boxes:
    """Near-black strips across side faces: horizontal ones between 'plates' (a third of a brick's height)
    and vertical ones at stud boundaries, each spanning the whole face."""
    out = _Boxes()
    for b in np.flatnonzero(scene.kind == 0):
        lo, hi, brick = scene.lo[b], scene.hi[b], int(scene.brick[b])
        for axis, sign, plane, tlo, thi in _side_faces(lo, hi):
            size = thi - tlo
            half_w = 0.5 * rng.uniform(0.006, 0.01)
            if rng.random() < 0.5 and size[1] > 2 * pitch:  # a plate line (bricks are three plates tall)
                v = tlo[1] + size[1] * (1 + int(rng.integers(0, 2))) / 3.0
                out.add_on_face(brick, axis, sign, plane, (0.5 * (tlo[0] + thi[0]), v),
                                (0.5 * size[0] - 0.002, half_w), SEAM_DEPTH, SEAM_COLOR)
            n_cells = round(size[0] / pitch)
            if n_cells >= 2 and rng.random() < 0.5:  # a part boundary
                u = tlo[0] + pitch * int(rng.integers(1, n_cells))
                out.add_on_face(brick, axis, sign, plane, (u, 0.5 * (tlo[1] + thi[1])),
                                (half_w, 0.5 * size[1] - 0.002), SEAM_DEPTH, SEAM_COLOR)
    return out


def _keep(rng: np.random.Generator, boxes: _Boxes, scene: Scene, cap: int):
    """Drop parts outside the sphere or buried in another box (a wasted raycast), then keep at most `cap`
    of them (a random subset, in their original order)."""
    lo, hi, color, brick = boxes.arrays()
    if len(lo) == 0:
        return lo, hi, color, brick
    idx = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    corners = np.stack([np.stack([lo, hi], 1)[:, idx[:, k], k] for k in range(3)], -1)
    ok = np.linalg.norm(corners, axis=-1).max(1) <= MAX_RADIUS
    centre = 0.5 * (lo + hi)
    buried = ((centre[:, None] > scene.lo[None] + 1e-9) & (centre[:, None] < scene.hi[None] - 1e-9)).all(-1).any(1)
    keep = np.flatnonzero(ok & ~buried)
    if len(keep) > cap:
        keep = np.sort(rng.choice(keep, cap, replace=False))
    return lo[keep], hi[keep], color[keep], brick[keep]


def add_detail(scene: Scene, seed: int) -> Scene:
    """`scene` with greebles and seams added (kind KIND_DETAIL, brick = the brick they sit on) and
    detail_seed set (printed marks and the specular highlight of mad.synth.render). The brick layout,
    colours and Scene.removable are unchanged."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), DETAIL_STREAM]))
    studs = scene.kind == 1
    pitch = float(np.median(scene.hi[studs, 0] - scene.lo[studs, 0])) * 2.0 if studs.any() else 0.2  # stud = 0.5
    g = _keep(rng, _greebles(rng, scene, pitch), scene, MAX_GREEBLES)
    s = _keep(rng, _seams(rng, scene, pitch), scene, MAX_SEAMS)
    lo, hi, color, brick = (np.concatenate([a, b]) for a, b in zip(g, s, strict=True))
    return replace(scene, lo=np.concatenate([scene.lo, lo]), hi=np.concatenate([scene.hi, hi]),
                   color=np.concatenate([scene.color, color]), brick=np.concatenate([scene.brick, brick]),
                   kind=np.concatenate([scene.kind, np.full(len(lo), KIND_DETAIL)]), detail_seed=int(seed))


# ---------------------------------------------------------------------------- printed marks


def _salt(seed: int, key: int) -> int:
    return int(np.random.SeedSequence([int(seed), DETAIL_STREAM, key]).generate_state(1, np.uint64)[0])


def printed_albedo(albedo: np.ndarray, points: np.ndarray, axis: np.ndarray, sign: np.ndarray,
                   brick: np.ndarray, face_lo: np.ndarray, face_hi: np.ndarray, seed: int) -> np.ndarray:
    """Albedo [N,3] with printed marks on surface points [N,3] of brick body faces (normal `axis`, side
    `sign`, brick id `brick`, the body box [N,3] `face_lo` .. `face_hi`). About PRINT_FRACTION of the faces
    carry one patch (placed and sized from a hash of the face) of one pattern: black / white stripes
    (period 0.012-0.032), checker bits (cell 0.008-0.02), a pair of eyes, or rows of 3x5-bit glyphs. A pure
    function of the point and the face, so view consistent; moving a point along its normal changes nothing."""
    out = np.array(albedo, dtype=np.float64, copy=True)
    if len(points) == 0:
        return out
    n = np.arange(len(points))
    axis = np.asarray(axis, dtype=np.int64)
    ua, va = (axis + 1) % 3, (axis + 2) % 3
    u, v = points[n, ua], points[n, va]
    u0, u1, v0, v1 = face_lo[n, ua], face_hi[n, ua], face_lo[n, va], face_hi[n, va]
    face = (np.asarray(brick, dtype=np.int64) + 2) * 6 + axis * 2 + (np.asarray(sign) > 0)
    salt = _salt(seed, 1)
    # per-face random numbers, hashed once per face key (a small table) rather than per point
    keys = np.arange(int(face.max()) + 1, dtype=np.int64)[:, None]
    table = np.stack([hash01(keys, salt + k) for k in range(8)], -1)
    sel = np.flatnonzero(table[face, 0] < PRINT_FRACTION)
    if sel.size == 0:
        return out
    face = face[sel]
    h = list(table[face, 1:].T)
    pattern = np.minimum((h[0] * len(PRINT_PATTERNS)).astype(np.int64), len(PRINT_PATTERNS) - 1)
    # the patch: 40-85 % of the face along each in-plane axis, at most 0.5 world units, inside the face
    fu, fv = u1[sel] - u0[sel], v1[sel] - v0[sel]
    pw = np.minimum((0.4 + 0.45 * h[1]) * fu, 0.5)
    ph = np.minimum((0.4 + 0.45 * h[2]) * fv, 0.5)
    pu = u[sel] - (u0[sel] + h[3] * (fu - pw))
    pv = v[sel] - (v0[sel] + h[4] * (fv - ph))
    inside = (pu >= 0) & (pu < pw) & (pv >= 0) & (pv < ph)
    ink = np.full(sel.size, -1)  # -1: no ink, 0: dark, 1: light
    dark_base = out[sel].mean(1) < 0.35

    k = inside & (pattern == 0)  # stripes along u, v or the diagonal
    if k.any():
        period = 0.03 + 0.05 * h[5][k]
        direction = np.minimum((h[6][k] * 3).astype(np.int64), 2)
        coord = np.where(direction == 0, pu[k], np.where(direction == 1, pv[k], (pu[k] + pv[k]) * 0.7071))
        ink[k] = (np.floor(coord / (0.5 * period)).astype(np.int64) % 2)
    k = inside & (pattern == 1)  # checker bits
    if k.any():
        cell = 0.02 + 0.03 * h[5][k]
        ink[k] = (np.floor(pu[k] / cell) + np.floor(pv[k] / cell)).astype(np.int64) % 2
    k = inside & (pattern == 2)  # a pair of eyes: light discs with dark pupils looking one way
    if k.any():
        r = 0.22 * np.minimum(pw[k], 2 * ph[k])
        du = np.abs(pu[k] - 0.5 * pw[k]) - 0.25 * pw[k]
        dv = pv[k] - 0.5 * ph[k]
        look = (h[5][k] - 0.5) * 0.8 * r
        eye = du * du + dv * dv < r * r
        pupil = (du - look) ** 2 + (dv - look * (h[6][k] - 0.5)) ** 2 < (0.45 * r) ** 2
        e = np.where(pupil, 0, np.where(eye, 1, -1))
        e = np.where((du * du + dv * dv < (1.15 * r) ** 2) & ~eye, 0, e)  # a dark outline
        ink[k] = e
    k = inside & (pattern == 3)  # rows of glyph-like marks: 3x5 bit cells with a gap
    if k.any():
        g = 0.045 + 0.035 * h[5][k]  # glyph height
        cu, cv = 0.8 * g, 1.4 * g
        iu, iv = np.floor(pu[k] / cu), np.floor(pv[k] / cv)
        fu_, fv_ = pu[k] / cu - iu, pv[k] / cv - iv
        bu = np.floor(fu_ / 0.8 * 3).astype(np.int64)   # 3 bit columns in 80 % of the cell width
        bv = np.floor(fv_ / 0.72 * 5).astype(np.int64)  # 5 bit rows in 72 % of the cell height
        in_bits = (bu < 3) & (bv < 5)
        cells = np.stack([face[k], iu.astype(np.int64), iv.astype(np.int64), bu * 5 + bv], -1)
        on = in_bits & (hash01(cells, salt + 20) < 0.55)
        ink[k] = np.where(on, np.where(dark_base[k], 1, 0), -1)

    dark, light = sel[ink == 0], sel[ink == 1]
    out[dark] = INK_DARK
    out[light] = INK_LIGHT
    return out


def specular(dirs: np.ndarray, axis: np.ndarray, sign: np.ndarray, lights) -> np.ndarray:
    """White Blinn-Phong highlight [N] of axis-aligned faces (normal `axis`, `sign`) seen along world ray
    directions `dirs` [N,3] (unnormalised) under directional `lights` (unit vectors towards the light):
    SPEC_STRENGTH * sum_l w_l * max(n.h_l, 0)^SPEC_SHININESS where the light reaches the face, h_l the unit
    half vector of the view (-dirs) and light l. For an axis normal n.h = sign * (v_a + l_a) / |v + l|
    with |v + l|^2 = 2 + 2 v.l."""
    n = np.arange(len(dirs))
    inv_len = 1.0 / np.sqrt(np.einsum("ij,ij->i", dirs, dirs))
    view_a = -dirs[n, axis] * inv_len
    lights = np.asarray(lights, dtype=np.float64)
    view_l = -(dirs @ lights.T) * inv_len[:, None]  # [N,L]
    out = np.zeros(len(dirs))
    for k, weight in enumerate((1.0, SPEC_L2_WEIGHT)[:len(lights)]):
        light_a = lights[k][axis]
        nh = sign * (view_a + light_a) / np.sqrt(np.maximum(2.0 + 2.0 * view_l[:, k], 1e-12))
        out += weight * np.where(sign * light_a > 0, np.maximum(nh, 0.0) ** SPEC_SHININESS, 0.0)
    return SPEC_STRENGTH * out


def class_scene(seed: int, textured: bool = False, detail: bool = False, objects: int = 0) -> Scene:
    """The object of a generated class: make_scene's bricks (with `textured` surface detail), or with `objects` >= 2
    a scene of that many objects on a ground slab (mad.synth.multi), plus this module's fine structure when
    `detail` (what the generator renders, and what the decomposition's oracle re-renders)."""
    scene = make_multi_scene(seed, objects, textured) if objects >= 2 else make_scene(seed, textured=textured)
    return add_detail(scene, seed) if detail else scene
