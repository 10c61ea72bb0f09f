"""SE(3) pose parameterisation for iNeRF: pure, batched, differentiable tensor functions.

A twist is ``xi = (rho, omega)`` in R^6 (translation part first, then rotation part).
``exp_map`` uses the closed form

    R = I + A W + B W^2,   t = V rho,   V = I + B W + C W^2,
    W = hat(omega), theta = |omega|,
    A = sin(theta)/theta, B = (1 - cos(theta))/theta^2, C = (theta - sin(theta))/theta^3,

with Taylor series for small theta, so values AND gradients stay finite at the zero twist
(where iNeRF starts every optimisation).

Correction convention (``apply_correction``): ``refined = exp(xi) @ coarse``. The twist is
applied by LEFT multiplication, i.e. in the world frame, as in iNeRF and its PyTorch port used
by the PAD reference code. With object-centred scenes (object at the world origin, cameras on a
sphere looking at it) a world-frame rotation orbits the camera around the object, which is
exactly the kind of error a retrieved neighbouring training view has.
"""
from __future__ import annotations

import math

import torch

_SMALL_ANGLE = 1e-2  # below this |omega| the Taylor series (to theta^4) is exact to float64 precision


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched small-matrix product as broadcast multiply + sum, so global TF32 matmul settings on
    CUDA can never lower the precision of poses (a TF32 4x4 product errs by ~1e-3)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(dim=-2)


def hat(omega: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> skew-symmetric [..., 3, 3] with hat(a) @ b = a x b."""
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([
        torch.stack([zero, -z, y], dim=-1),
        torch.stack([z, zero, -x], dim=-1),
        torch.stack([-y, x, zero], dim=-1),
    ], dim=-2)


def vee(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of `hat` on the antisymmetric part: [..., 3, 3] -> [..., 3]."""
    return 0.5 * torch.stack([
        matrix[..., 2, 1] - matrix[..., 1, 2],
        matrix[..., 0, 2] - matrix[..., 2, 0],
        matrix[..., 1, 0] - matrix[..., 0, 1],
    ], dim=-1)


def _coefficients(theta_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A, B, C of the closed form as functions of theta^2, safe (incl. gradients) near 0."""
    small = theta_sq < _SMALL_ANGLE ** 2
    # Evaluate the exact branch only on a safe argument so its gradient never becomes NaN.
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = torch.sqrt(safe_sq)
    sin, cos = torch.sin(theta), torch.cos(theta)
    a_exact = sin / theta
    b_exact = (1.0 - cos) / safe_sq
    c_exact = (theta - sin) / (safe_sq * theta)
    t2 = theta_sq
    a_taylor = 1.0 - t2 / 6.0 + t2 * t2 / 120.0
    b_taylor = 0.5 - t2 / 24.0 + t2 * t2 / 720.0
    c_taylor = 1.0 / 6.0 - t2 / 120.0 + t2 * t2 / 5040.0
    return (torch.where(small, a_taylor, a_exact),
            torch.where(small, b_taylor, b_exact),
            torch.where(small, c_taylor, c_exact))


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rodrigues: [..., 3] axis-angle -> rotation matrix [..., 3, 3]."""
    w = hat(omega)
    a, b, _ = _coefficients((omega * omega).sum(-1))
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(w)
    return eye + a[..., None, None] * w + b[..., None, None] * matmul(w, w)


def exp_map(twist: torch.Tensor) -> torch.Tensor:
    """Twist [..., 6] = (rho, omega) -> homogeneous SE(3) matrix [..., 4, 4]."""
    if twist.shape[-1] != 6:
        raise ValueError(f"twist must have 6 components (rho, omega), got shape {tuple(twist.shape)}")
    rho, omega = twist[..., :3], twist[..., 3:]
    w = hat(omega)
    w2 = matmul(w, w)
    a, b, c = _coefficients((omega * omega).sum(-1))
    eye = torch.eye(3, dtype=twist.dtype, device=twist.device).expand_as(w)
    rot = eye + a[..., None, None] * w + b[..., None, None] * w2
    v = eye + b[..., None, None] * w + c[..., None, None] * w2
    trans = matmul(v, rho[..., None])[..., 0]
    top = torch.cat([rot, trans[..., None]], dim=-1)                       # [..., 3, 4]
    bottom = torch.zeros((*top.shape[:-2], 1, 4), dtype=twist.dtype, device=twist.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def so3_log(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrix [..., 3, 3] -> axis-angle [..., 3] with angle in [0, pi]. Not meant for autograd."""
    dtype = rot.dtype
    r = rot.to(torch.float64)
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    axis_sin = vee(r)                                  # = sin(theta) * axis
    sin = torch.sin(theta)
    # Regular case: omega = theta / sin(theta) * vee(R); Taylor near 0 (theta/sin ~ 1 + theta^2/6).
    small = theta < 1e-4
    ratio = torch.where(small, 1.0 + theta * theta / 6.0, theta / torch.where(small, torch.ones_like(sin), sin))
    omega = ratio[..., None] * axis_sin
    # Near pi, sin(theta) -> 0 and vee(R) loses the axis: read it from the symmetric part,
    # (R + R^T)/2 = cos I + (1 - cos) a a^T, choosing the best-conditioned column.
    near_pi = theta > math.pi - 1e-3
    if bool(near_pi.any()):
        eye = torch.eye(3, dtype=torch.float64, device=r.device)
        sym = 0.5 * (r + r.transpose(-1, -2)) - cos[..., None, None] * eye
        aat = sym / (1.0 - cos).clamp_min(1e-12)[..., None, None]
        col = aat.diagonal(dim1=-2, dim2=-1).argmax(-1)
        axis = torch.take_along_dim(aat, col[..., None, None].expand((*aat.shape[:-2], 3, 1)), dim=-1)[..., 0]
        axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sign = torch.where((axis * axis_sin).sum(-1) < 0, -1.0, 1.0)
        omega = torch.where(near_pi[..., None], sign[..., None] * theta[..., None] * axis, omega)
    return omega.to(dtype)


def log_map(pose: torch.Tensor) -> torch.Tensor:
    """Homogeneous SE(3) matrix [..., 4, 4] -> twist [..., 6] = (rho, omega); inverse of `exp_map`."""
    dtype = pose.dtype
    p = pose.to(torch.float64)
    omega = so3_log(p[..., :3, :3])
    w = hat(omega)
    _a, b, c = _coefficients((omega * omega).sum(-1))
    eye = torch.eye(3, dtype=torch.float64, device=p.device).expand_as(w)
    v = eye + b[..., None, None] * w + c[..., None, None] * matmul(w, w)
    rho = torch.linalg.solve(v, p[..., :3, 3:4])[..., 0]
    return torch.cat([rho, omega], dim=-1).to(dtype)


def apply_correction(twist: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """refined = exp(twist) @ pose (world-frame correction, see the module docstring)."""
    return matmul(exp_map(twist.to(pose.dtype)), pose)
