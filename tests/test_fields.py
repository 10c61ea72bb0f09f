"""Radiance fields behind one interface (nerf.fields): each one fits a tiny scene, agrees with itself between
its density-only and full passes, resumes exactly from a checkpoint, and carries iNeRF to the true pose."""
import math

import numpy as np
import pytest
import torch

from common.errors import PadError
from common.rotations import rotation_error_deg
from inerf.optimize import refine_poses
from nerf.checkpoint import checkpoint_path, load_renderer, read_checkpoint
from nerf.fields import FIELD_NAMES, build_field
from nerf.plane_encoding import TriPlaneEncoding, total_variation
from omniposead.config import parse_config
from omniposead.pipeline import train_class
from tests.test_inerf import BlobScene, cfg as inerf_cfg, look_at, perturb
from tests.test_nerf_train import TINY, write_sphere_class

CPU = torch.device("cpu")
# A small tri-plane field for tiny scenes: the sphere and the blobs lie inside [-1.2, 1.2]^3.
TRIPLANE = ["--field", "triplane", "--grid_resolutions", "8", "16", "32", "--grid_features", "4",
            "--grid_hidden", "32", "--grid_bound", "1.2"]
FIELD_FLAGS = {"mlp": [], "triplane": TRIPLANE}


def test_every_field_has_flags_here():
    assert set(FIELD_FLAGS) == set(FIELD_NAMES)


def test_plane_reads_are_bilinear_and_multiply_over_planes():
    """xy plane = x + 2y (linear, so bilinear reads are exact), xz and yz planes = 1: the feature is x + 2y;
    with the xz plane = z as well it is (x + 2y) z. Outside the cube: 0."""
    enc = TriPlaneEncoding(resolutions=(5,), features=1, bound=2.0)
    axis = torch.linspace(-1, 1, 5)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")          # plane [C, H=second axis, W=first axis]
    with torch.no_grad():
        enc.planes[0].fill_(1.0)
        enc.planes[0][0, 0] = xx + 2 * yy                     # xy plane: W <- x, H <- y
    pts = torch.tensor([[0.3, -0.7, 0.1], [-1.5, 0.9, 1.9], [1.0, 1.0, -2.0]])
    x, y, z = (pts / 2.0).unbind(-1)
    assert torch.allclose(enc(pts)[:, 0], x + 2 * y, atol=1e-6)
    with torch.no_grad():
        enc.planes[0][1, 0] = yy                              # xz plane: W <- x, H <- z
    assert torch.allclose(enc(pts)[:, 0], (x + 2 * y) * z, atol=1e-6)
    assert enc(torch.tensor([[2.5, 0.0, 0.0]])).abs().max() == 0


def test_total_variation_closed_form():
    plane = torch.zeros(1, 1, 3, 3)
    plane[..., 1, 1] = 1.0                                    # one bump: 2 unit steps in 6 rows + 2 in 6 cols
    assert float(total_variation(plane)) == pytest.approx(2 / 6 + 2 / 6)
    assert float(total_variation(torch.ones(3, 2, 4, 4))) == 0.0


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_density_pass_agrees_with_the_full_pass(name):
    opts = parse_config(["--netdepth", "3", "--netwidth", "32", "--skips", "1", "--multires", "4",
                         *FIELD_FLAGS[name]]).nerf
    torch.manual_seed(0)
    field = build_field(opts)
    pts = torch.rand(5, 7, 3) * 2.4 - 1.2
    dirs = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    rgb, sigma = field(pts, dirs)
    assert rgb.shape == (5, 7, 3) and sigma.shape == (5, 7)
    assert torch.allclose(field.density(pts), sigma, atol=1e-6)
    assert float(field.regularization().detach()) >= 0.0
    groups = field.param_groups(1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(field.parameters()))
    if name == "triplane":
        assert (sigma > 0).all()                               # softplus: alive everywhere inside the cube
        assert float(field.density(torch.tensor([[1.5, 0.0, 0.0]])).detach()) == 0.0   # nothing outside it
        assert {g["base_lr"] for g in groups} == {opts.grid_lrate, 1e-3}


@pytest.fixture(scope="module")
def sphere_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fielddata") / "spheres"
    write_sphere_class(root)
    return root


def _cfg(data_root, ckpt_root, name, *extra):
    return parse_config(["--data_root", str(data_root), "--class_name", "sphere", "--ckpt_root", str(ckpt_root),
                         *TINY, *FIELD_FLAGS[name], *extra])


