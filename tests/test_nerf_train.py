"""NeRF training: exact resume, checkpoint errors, and a tiny run that beats the mean-colour baseline."""
import json
import math

import cv2
import numpy as np
import pytest
import torch

from common.camera import Intrinsics
from common.errors import PadError
from mad.loader import load_train_views
from nerf.checkpoint import checkpoint_path, load_renderer, read_checkpoint
from nerf.rays import camera_directions
from nerf.trainer import learning_rate, split_views
from omniposead.config import parse_config
from omniposead.pipeline import ensure_trained, train_class

CPU = torch.device("cpu")


def train(cfg):
    """Train or resume as `python train_nerf.py` does; the TrainSummary."""
    return train_class(cfg, CPU, progress=False)


def ckpt(cfg):
    return checkpoint_path(cfg.run.ckpt_dir)


def load(cfg):
    return load_renderer(ckpt(cfg), cfg.nerf, cfg.run.white_bkgd, "cpu")


def look_at(position: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenGL) for a camera at `position` looking at the origin, world z up."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, position
    return c2w


def render_sphere(c2w: np.ndarray, size: int, focal: float) -> np.ndarray:
    """Unit sphere at the origin coloured by its normal, on white (exact ray casting, shared convention)."""
    dirs = camera_directions(size, size, Intrinsics.centred(focal, size, size), device="cpu")
    d = dirs.numpy().reshape(-1, 3) @ c2w[:3, :3].T
    o = c2w[:3, 3]
    a, b, c = (d * d).sum(-1), 2 * d @ o, o @ o - 1.0
    disc = b * b - 4 * a * c
    hit = disc > 0
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    normal = o + t[:, None] * d
    img = np.where(hit[:, None], 0.5 + 0.45 * normal, 1.0)
    return img.reshape(size, size, 3)


