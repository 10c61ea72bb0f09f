"""Object masks that agree between views: the object's visual hull, voted from posed photographs.

A mask found in each photograph alone (mad.foreground.object_mask) disagrees from view to view on a capture taken
in a room: a lamp behind the object joins it in one photograph, a shadowed part of the object drops out in the
next. Trained on such masks, a NeRF draws a silhouette no photograph has, and a query masked its own way differs
from its reference all along the outline. With the photographs' poses the masks can agree: a cell of a voxel grid
around the object is kept when the photographs that see it (it projects inside their frame) put it on the object
in at least `keep` of them (brighter than the backdrop: mad.foreground.brighter_than_backdrop, a mask generous
to the object's darker parts, that the other views carve back); each view's mask is then the kept cells
projected into it (their centres marked, closed up, holes filled). The room never votes the same way from many
sides, so it falls away; the object, seen from every side, stays. Pure numpy on masks, poses and a pinhole camera
(fl_x, fl_y, cx, cy of the masks' size; OpenGL camera-to-world poses, as transforms.json).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from common.errors import DataError
from mad.foreground import fill_holes


def project(points: np.ndarray, c2w: np.ndarray, camera: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, depth) [N] of world points [N, 3] in the pinhole camera `c2w` (OpenGL: it looks down its -z); pixel
    i's centre is at i + 0.5; depth <= 0 behind the camera."""
    local = (points - c2w[:3, 3]) @ c2w[:3, :3]            # R^T (X - o), row-wise
    depth = -local[:, 2]
    safe = np.where(depth > 1e-6, depth, 1.0)
    return camera["fl_x"] * local[:, 0] / safe + camera["cx"], -camera["fl_y"] * local[:, 1] / safe + camera["cy"], \
        depth


def grid_points(radius: float, resolution: int, centre: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """[R^3, 3] float32 centres of a resolution^3 grid of cells filling the cube of half-side `radius`."""
    axis = (np.arange(resolution) + 0.5) / resolution * 2.0 * radius - radius
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return (np.stack([x, y, z], -1).reshape(-1, 3) + np.asarray(centre)).astype(np.float32)


def visual_hull(masks: Sequence[np.ndarray], poses: Sequence[np.ndarray], camera: dict, radius: float,
                resolution: int = 96, keep: float = 0.85, min_views: int = 3, erode: int = 0) -> np.ndarray:
    """[R^3, 3] the centres of the grid cells (grid_points) that at least `keep` of the views seeing them put on
    the object (`masks` [H, W] bool, one per pose), and that at least `min_views` views see; then `erode` layers of
    cells peeled off its surface. A hull is larger than its object wherever no view grazes the object there (and by
    up to a cell everywhere), so each view's silhouette holds a rim of the room; peeling it in 3D keeps the views'
    masks those of one shape."""
    if len(masks) != len(poses) or not masks:
        raise DataError(f"a visual hull needs one mask per pose (got {len(masks)} masks, {len(poses)} poses)")
    points = grid_points(radius, resolution)
    inside = np.zeros(len(points), np.int32)
    seen = np.zeros(len(points), np.int32)
    for mask, c2w in zip(masks, poses, strict=True):
        height, width = mask.shape
        u, v, depth = project(points, np.asarray(c2w, np.float64), camera)
        col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        visible = (depth > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        seen += visible
        inside[visible] += mask[row[visible], col[visible]]
    kept = (seen >= min_views) & (inside >= keep * np.maximum(seen, 1))
    if erode > 0:
        kept = ndimage.binary_erosion(kept.reshape((resolution,) * 3), iterations=erode).reshape(-1)
    return points[kept]


def hull_mask(hull: np.ndarray, c2w: np.ndarray, camera: dict, height: int, width: int, radius: float,
              resolution: int = 96) -> np.ndarray:
    """[H, W] bool: the hull's cells (visual_hull) seen from `c2w`: each cell's centre marked, the marks closed up
    over the cell's projected size, holes filled."""
    mask = np.zeros((height, width), np.uint8)
    if len(hull):
        u, v, depth = project(hull, np.asarray(c2w, np.float64), camera)
        front = depth > 0
        col, row = np.floor(u[front]).astype(np.int64), np.floor(v[front]).astype(np.int64)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        mask[row[inside], col[inside]] = 1
        cell_px = 2.0 * radius / resolution * camera["fl_x"] / float(np.median(depth[front])) if front.any() else 1.0
        size = 2 * int(np.ceil(0.75 * cell_px)) + 1
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return fill_holes(mask, [(0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)])
