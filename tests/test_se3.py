"""SE(3) exponential/logarithm against closed forms, and the pose-error measures."""
import math

import numpy as np
import pytest
import torch

from common.rotations import rotation_error_deg
from inerf.metrics import summarise, translation_error_frac
from inerf.se3 import apply_correction, exp_map, hat, log_map, so3_exp, vee


def rz(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_hat_is_cross_product():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert torch.allclose((hat(a) @ b[..., None])[..., 0], torch.linalg.cross(a, b))
    assert torch.allclose(vee(hat(a)), a)


def test_exp_log_round_trip_random_twists():
    g = torch.Generator().manual_seed(1)
    twist = torch.randn(64, 6, generator=g, dtype=torch.float64)
    twist[:, 3:] *= 0.9  # rotation angles mostly within (0, pi)
    twist = twist[twist[:, 3:].norm(dim=1) < math.pi - 0.05]
    pose = exp_map(twist)
    assert torch.allclose(log_map(pose), twist, atol=1e-9)
    rot = pose[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(rot), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(len(rot), dtype=torch.float64))
    assert torch.allclose(pose[:, 3], torch.tensor([0.0, 0, 0, 1], dtype=torch.float64).expand(len(pose), 4))


def test_pure_rotation_about_z_is_rz():
    for theta in (1e-5, 0.3, 1.0, 2.5, math.pi - 1e-4):
        pose = exp_map(torch.tensor([[0, 0, 0, 0, 0, theta]], dtype=torch.float64))[0]
        assert torch.allclose(pose[:3, :3], rz(theta), atol=1e-12)
        assert torch.allclose(pose[:3, 3], torch.zeros(3, dtype=torch.float64))


def test_pure_translation():
    t = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    pose = exp_map(torch.cat([t, torch.zeros(3, dtype=torch.float64)])[None])[0]
    assert torch.allclose(pose[:3, :3], torch.eye(3, dtype=torch.float64))
    assert torch.allclose(pose[:3, 3], t)


def test_rotation_and_translation_closed_form_v_matrix():
    # omega along z by theta, rho along x: t = V rho = (sin/theta, (1-cos)/theta, 0)
    theta = 0.7
    pose = exp_map(torch.tensor([[1.0, 0, 0, 0, 0, theta]], dtype=torch.float64))[0]
    expected = torch.tensor([math.sin(theta) / theta, (1 - math.cos(theta)) / theta, 0.0], dtype=torch.float64)
    assert torch.allclose(pose[:3, 3], expected, atol=1e-12)


def test_zero_twist_leaves_pose_unchanged():
    pose = torch.eye(4)
    pose[:3, :3] = rz(0.4).float()
    pose[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    out = apply_correction(torch.zeros(1, 6), pose[None])[0]
    assert torch.equal(out, pose)


def test_small_angle_stability_values_and_gradients():
    for scale in (0.0, 1e-12, 1e-8, 1e-4, 9e-3, 1.1e-2):
        twist = torch.full((2, 6), scale, dtype=torch.float32, requires_grad=True)
        pose = exp_map(twist)
        pose.sum().backward()
        assert torch.isfinite(pose).all() and torch.isfinite(twist.grad).all()
        ref = exp_map(twist.detach().double())
        assert torch.allclose(pose.double(), ref, atol=1e-6)
        ref_rot = torch.linalg.matrix_exp(hat(twist.detach().double()[:, 3:]))
        assert torch.allclose(so3_exp(twist.detach().double()[:, 3:]), ref_rot, atol=1e-12)
    # continuity across the Taylor switch
    a = exp_map(torch.tensor([[0.1, 0.2, 0.3, 0.0, 0.0, 0.01 - 1e-9]], dtype=torch.float64))
    b = exp_map(torch.tensor([[0.1, 0.2, 0.3, 0.0, 0.0, 0.01 + 1e-9]], dtype=torch.float64))
    assert torch.allclose(a, b, atol=1e-8)


def test_exp_matches_matrix_exponential_of_twist_matrix():
    g = torch.Generator().manual_seed(2)
    twist = torch.randn(16, 6, generator=g, dtype=torch.float64)
    xi = torch.zeros(16, 4, 4, dtype=torch.float64)
    xi[:, :3, :3] = hat(twist[:, 3:])
    xi[:, :3, 3] = twist[:, :3]
    assert torch.allclose(exp_map(twist), torch.linalg.matrix_exp(xi), atol=1e-10)


def test_log_near_pi():
    for axis in ([0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [-0.3, 0.5, 0.8]):
        a = torch.tensor(axis, dtype=torch.float64)
        a = a / a.norm()
        for theta in (math.pi - 1e-6, math.pi):
            pose = exp_map(torch.cat([torch.tensor([0.2, 0.1, -0.4], dtype=torch.float64), theta * a])[None])
            back = exp_map(log_map(pose))
            assert torch.allclose(back, pose, atol=1e-6)


def test_rotation_error_hand_made():
    p = np.eye(4)
    q = np.eye(4)
    q[:3, :3] = rz(math.radians(30)).numpy()
    assert rotation_error_deg(p, q) == pytest.approx(30.0, abs=1e-9)
    assert rotation_error_deg(q, q) == pytest.approx(0.0, abs=1e-5)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert rotation_error_deg(p, flip) == pytest.approx(180.0, abs=1e-6)
    batch = rotation_error_deg(np.stack([p, q]), np.stack([q, q]))
    assert batch.shape == (2,) and batch[0] == pytest.approx(30.0)


def test_translation_error_and_summary():
    a = np.eye(4)
    a[:3, 3] = [0.0, 0.0, 4.0]
    b = a.copy()
    b[:3, 3] = [0.4, 0.0, 4.0]
    assert translation_error_frac(b, a) == pytest.approx(0.1)
    assert translation_error_frac(a, a) == pytest.approx(0.0)
    s = summarise([1.0, 3.0, 0.5, 10.0], [0.0, 0.1, 0.2, 0.3])
    assert s["n"] == 4
    assert s["rot_median_deg"] == pytest.approx(2.0)
    assert s["share_under_2deg"] == pytest.approx(0.5)
    assert s["share_over_5deg"] == pytest.approx(0.25)
    assert s["rot_p90_deg"] == pytest.approx(np.percentile([1, 3, 0.5, 10], 90))
    assert s["trans_median_frac"] == pytest.approx(0.15)
