"""Analytic ray casting of a Scene: Lambert shading from two fixed world lights + ambient, on white,
anti-aliased by supersampling (s x s sub-pixel samples placed symmetrically around each pixel centre).
A textured scene (Scene.texture_seed) modulates each box's albedo by mad.synth.texture after decals.
A detail scene (Scene.detail_seed) gets printed marks on brick bodies before decals and a white,
view-dependent Blinn-Phong highlight after the diffuse shading (mad.synth.detail)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mad.synth.detail import KIND_DETAIL, printed_albedo, specular
from mad.synth.scene import Scene
from mad.synth.texture import surface_texture

# lights: the six axis-aligned face orientations all get different brightness
_L1 = np.array([0.35, -0.55, 0.76]) / np.linalg.norm([0.35, -0.55, 0.76])
_L2 = np.array([-0.60, 0.30, -0.20]) / np.linalg.norm([-0.60, 0.30, -0.20])
AMBIENT, K1, K2 = 0.30, 0.70, 0.35


@dataclass
class HitBuffers:
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


def _raycast(scene: Scene, c2w: np.ndarray, height: int, width: int, focal: float) -> HitBuffers:
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
    batched = scene.kind == KIND_DETAIL  # the many small detail parts: cast together after the others
    for b in np.flatnonzero(~batched):
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
    if batched.any():
        _raycast_batched(np.flatnonzero(batched), rects, lo_rel, hi_rel, inv, t_buf, box_buf, axis_buf)
    comp = np.take_along_axis(dirs, axis_buf[..., None], -1)[..., 0]
    sign = np.where(comp > 0, -1, 1)
    return HitBuffers(t=t_buf, box=box_buf, axis=axis_buf, sign=sign, dirs=dirs, origin=origin)


def _raycast_batched(boxes: np.ndarray, rects: np.ndarray, lo_rel: np.ndarray, hi_rel: np.ndarray, inv: np.ndarray,
                     t_buf: np.ndarray, box_buf: np.ndarray, axis_buf: np.ndarray) -> None:
    """Cast `boxes` into the buffers in place, vectorised over boxes: each box's screen rectangle is padded
    to the power-of-two size class of its group. A pixel takes the nearest hit (on equal depth the lowest box
    index) if it is strictly nearer than what the buffers hold: the per-box loop's rule, boxes after it."""
    height, width = t_buf.shape
    rects = rects[boxes]
    size = np.maximum(rects[:, [1, 3]] - rects[:, [0, 2]], 0)
    keep = (size > 0).all(1)
    boxes, rects, size = boxes[keep], rects[keep], size[keep]
    if boxes.size == 0:
        return
    size_class = 2 ** np.ceil(np.log2(size)).astype(np.int64)
    pix, tt, bb, aa = [], [], [], []
    for rh, rw in sorted({(int(h), int(w)) for h, w in size_class}):
        g = np.flatnonzero((size_class[:, 0] == rh) & (size_class[:, 1] == rw))
        for part in np.array_split(g, max(1, len(g) * rh * rw // 400_000 + 1)):  # bounded memory per chunk
            b, r = boxes[part], rects[part]
            jj = r[:, 0, None] + np.arange(rh)[None]  # [G,rh]
            ii = r[:, 2, None] + np.arange(rw)[None]  # [G,rw]
            valid = (jj < r[:, 1, None])[:, :, None] & (ii < r[:, 3, None])[:, None, :]
            jj, ii = np.minimum(jj, height - 1), np.minimum(ii, width - 1)
            inv_v = inv[jj[:, :, None], ii[:, None, :]]  # [G,rh,rw,3]
            t1 = lo_rel[b][:, None, None] * inv_v
            t2 = hi_rel[b][:, None, None] * inv_v
            t_near = np.minimum(t1, t2)
            t_min = t_near.max(-1)
            t_max = np.maximum(t1, t2).min(-1)
            p = jj[:, :, None] * width + ii[:, None, :]
            hit = valid & (t_min <= t_max) & (t_min > 0.0) & (t_min < t_buf.reshape(-1)[p])
            if not hit.any():
                continue
            pix.append(p[hit])
            tt.append(t_min[hit])
            bb.append(np.broadcast_to(b[:, None, None], hit.shape)[hit])
            aa.append(t_near.argmax(-1)[hit])
    if not pix:
        return
    pix, tt, bb, aa = (np.concatenate(x) for x in (pix, tt, bb, aa))
    order = np.lexsort((bb, tt, pix))
    first = order[np.unique(pix[order], return_index=True)[1]]
    t_buf.reshape(-1)[pix[first]] = tt[first]
    box_buf.reshape(-1)[pix[first]] = bb[first]
    axis_buf.reshape(-1)[pix[first]] = aa[first]


def _shade(scene: Scene, buf: HitBuffers) -> np.ndarray:
    """Float RGB [h,w,3]: Lambert (two world lights) + ambient (+ specular for detail scenes), white
    background."""
    rgb = np.ones((*buf.box.shape, 3))
    hit = buf.box >= 0
    if not hit.any():
        return rgb
    box = buf.box[hit]
    axis = buf.axis[hit]
    sign = buf.sign[hit]
    albedo = scene.color[box].copy()
    if scene.detail_seed is not None:
        dirs_hit = buf.dirs[hit]
        body = np.flatnonzero(scene.kind[box] == 0)
        if body.size:
            b = box[body]
            pts = buf.origin + buf.t[hit][body, None] * dirs_hit[body]
            albedo[body] = printed_albedo(albedo[body], pts, axis[body], sign[body], scene.brick[b], scene.lo[b],
                                          scene.hi[b], scene.detail_seed)
    for dec in scene.decals:
        sel = np.nonzero((box == dec.box) & (axis == dec.axis) & (sign == dec.sign))[0]
        if sel.size == 0:
            continue
        pts = buf.origin + buf.t[hit][sel, None] * buf.dirs[hit][sel]
        d2 = ((pts[:, None, :] - dec.centers[None]) ** 2).sum(-1)
        inside = (d2 < dec.radii[None] ** 2).any(1)
        albedo[sel[inside]] = dec.color
    if scene.texture_seed is not None:
        points = buf.origin + buf.t[hit][:, None] * buf.dirs[hit]
        albedo = surface_texture(albedo, points, axis, sign, scene.brick[box], scene.texture_seed)
    n1 = sign * _L1[axis]
    n2 = sign * _L2[axis]
    shade = AMBIENT + K1 * np.maximum(n1, 0.0) + K2 * np.maximum(n2, 0.0)
    if scene.detail_seed is None:
        rgb[hit] = np.clip(albedo * shade[:, None], 0.0, 1.0)
    else:
        spec = specular(dirs_hit, axis, sign, (_L1, _L2))
        rgb[hit] = np.clip(albedo * shade[:, None] + spec[:, None], 0.0, 1.0)
    return rgb


def _downsample_quantise(rgb: np.ndarray, s: int) -> np.ndarray:
    h, w = rgb.shape[0] // s, rgb.shape[1] // s
    if s > 1:
        rgb = rgb.reshape(h, s, w, s, 3).mean(axis=(1, 3))
    return np.floor(rgb * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def render_with_buffers(scene: Scene, c2w, height: int, width: int, focal: float, supersample: int):
    s = int(supersample)
    if s < 1:
        raise ValueError("supersample must be >= 1")
    # s x s sub-pixel samples at offsets (k + 0.5)/s - 0.5 around each pixel centre == a render at
    # s-times the resolution with focal * s, block-averaged.
    buf = _raycast(scene, c2w, height * s, width * s, focal * s)
    return _downsample_quantise(_shade(scene, buf), s), buf


def render_view(scene: Scene, c2w, height: int, width: int, focal: float, supersample: int = 1) -> np.ndarray:
    """Render `scene` from camera-to-world `c2w` as uint8 RGB [H,W,3] on white."""
    return render_with_buffers(scene, c2w, height, width, focal, supersample)[0]
