"""Closed-form checks of the NeRF math: encoding, rays, sampling, compositing."""
import math

import numpy as np
import pytest
import torch

from common.camera import Intrinsics
from nerf.compositing import composite
from nerf.encoding import encoding_dim, positional_encoding
from nerf.field import NeRFField
from nerf.options import NeRFOptions
from nerf.rays import camera_directions, image_rays, rays_from_poses
from nerf.renderer import NeRFRenderer
from nerf.sampling import merge_samples, sample_bins, sample_pdf, stratified_samples


def test_encoding_values_and_shape():
    x = torch.tensor([[0.5, -1.0, 2.0]])
    enc = positional_encoding(x, 3)
    assert enc.shape == (1, encoding_dim(3, 3)) == (1, 21)
    assert torch.equal(enc[0, :3], x[0])
    for k in range(3):
        start = 3 + 6 * k
        torch.testing.assert_close(enc[0, start:start + 3], torch.sin(2.0 ** k * x[0]))
        torch.testing.assert_close(enc[0, start + 3:start + 6], torch.cos(2.0 ** k * x[0]))
    assert positional_encoding(x, 0).shape == (1, 3)
    assert positional_encoding(torch.zeros(4, 5, 3), 2, include_input=False).shape == (4, 5, 12)
    assert encoding_dim(3, 2, include_input=False) == 12


def test_field_shapes_and_ranges():
    torch.manual_seed(0)
    pts, dirs = torch.randn(4, 7, 3), torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    for use_viewdirs in (True, False):
        field = NeRFField(depth=4, width=32, skips=(2,), multires=4, multires_views=2, use_viewdirs=use_viewdirs)
        rgb, sigma = field(pts, dirs)
        assert rgb.shape == (4, 7, 3) and sigma.shape == (4, 7)
        assert (rgb > 0).all() and (rgb < 1).all()
    assert field.pts_linears[3].in_features == 32 + field.in_ch      # skip after index 2 feeds index 3
    default = NeRFField()
    assert [layer.in_features for layer in default.pts_linears] == [63, 256, 256, 256, 256, 256 + 63, 256, 256]
    with pytest.raises(ValueError):
        NeRFField(depth=4, skips=(3,))


def test_camera_directions_convention():
    h, w, f = 4, 6, 3.0
    d = camera_directions(h, w, Intrinsics.centred(f, w, h), device="cpu")
    assert d.shape == (h, w, 3)
    torch.testing.assert_close(d[0, 0], torch.tensor([(0.5 - 3) / f, -(0.5 - 2) / f, -1.0]))
    torch.testing.assert_close(d[h - 1, w - 1], torch.tensor([(5.5 - 3) / f, -(3.5 - 2) / f, -1.0]))
    # odd size: the centre pixel looks straight down -z
    dc = camera_directions(5, 5, Intrinsics.centred(2.0, 5, 5), device="cpu")
    torch.testing.assert_close(dc[2, 2], torch.tensor([0.0, 0.0, -1.0]))
    assert (d[..., 2] == -1).all()


def test_principal_point_and_two_focal_lengths():
    """fx, fy, cx, cy enter as ((i + 0.5 - cx)/fx, -(j + 0.5 - cy)/fy, -1): moving the principal point by
    whole pixels shifts the direction grid by those pixels; a point projected with K is on its pixel's ray."""
    h, w = 6, 8
    centred = camera_directions(h, w, Intrinsics.centred(5.0, w, h), device="cpu", dtype=torch.float64)
    shifted = camera_directions(h, w, Intrinsics(5.0, 5.0, w / 2 + 2, h / 2 - 1), device="cpu", dtype=torch.float64)
    torch.testing.assert_close(shifted[:-1, 2:], centred[1:, :-2])       # pixel (j, i) now sees (j + 1, i - 2)
    k = Intrinsics(7.0, 4.0, 2.25, 4.5)
    d = camera_directions(h, w, k, device="cpu", dtype=torch.float64)
    torch.testing.assert_close(d[0, 0], torch.tensor([(0.5 - 2.25) / 7.0, -(0.5 - 4.5) / 4.0, -1.0],
                                                     dtype=torch.float64))
    # K projects every pixel's ray (any depth) back onto that pixel's centre (i + 0.5, j + 0.5)
    points_cv = d.numpy().reshape(-1, 3) * np.array([1.0, -1.0, -1.0]) * 3.7   # OpenGL -> OpenCV camera
    uv = points_cv @ k.matrix().T
    uv = uv[:, :2] / uv[:, 2:]
    jj, ii = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(uv, np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1), atol=1e-12)
    # the centred camera is bit-identical to the explicit one
    torch.testing.assert_close(camera_directions(h, w, Intrinsics(5.0, 5.0, w / 2, h / 2), device="cpu"),
                               camera_directions(h, w, Intrinsics.centred(5.0, w, h), device="cpu"), rtol=0, atol=0)


