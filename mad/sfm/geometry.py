"""Pose conventions and similarity transforms for structure-from-motion results (pure numpy).

COLMAP stores world-to-camera [R | t] for an OpenCV camera (x right, y down, z forward); we use
camera-to-world with an OpenGL camera (x right, y up, looks down -z):
    c2w = [[R^T diag(1, -1, -1), -R^T t], [0, 0, 0, 1]].
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

GL_FROM_CV = np.diag([1.0, -1.0, -1.0])  # flip camera y and z: OpenCV <-> OpenGL


def c2w_from_cam_from_world(cam_from_world: np.ndarray) -> np.ndarray:
    """COLMAP world-to-camera [R|t] (3x4, OpenCV camera) -> 4x4 camera-to-world (OpenGL camera)."""
    m = np.asarray(cam_from_world, dtype=np.float64)
    rot, t = m[:3, :3], m[:3, 3]
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T @ GL_FROM_CV
    c2w[:3, 3] = -rot.T @ t
    return c2w


def cam_from_world_from_c2w(c2w: np.ndarray) -> np.ndarray:
    """The inverse of c2w_from_cam_from_world: 4x4 OpenGL camera-to-world -> 3x4 OpenCV world-to-camera."""
    r_cv = np.asarray(c2w, dtype=np.float64)[:3, :3] @ GL_FROM_CV
    return np.concatenate([r_cv.T, (-r_cv.T @ np.asarray(c2w)[:3, 3])[:, None]], 1)


def axis_angle(axis, degrees: float) -> np.ndarray:
    """The 3x3 rotation by `degrees` about `axis` (any length)."""
    axis = np.asarray(axis, dtype=np.float64)
    return Rotation.from_rotvec(math.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()


def turned_about_axis(cam_from_world: np.ndarray, centre, axis, degrees: float) -> np.ndarray:
    """World-to-camera [R|t] (3x4) of the camera carried around the line through `centre` along `axis`
    by `degrees` (x -> Q (x - c) + c): at 180 degrees about the vertical, the view from the other side
    that a near-symmetric object can make SfM choose."""
    q, c = axis_angle(axis, degrees), np.asarray(centre, dtype=np.float64)
    rot, t = cam_from_world[:, :3] @ q.T, cam_from_world[:, 3]
    return np.concatenate([rot, (t + cam_from_world[:, :3] @ c - rot @ c)[:, None]], 1)


def closest_point_to_axes(centres: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """The least-squares point nearest to the lines centres[i] + s * dirs[i] (where cameras look)."""
    d = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # [N,3,3] projector orthogonal to each axis
    return np.linalg.lstsq(proj.sum(0), np.einsum("nij,nj->i", proj, centres), rcond=None)[0]


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation taking direction a to direction b (Rodrigues; a == -b turns by pi about an orthogonal axis)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    if c < -1 + 1e-10:
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = skew(v)
    return np.eye(3) + k + k @ k / (1 + c)


def skew(v: np.ndarray) -> np.ndarray:
    """The cross-product matrix [v]_x."""
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def normalise_poses(c2w: np.ndarray, radius: float, orient_up: bool = True) -> tuple[np.ndarray, dict]:
    """Move camera-to-world poses [N,4,4] into the frame the configs assume: origin at the point the
    optical axes pass closest to (the object), mean camera up along +z (`orient_up`), mean camera
    distance `radius`. Returns (poses, {"centre": in the input frame, "scale", "rotation"}): a point x of
    the input frame maps to scale * rotation @ (x - centre)."""
    c2w = np.array(c2w, dtype=np.float64)
    centres, looks = c2w[:, :3, 3], -c2w[:, :3, 2]
    centre = closest_point_to_axes(centres, looks)
    rot = np.eye(3)
    if orient_up:
        up = c2w[:, :3, 1].mean(0)
        if np.linalg.norm(up) > 1e-6:
            rot = rotation_between(up, np.array([0.0, 0.0, 1.0]))
    out = c2w.copy()
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = (centres - centre) @ rot.T
    scale = radius / float(np.linalg.norm(out[:, :3, 3], axis=1).mean())
    out[:, :3, 3] *= scale
    return out, {"centre": centre.tolist(), "scale": scale, "rotation": rot.tolist()}


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity (s, R, t) minimising sum ||s R src_i + t - dst_i||^2 over points [N,3] (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(xd.T @ xs / len(src))
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rot = u @ sign @ vt
    s = float(np.trace(np.diag(d) @ sign) / ((xs ** 2).sum() / len(src)))
    return s, rot, mu_d - s * rot @ mu_s


def scene_bounds(camera_centres: np.ndarray, point_radii: np.ndarray, quantile: float = 99.0,
                 margin: float = 1.15) -> dict[str, float]:
    """The bounds a NeRF of the scene needs, from the sparse points' distances to the object centre (the origin)
    and the camera centres [N, 3]: the object's radius (the points' `quantile` percentile x `margin`: a few stray
    points do not inflate it) and the nearest and farthest depth any camera needs along its rays to hold it."""
    radius = margin * float(np.percentile(point_radii, quantile))
    distances = np.linalg.norm(camera_centres, axis=1)
    return {"object_radius": radius, "near": max(float(distances.min()) - radius, 0.05 * float(distances.min())),
            "far": float(distances.max()) + radius}