@pytest.mark.slow
@pytest.mark.parametrize("name", FIELD_NAMES)
def test_field_fits_a_tiny_scene(sphere_root, tmp_path, name):
    cfg = _cfg(sphere_root, tmp_path, name, "--n_iters", "300", "--netwidth", "64", "--netwidth_fine", "64",
               "--N_rand", "256", "--lrate", "5e-3", "--lrate_decay", "1")
    result = train_class(cfg, CPU, progress=False)
    assert result.finished and result.val_psnr > result.baseline_psnr + 8.0, result


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_checkpoint_resumes_exactly(sphere_root, tmp_path, name):
    grid = ["--occupancy_grid", "true", "--occupancy_resolution", "8", "--occupancy_warmup", "2",
            "--occupancy_update_every", "3", "--occupancy_threshold", "0.1"]
    straight = _cfg(sphere_root, tmp_path / "a", name, "--n_iters", "10", *grid)
    train_class(straight, CPU, progress=False)
    train_class(_cfg(sphere_root, tmp_path / "b", name, "--n_iters", "5", *grid), CPU, progress=False)
    resumed = _cfg(sphere_root, tmp_path / "b", name, "--n_iters", "10", *grid)
    train_class(resumed, CPU, progress=False)
    a = read_checkpoint(checkpoint_path(straight.run.ckpt_dir))
    b = read_checkpoint(checkpoint_path(resumed.run.ckpt_dir))
    assert a["step"] == b["step"] == 10 and a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert torch.equal(a["occupancy"]["occupied"], b["occupancy"]["occupied"])
    # the checkpoint names its field: loading it as another one is one clear error
    other = next(n for n in FIELD_NAMES if n != name)
    with pytest.raises(PadError, match=f"holds a '{name}' field"):
        load_renderer(checkpoint_path(straight.run.ckpt_dir), _cfg(sphere_root, tmp_path / "a", other).nerf,
                      True, CPU)


def _blob_class(scene, root, size, camera_angle, n_views=40):
    import json

    import cv2

    from common.camera import Intrinsics
    camera = Intrinsics.centred(0.5 * size / math.tan(0.5 * camera_angle), size, size)
    cls = root / "blob"
    (cls / "train" / "good").mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n_views):
        pose = look_at(rng.uniform(0, 360), rng.uniform(-20, 70))
        img = scene.render_image(torch.from_numpy(pose), size, size, camera).numpy()
        cv2.imwrite(str(cls / "train" / "good" / f"{k}.png"), (img[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
        frames.append({"file_path": f"train/good/{k}.png", "transform_matrix": pose.tolist()})
    (cls / "transforms.json").write_text(json.dumps({"camera_angle_x": camera_angle, "frames": frames}))
    return camera


@pytest.mark.slow
def test_inerf_recovers_a_perturbed_pose_against_a_grid_field(tmp_path):
    """iNeRF through the tri-plane interpolation (piecewise-linear gradients): 10 deg off -> < 2 deg.
    (The vanilla field's case is tests/test_inerf.py::test_refine_with_trained_nerf.)"""
    scene, size = BlobScene(), 32
    camera = _blob_class(scene, tmp_path / "blobs", size, 0.7)
    nerf_cfg = parse_config([
        "--data_root", str(tmp_path / "blobs"), "--class_name", "blob", "--ckpt_root", str(tmp_path / "ck"),
        "--device", "cpu", *TRIPLANE, "--grid_resolutions", "16", "32", "64", "--multires_views", "2",
        "--N_samples", "24", "--N_importance", "0", "--N_rand", "256", "--lrate", "5e-3", "--lrate_decay", "10",
        "--n_iters", "600", "--i_val", "100000", "--i_weights", "100000", "--holdout_every", "8", "--seed", "0"])
    summary = train_class(nerf_cfg, CPU, progress=False)
    assert summary.val_psnr > 25.0, summary
    renderer = load_renderer(checkpoint_path(nerf_cfg.run.ckpt_dir), nerf_cfg.nerf, True, "cpu")
    trues = np.stack([look_at(30.0, 25.0), look_at(-100.0, 10.0)])
    images = np.stack([scene.render_image(torch.from_numpy(p), size, size, camera).numpy() for p in trues])
    starts = np.stack([perturb(trues[0], 10.0, 0.05, seed=0), perturb(trues[1], 10.0, 0.05, seed=1)])
    result = refine_poses(renderer, images, starts, camera, inerf_cfg(inerf_steps=100, inerf_sampling="random"),
                          "cpu")
    errs = rotation_error_deg(result.poses, trues)
    assert (errs < 2.0).all(), errs
