"""Structure-from-motion poses (mad.colmap_poses, mad/sfm): conventions, normalisation, the flipped-view
check and the resumable work folder in pure numpy; one small real COLMAP run on a textured object."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.errors import DataError
from mad.colmap_poses import recover_poses
from mad.options import SfmOptions
from common.rotations import rotation_angle_deg
from mad.sfm.colmap import prepare_work_dir
from mad.sfm.consistency import MatchedPair, neighbour_consistency, sampson_px, suspicious_views
from mad.sfm.geometry import (
    c2w_from_cam_from_world,
    cam_from_world_from_c2w,
    closest_point_to_axes,
    normalise_poses,
    umeyama,
)
from mad.synth.cameras import look_at_pose, train_poses


def _random_similarity(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return rng.uniform(0.2, 5.0), q, rng.normal(size=3) * 3


def _moved(poses, s, rot, t):
    out = poses.copy()
    out[:, :3, :3] = rot @ poses[:, :3, :3]
    out[:, :3, 3] = s * poses[:, :3, 3] @ rot.T + t
    return out


def test_conversion_round_trip_and_opencv_camera_looks_forward():
    for c2w in train_poses(10, 4.0, seed=1):
        np.testing.assert_allclose(c2w_from_cam_from_world(cam_from_world_from_c2w(c2w)), c2w, atol=1e-12)
    cfw = cam_from_world_from_c2w(look_at_pose([3.0, 1.0, 2.0]))
    target = cfw[:, 3]  # the look-at target (the origin) in the OpenCV camera frame
    assert target[2] > 0 and abs(target[0]) < 1e-9 and abs(target[1]) < 1e-9
    up = cfw[:, :3] @ np.array([0.0, 0.0, 1.0])  # world up appears as image up: OpenCV y points down
    assert up[1] < 0


def test_normalisation_undoes_a_similarity():
    rng = np.random.default_rng(0)
    true = train_poses(40, 4.0, seed=0)
    s, rot, t = _random_similarity(rng)
    moved = _moved(true, s, rot, t)
    np.testing.assert_allclose(closest_point_to_axes(moved[:, :3, 3], -moved[:, :3, 2]), t, atol=1e-9)
    out, info = normalise_poses(moved, 4.0)
    np.testing.assert_allclose(np.linalg.norm(out[:, :3, 3], axis=1), 4.0, atol=1e-9)
    assert math.isclose(info["scale"], 1 / s, rel_tol=1e-9)
    # equal to the truth up to a rotation, nearly about +z (the mean camera up, ~ the generator's world up)
    s2, r2, t2 = umeyama(out[:, :3, 3], true[:, :3, 3])
    assert abs(s2 - 1) < 1e-9 and np.linalg.norm(t2) < 1e-9 and r2[2, 2] > math.cos(math.radians(2))
    for a, b in zip(out, true):
        assert rotation_angle_deg(b[:3, :3].T @ r2 @ a[:3, :3]) < 1e-6


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    s, rot, t = _random_similarity(rng)
    s2, rot2, t2 = umeyama(src, s * src @ rot.T + t)
    assert math.isclose(s2, s, rel_tol=1e-9)
    np.testing.assert_allclose(rot2, rot, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)


def _projected_pairs(poses, k_mat, points):
    cfw = {i: cam_from_world_from_c2w(p) for i, p in enumerate(poses)}

    def project(i):
        x = points @ cfw[i][:, :3].T + cfw[i][:, 3]
        return (x[:, :2] / x[:, 2:]) @ k_mat[:2, :2].T + k_mat[:2, 2]

    n = len(poses)
    pairs = [MatchedPair(i, j, project(i), project(j), cfw[j][:, :3] @ cfw[i][:, :3].T)
             for i in range(n) for j in range(i + 1, n)]
    return cfw, pairs


def test_consistency_flags_a_flipped_view_only():
    rng = np.random.default_rng(0)
    k_mat = np.array([[300.0, 0, 100], [0, 300.0, 100], [0, 0, 1]])
    poses = train_poses(12, 4.0, seed=2)
    cfw, pairs = _projected_pairs(poses, k_mat, rng.uniform(-0.8, 0.8, (300, 3)))
    assert sampson_px(pairs[0].xy1, pairs[0].xy2, np.eye(3)).shape == (300,)
    good = neighbour_consistency(pairs, cfw, k_mat)
    assert min(c.agreement for c in good.values()) > 0.99 and max(c.rot_deg for c in good.values()) < 1e-6
    flipped = poses[5].copy()
    flipped[:3, :3] = flipped[:3, :3] @ np.diag([-1.0, -1.0, 1.0])  # rolled 180 degrees: upside down
    bad = dict(cfw)
    bad[5] = cam_from_world_from_c2w(flipped)
    cons = neighbour_consistency(pairs, bad, k_mat)
    assert cons[5].agreement < 0.1 and cons[5].rot_deg > 170
    assert all(c.agreement > 0.5 for i, c in cons.items() if i != 5)  # the median over partners is robust
    c2w = {i: c2w_from_cam_from_world(m) for i, m in bad.items()}
    assert suspicious_views(cons, c2w, half_fov_deg=20.0) == {5}
    # a view whose optical axis misses the object, and a view with no verified partner, are flagged too
    away = look_at_pose([4.0, 0.0, 0.0], target=(4.0, 4.0, 0.0))
    assert suspicious_views(good, {**{i: c2w_from_cam_from_world(m) for i, m in cfw.items()}, 99: away}, 20.0) == {99}


def test_work_dir_resumes_only_with_the_same_inputs(tmp_path):
    work = tmp_path / "colmap"
    fingerprint = {"images": [["0.png", 10, 1]], "extraction": {"max_features": 8192}}
    assert prepare_work_dir(work, fingerprint) is False
    (work / "database.db").write_bytes(b"features")
    assert prepare_work_dir(work, fingerprint) is True and (work / "database.db").read_bytes() == b"features"
    assert prepare_work_dir(work, {**fingerprint, "images": [["0.png", 11, 1]]}) is False
    assert not (work / "database.db").exists()


def test_bad_class_folders(tmp_path):
    with pytest.raises(DataError, match=r"train/good: training image folder not found"):
        recover_poses(tmp_path / "none")
    cdir = tmp_path / "c"
    (cdir / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/good: 0 images; structure-from-motion needs at least 3 views"):
        recover_poses(cdir)
    (cdir / "transforms.json").write_text("{}")
    with pytest.raises(DataError, match=r"transforms\.json: already exists \(pass --overwrite"):
        recover_poses(cdir)


def test_recovers_the_poses_of_a_textured_object(tmp_path):
    """A real COLMAP run: 16 views of the textured object on a ring (8 degree steps) at 320 px. (Nearly) every
    view registers; after a similarity alignment the rotations and positions are within a few degrees / % of
    the truth (a wrong convention is off by tens of degrees); the transforms.json written loads with the
    recovered intrinsics. (The 100-view acceptance figures are in benchmarks/bench_sfm_poses.py.)"""
    pytest.importorskip("pycolmap")
    import cv2

    from mad.loader import load_train_views
    from mad.synth.cameras import BLENDER_CAMERA_ANGLE_X, focal_from_angle, spherical_pose
    from mad.synth.render import render_view
    from mad.synth.scene import make_scene

    size, n = 320, 16
    scene = make_scene(0, textured=True)
    focal = focal_from_angle(size, BLENDER_CAMERA_ANGLE_X)
    true = np.stack([spherical_pose(math.radians(8 * k), math.radians(25 + 10 * (k % 2)), 4.0) for k in range(n)])
    cdir = tmp_path / "ring"
    (cdir / "train" / "good").mkdir(parents=True)
    for k, pose in enumerate(true):
        image = render_view(scene, pose, size, size, focal, 1)
        cv2.imwrite(str(cdir / "train" / "good" / f"{k}.png"), image[:, :, ::-1])
    report = recover_poses(cdir, SfmOptions(sfm_num_threads=2), progress=False)
    assert report["registered"] >= n - 2 and report["suspicious"] == []
    meta = json.loads((cdir / "transforms.json").read_text())
    kept = [int(f["file_path"].removeprefix("train/good/").removesuffix(".png")) for f in meta["frames"]]
    assert sorted(kept) == kept and len(kept) == report["registered"]
    assert sorted(meta["excluded_views"]["unregistered"] + [f"{k}.png" for k in kept]) == \
        sorted(f"{k}.png" for k in range(n))
    est, truth = np.array([f["transform_matrix"] for f in meta["frames"]]), true[kept]
    np.testing.assert_allclose(np.linalg.norm(est[:, :3, 3], axis=1).mean(), 4.0, rtol=1e-9)
    s, rot, t = umeyama(est[:, :3, 3], truth[:, :3, 3])
    rotation = np.array([rotation_angle_deg(b[:3, :3].T @ rot @ a[:3, :3]) for a, b in zip(est, truth)])
    position = np.linalg.norm(s * est[:, :3, 3] @ rot.T + t - truth[:, :3, 3], axis=1) / 4.0
    assert np.median(rotation) < 1.5 and rotation.max() < 4.0, rotation
    assert np.median(position) < 0.02 and position.max() < 0.05, position
    # a narrow ring pins the focal length down only loosely (100 views on a sphere: < 1 %, see RESULTS.md)
    assert abs(meta["fl_x"] / focal - 1) < 0.15 and (meta["w"], meta["h"]) == (size, size)
    assert (meta["cx"], meta["cy"]) == (size / 2, size / 2)
    views = load_train_views(cdir)
    assert views.intrinsics.fx == pytest.approx(meta["fl_x"]) and views.images.shape == (len(kept), size, size, 3)
    assert (cdir / "colmap" / "colmap_report.json").is_file()
