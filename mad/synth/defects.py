"""Defects placed on a Scene at a given pose: Stains (a decal), Burrs (small protruding boxes), Missing
(a top-level brick removed). The mask is the exact per-pixel difference to the normal render."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mad.synth.cameras import random_pose
from mad.synth.render import HitBuffers, render_view, render_with_buffers
from mad.synth.scene import Decal, Scene

DEFECT_TYPES = ("Burrs", "Missing", "Stains")


@dataclass(frozen=True)
class DefectStyle:
    """Sizes and contrast of the generated Burrs and Stains (world units; ranges are uniform draws)."""
    burr_count: tuple[int, int] = (2, 5)              # integers in [lo, hi)
    burr_spread: float = 0.06                         # burr centres within +- this of the picked point
    burr_width: tuple[float, float] = (0.04, 0.08)
    burr_length: tuple[float, float] = (0.08, 0.18)   # how far a burr stands out of its face
    burr_shade: float = 0.55                          # burr colour = the brick's colour x this
    stain_radius: tuple[float, float] = (0.07, 0.15)
    stain_opacity: float = 1.0                        # stain colour = mix of the face colour and the stain's


# MAD's defects on its detailed toys are small and of the part's own material: a burr is a bump in the brick's
# colour that shows through its shading, a stain a faint discolouration. The `synth_detail` classes draw theirs
# in this style, at the scale of the detail the NeRF blurs (benchmarks/RESULTS.md, "The detailed stand-in").
SUBTLE_DEFECTS = DefectStyle(burr_count=(1, 4), burr_spread=0.04, burr_width=(0.03, 0.06), burr_length=(0.05, 0.12),
                             burr_shade=0.85, stain_radius=(0.05, 0.1), stain_opacity=0.5)

STAIN_COLORS = np.array([
    [0.22, 0.13, 0.06],   # oil brown
    [0.06, 0.06, 0.06],   # soot
    [0.62, 0.28, 0.08],   # rust
    [0.10, 0.12, 0.45],   # ink
    [0.93, 0.93, 0.88],   # paint
    [0.35, 0.45, 0.15],   # mould
    [0.75, 0.10, 0.50],   # magenta
])


def _pick_surface_point(rng, scene: Scene, buf: HitBuffers, min_cos: float):
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


def _make_stain(rng, scene: Scene, buf: HitBuffers, style: DefectStyle):
    pick = _pick_surface_point(rng, scene, buf, 0.4)
    if pick is None:
        return None
    b, axis, sign, point = pick
    tangents = [a for a in range(3) if a != axis]
    k = int(rng.integers(2, 5))
    r0 = rng.uniform(*style.stain_radius)
    centers = np.repeat(point[None], k, 0)
    for a in tangents:
        centers[:, a] += rng.uniform(-0.6, 0.6, k) * r0
    centers[0] = point
    radii = rng.uniform(0.45, 1.0, k) * r0
    base = scene.color[b]
    far = [c for c in STAIN_COLORS if np.linalg.norm(c - base) > 0.45]
    color = np.array(far[int(rng.integers(len(far)))])
    if style.stain_opacity < 1.0:
        color = (1.0 - style.stain_opacity) * base + style.stain_opacity * color
    return scene.with_decal(Decal(box=b, axis=axis, sign=sign, centers=centers, radii=radii, color=color))


def _make_burrs(rng, scene: Scene, buf: HitBuffers, style: DefectStyle):
    pick = _pick_surface_point(rng, scene, buf, 0.25)
    if pick is None:
        return None
    b, axis, sign, point = pick
    tangents = [a for a in range(3) if a != axis]
    n = int(rng.integers(*style.burr_count))
    lo, hi = np.zeros((n, 3)), np.zeros((n, 3))
    for m in range(n):
        base = point.copy()
        for a in tangents:
            base[a] += rng.uniform(-style.burr_spread, style.burr_spread)
            half = 0.5 * rng.uniform(*style.burr_width)
            lo[m, a], hi[m, a] = base[a] - half, base[a] + half
        length = rng.uniform(*style.burr_length)
        end = point[axis] + sign * length
        lo[m, axis], hi[m, axis] = min(point[axis], end), max(point[axis], end)
    color = np.repeat((scene.color[b] * style.burr_shade)[None], n, 0)
    return scene.with_boxes(lo, hi, color, kind=2)


def _make_missing(rng, scene: Scene, buf: HitBuffers, min_pixels: int):
    visible = buf.box[buf.box >= 0]
    counts = np.bincount(scene.brick[visible][scene.brick[visible] >= 0], minlength=int(scene.brick.max()) + 1)
    cand = [b for b in scene.removable if counts[b] >= min_pixels]
    if not cand:
        return None
    return scene.without_brick(cand[int(rng.integers(len(cand)))])


def make_defect_view(scene: Scene, defect: str, rng: np.random.Generator, *, height: int, width: int,
                     focal: float, supersample: int, radius: float, elev_range_deg, min_mask_pixels: int,
                     mask_tolerance: int = 1, max_attempts: int = 200, style: DefectStyle = DefectStyle()):
    """Draw poses until a defect instance of type `defect` is visible with >= min_mask_pixels.
    `style`: the Burrs' and Stains' sizes and contrast.
    Returns (image uint8 [H,W,3], mask uint8 [H,W] 0/255, c2w [4,4], attempts)."""
    s = int(supersample)
    for attempt in range(1, max_attempts + 1):
        c2w = random_pose(rng, radius, elev_range_deg)
        normal, buf = render_with_buffers(scene, c2w, height, width, focal, s)
        if defect == "Stains":
            bad = _make_stain(rng, scene, buf, style)
        elif defect == "Burrs":
            bad = _make_burrs(rng, scene, buf, style)
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