def test_rays_from_poses_applies_rotation_and_translation():
    c = math.cos(0.3)
    s = math.sin(0.3)
    c2w = torch.tensor([[c, 0, s, 1.0], [0, 1, 0, 2.0], [-s, 0, c, 3.0], [0, 0, 0, 1.0]])
    dirs = camera_directions(3, 5, Intrinsics.centred(2.0, 5, 3), device="cpu")
    rays_o, rays_d = rays_from_poses(c2w, dirs)
    assert rays_o.shape == rays_d.shape == (3, 5, 3)
    torch.testing.assert_close(rays_o, torch.tensor([1.0, 2.0, 3.0]).expand(3, 5, 3))
    torch.testing.assert_close(rays_d, dirs @ c2w[:3, :3].T)
    torch.testing.assert_close(rays_d[1, 2], torch.tensor([-s, 0.0, -c]))   # optical axis = -z column
    _o2, d2 = image_rays(c2w, 3, 5, Intrinsics.centred(2.0, 5, 3))
    torch.testing.assert_close(d2, rays_d)
    # broadcasting: [B,1,4,4] poses with [B,R,3] directions
    poses = torch.stack([c2w, torch.eye(4)])[:, None]
    bo, bd = rays_from_poses(poses, dirs.reshape(1, -1, 3).expand(2, -1, -1))
    assert bo.shape == bd.shape == (2, 15, 3)
    torch.testing.assert_close(bd[1], dirs.reshape(-1, 3))


def test_rays_from_poses_is_differentiable_in_pose():
    c2w = torch.eye(4).requires_grad_(True)
    rays_o, rays_d = rays_from_poses(c2w, camera_directions(2, 2, Intrinsics.centred(1.0, 2, 2), device="cpu"))
    (rays_o.sum() + (rays_d ** 2).sum()).backward()
    assert c2w.grad is not None and c2w.grad[:3, 3].abs().sum() > 0 and c2w.grad[:3, :3].abs().sum() > 0


def test_stratified_samples_one_per_bin():
    g = torch.Generator().manual_seed(0)
    z = stratified_samples(2.0, 6.0, 16, 100, perturb=True, generator=g)
    assert z.shape == (100, 16)
    assert (z >= 2.0).all() and (z <= 6.0).all()
    assert (z[:, 1:] >= z[:, :-1]).all()
    det = stratified_samples(2.0, 6.0, 16, 1, perturb=False)[0]
    torch.testing.assert_close(det, torch.linspace(2.0, 6.0, 16))
    lower, upper = sample_bins(det)
    assert ((z >= lower) & (z <= upper)).all()


def test_importance_sampling_concentrates_on_weights():
    bins = torch.linspace(2.0, 6.0, 11).expand(3, 11)
    weights = torch.zeros(3, 10)
    weights[:, 6] = 1.0                                                # all mass in [4.4, 4.8]
    z = sample_pdf(bins, weights, 64, det=True)
    assert z.shape == (3, 64)
    assert (z[:, 1:] >= z[:, :-1]).all() and (z >= 2.0).all() and (z <= 6.0).all()
    assert ((z >= 4.4 - 1e-5) & (z <= 4.8 + 1e-5)).float().mean() > 0.9
    torch.testing.assert_close(z, sample_pdf(bins, weights, 64, det=True))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    zr = sample_pdf(bins, weights, 64, det=False, generator=g1)
    torch.testing.assert_close(zr, sample_pdf(bins, weights, 64, det=False, generator=g2))
    assert ((zr >= 4.4 - 1e-5) & (zr <= 4.8 + 1e-5)).float().mean() > 0.8
    merged = merge_samples(bins[:, :5], z)
    assert merged.shape == (3, 69) and (merged[:, 1:] >= merged[:, :-1]).all()


