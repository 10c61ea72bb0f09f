"""Cameras of the generator (Blender / NeRF-synthetic convention): on a sphere looking at the origin,
world up = +z, no roll; training views on a Fibonacci spiral, test views at random poses."""
from __future__ import annotations

import math

import numpy as np

BLENDER_CAMERA_ANGLE_X = 0.6911112070083618
TRAIN_STREAM = 104729


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
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), TRAIN_STREAM]))
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
