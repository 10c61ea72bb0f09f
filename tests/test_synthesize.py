"""The synthetic MAD-format generator: layout, determinism, masks, camera convention."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from common.camera import Intrinsics
from common.errors import DataError
from mad.loader import load_test_set, load_train_views
from mad.synth.cameras import BLENDER_CAMERA_ANGLE_X, focal_from_angle, spherical_pose, train_poses
from mad.synth.defects import DEFECT_TYPES
from mad.synth.render import camera_dirs, render_view
from mad.synth.scene import PALETTE, Scene, make_scene
from mad.synth.texture import surface_texture
from tests.conftest import (
    TINY_N_TEST_DEFECT,
    TINY_N_TEST_GOOD,
    TINY_N_TRAIN,
    TINY_SEED,
    TINY_SIZE,
    TINY_SUPERSAMPLE,
    generate_tiny,
)


def _rgb(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _focal():
    return focal_from_angle(TINY_SIZE, BLENDER_CAMERA_ANGLE_X)


def test_layout_and_counts(tiny_class_dir):
    assert (tiny_class_dir / "transforms.json").is_file()
    assert (tiny_class_dir / "test_poses.json").is_file()
    assert len(list((tiny_class_dir / "train" / "good").glob("*.png"))) == TINY_N_TRAIN
    assert len(list((tiny_class_dir / "test" / "good").glob("*.png"))) == TINY_N_TEST_GOOD
    for d in DEFECT_TYPES:
        images = sorted((tiny_class_dir / "test" / d).glob("*.png"))
        assert len(images) == TINY_N_TEST_DEFECT
        for img in images:
            assert (tiny_class_dir / "ground_truth" / d / f"{img.stem}_mask.png").is_file()
    meta = json.loads((tiny_class_dir / "transforms.json").read_text())
    assert meta["camera_angle_x"] == pytest.approx(BLENDER_CAMERA_ANGLE_X)
    assert [f["file_path"] for f in meta["frames"]] == [f"train/good/{i}.png" for i in range(TINY_N_TRAIN)]
    stats = json.loads((tiny_class_dir / "synth_stats.json").read_text())
    assert set(stats["mask_area_percent"]) == set(DEFECT_TYPES)
    # no stray temporary folders next to the class
    assert [p.name for p in tiny_class_dir.parent.iterdir()] == [tiny_class_dir.name]


def test_reader_accepts_generated_class(tiny_class_dir):
    views = load_train_views(tiny_class_dir)
    assert views.images.shape == (TINY_N_TRAIN, TINY_SIZE, TINY_SIZE, 3)
    assert views.intrinsics == Intrinsics.centred(_focal(), TINY_SIZE, TINY_SIZE)
    samples = load_test_set(tiny_class_dir)
    assert len(samples) == TINY_N_TEST_GOOD + 3 * TINY_N_TEST_DEFECT
    assert all(s.mask.any() == (s.label == 1) for s in samples)


def test_deterministic_and_worker_independent(tiny_class_dir, tmp_path):
    again = generate_tiny(tmp_path / "synthetic", workers=2)
    assert _files(again) == _files(tiny_class_dir)


def test_refuses_existing_class_unless_overwrite(tiny_class_dir, tmp_path):
    root = tmp_path / "synthetic"
    small = {"n_train": 2, "n_test_good": 1, "n_test_defect": 1, "size": 16}
    generate_tiny(root, **small)
    with pytest.raises(DataError, match="already exists"):
        generate_tiny(root, **small)
    generate_tiny(root, overwrite=True, **dict(small, seed=5))
    stats = json.loads((root / "tiny" / "synth_stats.json").read_text())
    assert stats["seed"] == 5
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]


def test_training_image_reproduced_by_renderer(tiny_class_dir):
    scene = make_scene(TINY_SEED)
    meta = json.loads((tiny_class_dir / "transforms.json").read_text())
    for frame in meta["frames"][:3]:
        saved = _rgb(tiny_class_dir / frame["file_path"]).astype(int)
        pose = np.array(frame["transform_matrix"])
        rendered = render_view(scene, pose, TINY_SIZE, TINY_SIZE, _focal(), TINY_SUPERSAMPLE).astype(int)
        assert np.abs(saved - rendered).max() <= 1
        assert (saved < 255).any(axis=-1).mean() > 0.05  # the object is in view


def test_masks_nonempty_exact_and_on_object(tiny_class_dir):
    scene = make_scene(TINY_SEED)
    poses = {f["file_path"]: np.array(f["transform_matrix"])
             for f in json.loads((tiny_class_dir / "test_poses.json").read_text())["frames"]}
    for d in DEFECT_TYPES:
        for img_path in sorted((tiny_class_dir / "test" / d).glob("*.png")):
            image = _rgb(img_path)
            mask = cv2.imread(str(tiny_class_dir / "ground_truth" / d / f"{img_path.stem}_mask.png"),
                              cv2.IMREAD_UNCHANGED)
            assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255}
            assert (mask > 0).sum() >= 1
            normal = render_view(scene, poses[f"test/{d}/{img_path.name}"], TINY_SIZE, TINY_SIZE,
                                     _focal(), TINY_SUPERSAMPLE)
            diff = np.abs(image.astype(int) - normal.astype(int)).max(-1)
            np.testing.assert_array_equal(mask > 0, diff > 1)  # the mask is exactly the changed pixels
            silhouette = (image < 255).any(-1) | (normal < 255).any(-1)
            assert not ((mask > 0) & ~silhouette).any()


def test_test_poses_cover_every_test_image_and_differ_from_train(tiny_class_dir):
    test_meta = json.loads((tiny_class_dir / "test_poses.json").read_text())
    paths = [f["file_path"] for f in test_meta["frames"]]
    on_disk = sorted(p.relative_to(tiny_class_dir).as_posix() for p in (tiny_class_dir / "test").rglob("*.png"))
    assert sorted(paths) == on_disk
    train = np.array([f["transform_matrix"] for f in
                      json.loads((tiny_class_dir / "transforms.json").read_text())["frames"]])
    test = np.array([f["transform_matrix"] for f in test_meta["frames"]])
    centres = np.linalg.norm(test[:, None, :3, 3] - train[None, :, :3, 3], axis=-1)
    assert centres.min() > 1e-3
    for pose in np.concatenate([train, test]):
        rot = pose[:3, :3]
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
        assert np.linalg.norm(pose[:3, 3]) == pytest.approx(4.0)
        # looks at the origin: the optical axis (-z) points from the camera to the origin
        np.testing.assert_allclose(-rot[:, 2], -pose[:3, 3] / 4.0, atol=1e-9)
        elevation = math.degrees(math.asin(pose[2, 3] / 4.0))
        assert -30.0 - 1e-6 <= elevation <= 80.0 + 1e-6


def test_scene_inside_unit_sphere_and_seeded():
    a, b, c = make_scene(0), make_scene(0), make_scene(1)
    np.testing.assert_array_equal(a.lo, b.lo)
    assert a.lo.shape != c.lo.shape or not np.array_equal(a.lo, c.lo)
    for s in (a, c):
        corners = np.concatenate([s.lo, s.hi])
        assert np.linalg.norm(corners, axis=1).max() <= 1.0
        assert len(s.removable) >= 1


def test_camera_convention_projects_a_point_to_the_predicted_pixel():
    """A tiny box at a known world point lands on the pixel the shared pinhole convention predicts
    (pixel centres, x right, y up, camera looking down -z)."""
    height, width, focal = 40, 60, 50.0
    point = np.array([0.3, -0.2, 0.25])
    half = 0.01
    scene = Scene(lo=(point - half)[None], hi=(point + half)[None], color=np.array([[0.1, 0.1, 0.1]]),
                      brick=np.array([0]), kind=np.array([0]), removable=(0,))
    c2w = spherical_pose(math.radians(30), math.radians(20), 4.0)
    image = render_view(scene, c2w, height, width, focal, supersample=3)
    cam = c2w[:3, :3].T @ (point - c2w[:3, 3])
    i = focal * cam[0] / -cam[2] + width / 2 - 0.5
    j = height / 2 - 0.5 - focal * cam[1] / -cam[2]
    dark = np.argwhere((image < 250).any(-1))
    assert len(dark) > 0
    centre = dark.mean(0)
    assert abs(centre[0] - j) < 1.0 and abs(centre[1] - i) < 1.0


def test_camera_dirs_match_nerf_rays():
    rays = pytest.importorskip("nerf.rays")
    mine = camera_dirs(5, 7, 3.5)
    theirs = rays.camera_directions(5, 7, Intrinsics.centred(3.5, 7, 5), "cpu").double().numpy()
    np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_supersampling_is_symmetric_about_pixel_centres():
    """A black box whose edge passes exactly through the centre of pixel column 1 covers half of
    that pixel's sub-samples for every supersampling factor (samples symmetric about the centre)."""
    width, height, focal = 4, 2, 2.0
    c2w = np.eye(4)
    c2w[2, 3] = 4.0  # at +z looking down -z: camera axes = world axes, top face at depth 4
    edge = (1 + 0.5 - width / 2) / focal * 4.0  # world x of column 1's centre ray at depth 4
    scene = Scene(lo=np.array([[-10.0, -10.0, -1.0]]), hi=np.array([[edge, 10.0, 0.0]]),
                      color=np.array([[0.0, 0.0, 0.0]]), brick=np.array([0]), kind=np.array([0]),
                      removable=(0,))
    for s in (2, 4):
        image = render_view(scene, c2w, height, width, focal, supersample=s)
        assert (image[:, 0] == 0).all() and (image[:, 2:] == 255).all()
        assert (image[:, 1] == 128).all()