def test_composite_constant_slab_matches_closed_form():
    # density sigma on [3, 4] (samples at the interval starts), zero elsewhere; ray with ||d|| = 1.5
    z = torch.linspace(2.0, 6.0, 41)[None]                             # spacing 0.1
    inside = (z >= 3.0 - 1e-6) & (z < 4.0 - 1e-6)
    sigma_val = 0.7
    sigma = torch.where(inside, torch.tensor(sigma_val), torch.tensor(-1.0))   # negatives are clipped by relu
    colour = torch.tensor([0.2, 0.4, 0.6])
    rgb = colour.expand(1, 41, 3)
    rays_d = torch.tensor([[0.0, 1.5 * 0.6, -1.5 * 0.8]])
    out = composite(sigma, rgb, z, rays_d, white_bkgd=True)
    acc = 1.0 - math.exp(-sigma_val * 1.0 * 1.5)
    torch.testing.assert_close(out["acc"], torch.tensor([acc]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["rgb"][0], acc * colour + (1.0 - acc), rtol=1e-4, atol=1e-5)
    # expected depth: the slab's discrete weights times the sample depths
    w = out["weights"][0]
    assert w[~inside[0]].abs().max() < 1e-6
    torch.testing.assert_close(out["depth"], (w * z[0]).sum()[None])
    black = composite(sigma, rgb, z, rays_d, white_bkgd=False)
    torch.testing.assert_close(black["rgb"][0], acc * colour, rtol=1e-4, atol=1e-5)


def test_composite_opaque_last_sample_and_empty_ray():
    z = torch.linspace(2.0, 6.0, 8)[None]
    rgb = torch.full((1, 8, 3), 0.3)
    opaque = composite(torch.full((1, 8), 1e4), rgb, z, torch.tensor([[0.0, 0.0, -1.0]]), white_bkgd=True)
    torch.testing.assert_close(opaque["acc"], torch.ones(1))
    torch.testing.assert_close(opaque["depth"], torch.tensor([2.0]))
    empty = composite(torch.zeros(1, 8), rgb, z, torch.tensor([[0.0, 0.0, -1.0]]), white_bkgd=True)
    torch.testing.assert_close(empty["rgb"], torch.ones(1, 3))


def _tiny_renderer(n_importance=8):
    torch.manual_seed(0)
    return NeRFRenderer(NeRFOptions(netdepth=2, netwidth=16, netdepth_fine=2, netwidth_fine=16, skips=(), multires=3,
                                    multires_views=2, N_samples=8, N_importance=n_importance, chunk=50))


def test_renderer_outputs_and_ray_gradients():
    renderer = _tiny_renderer().requires_grad_(False)
    rays_o = torch.tensor([[0.0, 0.0, 4.0]]).repeat(5, 1).requires_grad_(True)
    rays_d = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1).requires_grad_(True)
    out = renderer.render_rays(rays_o, rays_d)
    assert set(out) >= {"rgb", "rgb_coarse", "depth", "acc"}
    assert out["rgb"].shape == (5, 3) and out["depth"].shape == (5,) and out["rgb"].dtype == torch.float32
    out["rgb"].sum().backward()
    assert rays_o.grad.abs().sum() > 0 and rays_d.grad.abs().sum() > 0


def test_render_image_chunks_match_render_rays():
    renderer = _tiny_renderer()
    c2w = torch.eye(4)
    c2w[2, 3] = 4.0
    img = renderer.render_image(c2w, 9, 11, Intrinsics.centred(10.0, 11, 9), chunk=17)
    assert img.shape == (9, 11, 3) and img.min() >= 0 and img.max() <= 1
    rays_o, rays_d = image_rays(c2w, 9, 11, Intrinsics.centred(10.0, 11, 9))
    with torch.no_grad():
        ref = renderer.render_rays(rays_o, rays_d)["rgb"].clamp(0, 1)   # [9,11,3] batch shape kept
    torch.testing.assert_close(img, ref)
    coarse_only = _tiny_renderer(n_importance=0)
    assert coarse_only.fine is None
    out = coarse_only.render_rays(rays_o[0], rays_d[0])
    torch.testing.assert_close(out["rgb"], out["rgb_coarse"])
