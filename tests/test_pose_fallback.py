"""The global pose fallback and the pose confidence, on the analytic blob scene of test_inerf (tiny, CPU)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.rotations import rotation_error_deg
from inerf.estimate import estimate_poses
from inerf.global_search import (
    CandidateViews,
    candidate_poses,
    fibonacci_directions,
    global_fallback,
    look_at_origin,
    lost_queries,
    with_confidence,
)
from omniposead.config import parse_config
from omniposead.pose_calibration import CALIBRATION_NAME, calibrate, load_or_calibrate, turned_about_origin
from tests.test_inerf import CAMERA, BlobScene, H, W, _FakeDatabase, cfg, look_at, render

FALLBACK = {"inerf_steps": 80, "fallback_positions": 96, "fallback_size": 24, "fallback_refine": 3,
                "inerf_restart_min_angle": 20.0}


@pytest.fixture(scope="module")
def scene():
    return BlobScene()


@pytest.fixture(scope="module")
def wrong_side(scene):
    """A query at (60, 20) deg whose only training views are ~120-180 deg away (the start is lost)."""
    true = look_at(60.0, 20.0)
    train_poses = np.stack([look_at(-120.0, -10.0), look_at(-100.0, 30.0), look_at(180.0, 10.0)])
    train = SimpleNamespace(poses=train_poses, intrinsics=CAMERA, height=H, width=W)
    image = render(scene, true)[None]
    opts = cfg(**FALLBACK)
    lost = estimate_poses(scene, _FakeDatabase([0, 1, 2]), train, image, opts, "cpu", progress=False)
    good = estimate_poses(scene, _FakeDatabase([0]), SimpleNamespace(poses=turned_about_origin(true, 8.0, 1)[None],
                          intrinsics=CAMERA, height=H, width=W), image, opts, "cpu", progress=False)
    return SimpleNamespace(true=true, train=train, image=image, opts=opts, lost=lost, good=good)


def test_candidate_viewpoints_cover_the_sphere_and_look_at_the_object():
    dirs = fibonacci_directions(200)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-12)
    nearest = np.sort(np.degrees(np.arccos(np.clip(dirs @ dirs.T, -1, 1))), axis=1)[:, 1]
    assert nearest.max() < 20.0                                       # no hole in the coverage
    poses = candidate_poses(np.stack([look_at(a, 10.0, radius=3.5) for a in (0, 90, 180)]), 50, (0.0, 90.0))
    assert poses.shape == (100, 4, 4)
    np.testing.assert_allclose(np.linalg.norm(poses[:, :3, 3], axis=1), 3.5, atol=1e-5)
    forward = -poses[:, :3, 2]                                        # OpenGL camera looks down -z
    np.testing.assert_allclose(np.einsum("ni,ni->n", forward, -poses[:, :3, 3] / 3.5), 1.0, atol=1e-5)
    assert rotation_error_deg(poses[0], poses[1]) == pytest.approx(90.0, abs=1e-3)   # the in-plane roll
    np.testing.assert_allclose(look_at_origin(look_at(30.0, 20.0)[:3, 3], np.array([0.0, 0.0, 1.0])),
                               look_at(30.0, 20.0), atol=1e-6)


@pytest.mark.slow
def test_a_query_started_on_the_wrong_side_is_recovered_by_the_fallback(scene, wrong_side):
    w = wrong_side
    assert rotation_error_deg(w.lost[0].refined_pose, w.true) > 60.0             # lost without the fallback
    threshold = 5.0 * w.good[0].final_loss
    assert lost_queries(w.lost, threshold) == [0]
    candidates = CandidateViews.render(scene, w.train.poses, H, W, CAMERA, w.opts, "cpu")
    assert candidates.images.shape == (96, 24, 24, 3)
    found = with_confidence(global_fallback(scene, candidates, w.image, w.lost, threshold, CAMERA, w.opts, "cpu"),
                            threshold)
    assert found[0].fallback_tried and found[0].fallback_used and not found[0].unsure
    assert rotation_error_deg(found[0].refined_pose, w.true) < 2.0
    assert found[0].final_loss < w.lost[0].final_loss
    record = found[0].record()
    assert record["pose_fallback_used"] and not record["pose_unsure"] and record["pose_loss_ratio"] < 1.0


def test_a_query_with_a_correct_start_does_not_take_the_fallback(scene, wrong_side):
    w = wrong_side
    assert rotation_error_deg(w.good[0].refined_pose, w.true) < 2.0
    threshold = 5.0 * w.good[0].final_loss
    calls = scene.calls
    kept = global_fallback(scene, None, w.image, w.good, threshold, CAMERA, w.opts, "cpu")   # no candidates needed
    assert scene.calls == calls and not kept[0].fallback_tried
    np.testing.assert_array_equal(kept[0].refined_pose, w.good[0].refined_pose)
    assert not with_confidence(kept, threshold)[0].unsure


def test_an_unsure_pose_says_so_in_its_record(wrong_side):
    lost = with_confidence(wrong_side.lost, 5.0 * wrong_side.good[0].final_loss)[0]
    assert lost.unsure and lost.loss_ratio > 1.0
    record = json.loads(json.dumps(lost.record()))
    assert record["pose_unsure"] is True and record["pose_loss_ratio"] > 1.0 and not record["pose_fallback_used"]


@pytest.mark.slow
def test_the_threshold_is_calibrated_on_held_out_views_and_recorded(scene, tmp_path):
    poses = np.stack([look_at(a, e) for a, e in [(0, 10), (45, 30), (90, -10), (135, 20), (180, 0), (225, 40),
                                                  (270, 15), (315, -20)]])
    views = SimpleNamespace(images=np.stack([render(scene, p) for p in poses]), poses=poses, intrinsics=CAMERA,
                            height=H, width=W)
    args = ["--holdout_every", "2", "--inerf_steps", "60", "--inerf_rays", "256", "--inerf_lr", "0.02",
            "--inerf_detector", "sift", "--pose_calibration_views", "3", "--pose_unsure_factor", "4",
            "--ckpt_root", str(tmp_path), "--data_root", str(tmp_path / "synthetic"), "--class_name", "blobs"]
    config = parse_config(args)
    calibration = calibrate(config, views, scene, "weights-a", "cpu")
    assert calibration.views == [0, 4, 6] and calibration.heldout                    # from the held-out split 0,2,4,6
    assert calibration.threshold == pytest.approx(4.0 * np.median(calibration.losses))
    assert max(calibration.losses) < 0.01                                           # refined back from 10 deg off
    saved = load_or_calibrate(config, views, scene, "weights-a", "cpu")
    path = tmp_path / "synthetic" / "blobs" / CALIBRATION_NAME
    assert json.loads(path.read_text())["threshold"] == pytest.approx(saved.threshold)
    calls = scene.calls
    assert load_or_calibrate(config, views, scene, "weights-a", "cpu") == saved and scene.calls == calls   # cached
    load_or_calibrate(config, views, scene, "weights-b", "cpu")                     # another NeRF: recalibrated
    assert scene.calls > calls
    torch.testing.assert_close(torch.tensor(turned_about_origin(poses[0], 10.0, 3)[:3, 3]).norm(),
                               torch.tensor(poses[0][:3, 3]).norm().float())
    assert rotation_error_deg(turned_about_origin(poses[0], 10.0, 3), poses[0]) == pytest.approx(10.0, abs=1e-3)


def test_a_defect_does_not_make_a_correct_pose_unsure(scene, wrong_side):
    """The confidence is judged without the worst-fitting rays: a dark patch over 5 % of the object (a defect)
    raises the plain loss of a correct pose far above a threshold that the judged loss stays far below."""
    from inerf.optimize import trimmed_mean

    torch.testing.assert_close(trimmed_mean(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), 0.25), torch.tensor([2.0]))
    w = wrong_side
    painted = w.image.copy()
    painted[0, 20:26, 20:26] = 0.1                              # the object's centre is at pixel (23, 23)
    start = SimpleNamespace(poses=turned_about_origin(w.true, 8.0, 1)[None], intrinsics=CAMERA, height=H, width=W)
    stained = estimate_poses(scene, _FakeDatabase([0]), start, painted, w.opts, "cpu", progress=False)
    assert rotation_error_deg(stained[0].refined_pose, w.true) < 2.0
    threshold = 1e-3
    assert stained[0].final_loss > 5 * threshold                # the plain loss would call it lost
    assert stained[0].confidence_loss < threshold / 100
    assert not with_confidence(stained, threshold)[0].unsure
    assert with_confidence(w.lost, threshold)[0].unsure         # while a wrong pose stays unsure
