"""The photometric polish of a pose against training photographs (inerf.photometric), on an analytic painted
sphere: the photographs and their depth are exact, so the polish must bring a perturbed pose back."""
from __future__ import annotations

import math

import numpy as np
import torch

from common.camera import Intrinsics
from common.rotations import rotation_error_deg
from inerf.photometric import alignment_points, photometric_polish
from inerf.se3 import exp_map
from nerf.rays import image_rays
from nerf.reprojection import SourceView, project

H = W = 64
K = Intrinsics.centred(0.5 * W / math.tan(0.5 * 0.5), W, H)


def look_at(azimuth_deg: float, elevation_deg: float, radius: float = 4.0) -> torch.Tensor:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    pos = radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    back = pos / np.linalg.norm(pos)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    pose[:3, 3] = pos
    return torch.tensor(pose, dtype=torch.float32)


def sphere_view(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [H, W, 3], depth along the optical axis [H, W], 0 off the sphere) of a unit sphere at the origin
    painted with smooth stripes, on white."""
    o, d = image_rays(c2w, H, W, K)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1.0
    a = (d * d).sum(-1)
    disc = b * b - a * c
    t = torch.where(disc > 0, (-b - disc.clamp_min(0).sqrt()) / a, torch.zeros_like(b))
    p = o + t[..., None] * d
    paint = torch.stack((0.5 + 0.35 * torch.sin(6 * p[..., 0]) * torch.cos(5 * p[..., 2]),
                         0.5 + 0.35 * torch.sin(7 * p[..., 1] + 1.0), 0.5 + 0.3 * torch.cos(6 * p[..., 2])), -1)
    hit = disc > 0
    return torch.where(hit[..., None], paint, torch.ones_like(paint)), torch.where(hit, t, torch.zeros_like(t))


def misplacement_px(points: torch.Tensor, pose: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean image distance (pixels) between where `pose` and `truth` put world `points`."""
    (grid, _), (true_grid, _) = project(points, pose, K, H, W), project(points, truth, K, H, W)
    return float(((grid - true_grid) * torch.tensor([W / 2, H / 2])).norm(dim=-1).mean())


def test_the_polish_brings_a_perturbed_pose_back_to_the_photographs_pose():
    """What the reference needs is the image: the polish puts the photographs' points where the query shows them
    (a small rotation and a shift of the camera trade against each other at this field of view, so the rotation
    alone is not the measure)."""
    truth = look_at(38.0, 25.0)
    query, _ = sphere_view(truth)
    targets = []
    for azimuth, elevation in ((30.0, 20.0), (45.0, 30.0)):
        pose = look_at(azimuth, elevation)
        image, depth = sphere_view(pose)
        targets.append(alignment_points(SourceView(image, depth, pose), K, 600))
    twist = torch.tensor([0.01, -0.01, 0.005, *(math.radians(0.8) * np.array([0.6, -0.48, 0.64]))],
                         dtype=torch.float32)
    start = exp_map(twist) @ truth
    polished, before, after = photometric_polish(query, start, targets, K, steps=80, lr=2e-3)
    points = torch.cat([t.points for t in targets])
    assert misplacement_px(points, start, truth) > 0.5
    assert misplacement_px(points, polished, truth) < 0.05
    assert after < 0.01 * before
    assert rotation_error_deg(polished.numpy(), truth.numpy()) < rotation_error_deg(start.numpy(), truth.numpy())
    # from the true pose it stays there
    same, _, _ = photometric_polish(query, truth, targets, K, steps=80, lr=2e-3)
    assert misplacement_px(points, same, truth) < 0.02


def test_the_chosen_points_are_textured_and_off_the_depth_edges():
    pose = look_at(30.0, 20.0)
    image, depth = sphere_view(pose)
    chosen = alignment_points(SourceView(image, depth, pose), K, 300)
    assert len(chosen.points) == 300
    assert torch.allclose(chosen.points.norm(dim=-1), torch.ones(300), atol=2e-3)   # on the sphere, not its rim


def test_a_trimmed_loss_is_not_pulled_by_a_part_the_query_lacks():
    """pose_polish_keep: a block of the query is painted white (a part gone); the photographs' points there fit
    nowhere: the plain loss follows them 5 pixels away, the loss averaged over the best-fitting share only comes
    towards the true pose."""
    truth = look_at(38.0, 25.0)
    query, _ = sphere_view(truth)
    query[20:40, 24:44] = 1.0
    pose = look_at(30.0, 20.0)
    image, depth = sphere_view(pose)
    targets = [alignment_points(SourceView(image, depth, pose), K, 600)]
    start = exp_map(torch.tensor([0.01, -0.01, 0.005, *(math.radians(0.8) * np.array([0.6, -0.48, 0.64]))],
                                 dtype=torch.float32)) @ truth
    points = targets[0].points
    trimmed, _, _ = photometric_polish(query, start, targets, K, steps=80, lr=2e-3, keep=0.6)
    plain, _, _ = photometric_polish(query, start, targets, K, steps=80, lr=2e-3)
    assert misplacement_px(points, plain, truth) > 2.0 * misplacement_px(points, start, truth)
    assert misplacement_px(points, trimmed, truth) < misplacement_px(points, start, truth)
    assert misplacement_px(points, trimmed, truth) < 0.2 * misplacement_px(points, plain, truth)