# ---------------------------------------------------------------------------- synth_textured

def test_flat_scene_has_no_texture():
    assert make_scene(TINY_SEED).texture_seed is None
    assert make_scene(TINY_SEED, textured=True).texture_seed == TINY_SEED


def test_texture_is_a_function_of_the_surface_point():
    """Same (face, in-plane point) -> same albedo whatever the order and a 1e-12 jitter of the hit point
    (another camera finds the same point with other rounding); seeded; in [0, 0.95]; not a no-op."""
    rng = np.random.default_rng(0)
    n = 20000
    points = rng.uniform(-1, 1, (n, 3))
    axis, sign, brick = rng.integers(0, 3, n), rng.choice([-1, 1], n), rng.integers(-1, 6, n)
    albedo = PALETTE[rng.integers(len(PALETTE), size=n)]
    a = surface_texture(albedo, points, axis, sign, brick, 3)
    perm = rng.permutation(n)
    np.testing.assert_array_equal(a[perm], surface_texture(albedo[perm], points[perm], axis[perm], sign[perm],
                                                           brick[perm], 3))
    jittered = surface_texture(albedo[perm], points[perm] + rng.normal(0, 1e-12, (n, 3)), axis[perm], sign[perm],
                               brick[perm], 3)
    assert (np.abs(a[perm] - jittered).max(1) < 1e-9).mean() > 0.999  # only points on a dot / stroke edge flip
    assert a.max() <= 0.95 and a.min() >= 0.0
    assert not np.array_equal(a, surface_texture(albedo, points, axis, sign, brick, 4))
    assert np.abs(a - albedo).max() > 0.3
    # the in-plane coordinates only: moving a point along its face normal changes nothing
    along = points.copy()
    along[np.arange(n), axis] += 0.25
    np.testing.assert_array_equal(a, surface_texture(albedo, along, axis, sign, brick, 3))