def write_sphere_class(root, size=16, n_views=20, name="sphere"):
    """A tiny class in the MAD layout (train views + transforms.json only)."""
    class_dir = root / name
    (class_dir / "train" / "good").mkdir(parents=True)
    angle = 0.6
    focal = 0.5 * size / math.tan(0.5 * angle)
    frames = []
    rng = np.random.default_rng(0)
    for k in range(n_views):
        theta, phi = 2 * math.pi * k / n_views, rng.uniform(0.2, 0.9)
        pos = 4.0 * np.array([math.cos(theta) * math.cos(phi), math.sin(theta) * math.cos(phi), math.sin(phi)])
        c2w = look_at(pos)
        img = render_sphere(c2w, size, focal)
        cv2.imwrite(str(class_dir / "train" / "good" / f"{k}.png"), (img[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
        frames.append({"file_path": f"train/good/{k}.png", "transform_matrix": c2w.tolist()})
    (class_dir / "transforms.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return class_dir


TINY = ["--netdepth", "2", "--netwidth", "32", "--netdepth_fine", "2", "--netwidth_fine", "32", "--skips",
        "--multires", "4", "--multires_views", "2", "--N_samples", "12", "--N_importance", "8", "--N_rand", "64",
        "--lrate", "5e-3", "--i_print", "5", "--i_val", "1000", "--i_weights", "1000", "--holdout_every", "5",
        "--device", "cpu", "--seed", "1"]


@pytest.fixture(scope="module")
def sphere_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nerfdata") / "spheres"
    write_sphere_class(root)
    return root


def _cfg(data_root, ckpt_root, *extra):
    return parse_config(["--data_root", str(data_root), "--class_name", "sphere", "--ckpt_root", str(ckpt_root),
                         *TINY, *extra])


def test_helpers():
    assert split_views(10, 4) == ([1, 2, 3, 5, 6, 7, 9], [0, 4, 8])
    assert split_views(3, 0) == ([0, 1, 2], [])
    assert learning_rate(0, 1e-3, 1) == 1e-3
    assert math.isclose(learning_rate(1000, 1e-3, 1), 1e-4)


# grid updates at steps 2, 5, 8, 11: before and after the resume point (6); a threshold that the young
# field's density (about 0.1-0.8 everywhere) crosses, so that some cells are skipped
GRID = ["--occupancy_grid", "true", "--occupancy_resolution", "8", "--occupancy_warmup", "2",
        "--occupancy_update_every", "3", "--occupancy_threshold", "0.1"]


@pytest.mark.parametrize("grid", [False, True], ids=["plain", "occupancy_grid"])
def test_resume_is_exact(sphere_root, tmp_path, grid):
    extra = GRID if grid else []
    straight = _cfg(sphere_root, tmp_path / "a", "--n_iters", "12", "--i_weights", "6", *extra)
    train(straight)
    first = _cfg(sphere_root, tmp_path / "b", "--n_iters", "6", *extra)
    r1 = train(first)
    assert r1.step == 6 and r1.finished
    assert read_checkpoint(ckpt(first))["step"] == 6
    second = _cfg(sphere_root, tmp_path / "b", "--n_iters", "12", *extra)
    r2 = train(second)
    assert r2.step == 12 and r2.finished
    a, b = read_checkpoint(ckpt(straight)), read_checkpoint(ckpt(second))
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    if grid:
        assert a["occupancy"]["updates"] == b["occupancy"]["updates"] == 4
        assert torch.equal(a["occupancy"]["values"], b["occupancy"]["values"])
        assert torch.equal(a["occupancy"]["occupied"], b["occupancy"]["occupied"])
        assert not a["occupancy"]["occupied"].all()                       # the grid did skip space
        assert r2.samples_per_ray < 12 + (12 + 8)                         # fewer MLP evaluations than plain
    else:
        assert a["occupancy"] is None and r2.samples_per_ray == 12 + (12 + 8)   # coarse + fine passes
    # a finished checkpoint is not trained again
    again = train(second)
    assert again.step == 12
    assert torch.equal(read_checkpoint(ckpt(second))["model"]["coarse.rgb_linear.weight"],
                       b["model"]["coarse.rgb_linear.weight"])
    log = json.loads((ckpt(second).parent / "train_log.json").read_text())
    assert log["step"] == 12 and log["baseline_psnr"] is not None


def test_load_renderer_errors(sphere_root, tmp_path):
    cfg = _cfg(sphere_root, tmp_path, "--n_iters", "2")
    with pytest.raises(PadError, match=r"nerf\.pt"):
        load(cfg)
    train(cfg)
    renderer = load(cfg)
    assert not renderer.training and not any(p.requires_grad for p in renderer.parameters())
    wider = _cfg(sphere_root, tmp_path, "--n_iters", "2", "--netwidth", "64")
    with pytest.raises(PadError, match="netwidth"):
        load(wider)
    with pytest.raises(PadError, match="netwidth"):
        train(wider)
    views = load_train_views(cfg.run.class_dir)
    assert ensure_trained(cfg, views, CPU, progress=False) is not None


def test_grid_checkpoint_for_inference(sphere_root, tmp_path):
    grid_cfg = _cfg(sphere_root, tmp_path / "grid", "--n_iters", "12", *GRID)
    train(grid_cfg)
    saved = read_checkpoint(ckpt(grid_cfg))["occupancy"]
    renderer = load(grid_cfg)
    assert torch.equal(renderer.grid.occupied, saved["occupied"]) and renderer.grid.updates == saved["updates"]
    assert load(_cfg(sphere_root, tmp_path / "grid", "--n_iters", "12")).grid is None   # plain sampling: one flag
    # a checkpoint trained without the grid (or with another resolution) gets one built from its density
    plain_cfg = _cfg(sphere_root, tmp_path / "plain", "--n_iters", "12")
    train(plain_cfg)
    rebuilt = load(_cfg(sphere_root, tmp_path / "plain", "--n_iters", "12", *GRID)).grid
    assert rebuilt.updates == 1 and (rebuilt.values > 0).all()                     # a fresh grid holds zeros
    with pytest.raises(PadError, match="occupancy_resolution"):                    # but training cannot resume
        train(_cfg(sphere_root, tmp_path / "grid", "--n_iters", "20", *GRID, "--occupancy_resolution", "4"))


@pytest.mark.slow
@pytest.mark.parametrize("grid", [False, True], ids=["plain", "occupancy_grid"])
def test_tiny_training_beats_mean_colour(sphere_root, tmp_path, grid):
    extra = ["--occupancy_grid", "true", "--occupancy_resolution", "16", "--occupancy_warmup", "100"] if grid else []
    cfg = _cfg(sphere_root, tmp_path, "--n_iters", "300", "--netwidth", "64", "--netwidth_fine", "64",
               "--N_rand", "256", "--lrate", "5e-3", "--lrate_decay", "1", *extra)
    result = train(cfg)
    assert result.finished and result.step == 300
    assert result.val_psnr > result.baseline_psnr + 8.0
    if grid:
        assert result.samples_per_ray < 0.8 * (12 + 12 + 8)