def test_textured_views_have_more_sift_features():
    focal = focal_from_angle(200, BLENDER_CAMERA_ANGLE_X)
    sift = cv2.SIFT_create()
    counts = {}
    for textured in (False, True):
        scene = make_scene(TINY_SEED, textured=textured)
        counts[textured] = sum(len(sift.detect(cv2.cvtColor(render_view(scene, pose, 200, 200, focal, 2),
                                                            cv2.COLOR_RGB2GRAY), None))
                               for pose in train_poses(3, 4.0, seed=TINY_SEED))
    assert counts[True] > 1.5 * counts[False], counts


def test_textured_class_masks_are_exact(tmp_path):
    """Outside its mask a textured defect image equals the normal render at the same pose; inside, it
    differs (the texture is view consistent and untouched by the defect)."""
    root = generate_tiny(tmp_path / "synthetic", textured=True, size=48)
    scene = make_scene(TINY_SEED, textured=True)
    poses = json.loads((root / "test_poses.json").read_text())["frames"]
    focal = focal_from_angle(48, BLENDER_CAMERA_ANGLE_X)
    checked = 0
    for frame in poses:
        defect = frame["file_path"].split("/")[1]
        if defect == "good":
            continue
        stem = frame["file_path"].split("/")[-1][:-4]
        image = _rgb(root / frame["file_path"]).astype(int)
        mask = cv2.imread(str(root / "ground_truth" / defect / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        normal = render_view(scene, np.array(frame["transform_matrix"]), 48, 48, focal, TINY_SUPERSAMPLE).astype(int)
        assert mask.any()
        np.testing.assert_array_equal(mask, np.abs(image - normal).max(-1) > 1)
        checked += 1
    assert checked == 3 * TINY_N_TEST_DEFECT
    assert json.loads((root / "synth_stats.json").read_text())["textured"] is True
