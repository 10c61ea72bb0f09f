"""The real-capture path's plumbing (benchmarks.bench_capture_pipeline, mad.capture --keep_distortion): a class that
keeps the lens distortion says so, and SfM's poses of a class's training images become a capture's poses.json
whose held-out photographs sit in SfM's frame exactly where the capture's poses put them."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from benchmarks.bench_capture_pipeline import sfm_poses
from benchmarks.sfm_truth import into_recovered_frame
from common.errors import DataError
from mad.capture import CAPTURE_RECORD, build_capture_class
from mad.sfm.geometry import axis_angle
from tests.test_paint import H, W, disc_photo

K1 = 0.05
SIMILARITY = {"scale": 2.0, "rotation": axis_angle([0.3, 0.2, 1.0], 30.0).tolist(), "translation": [0.5, -1.0, 2.0]}


def pose(i: int) -> np.ndarray:
    """A camera-to-world pose that differs per photograph (turned and moved)."""
    out = np.eye(4)
    out[:3, :3] = axis_angle([0.0, 1.0, 0.2], 25.0 * i)
    out[:3, 3] = [np.sin(i), np.cos(i), 3.0 + 0.1 * i]
    return out


@pytest.fixture
def capture(tmp_path):
    """Six photographs of a disc at twice the class's size, with poses (k1 = 0.05) for each."""
    (tmp_path / "cap" / "images").mkdir(parents=True)
    for i in range(6):
        image, _ = disc_photo(seed=i)
        big = cv2.resize(image, (2 * W, 2 * H), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(tmp_path / "cap" / "images" / f"{i + 1:02d}.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    poses = {"fl_x": 400.0, "fl_y": 400.0, "cx": W, "cy": H, "w": 2 * W, "h": 2 * H, "k1": K1,
             "bounds": {"near": 2.0, "far": 5.0, "object_radius": 0.7},
             "frames": [{"file_path": f"images/{i + 1:02d}.jpg", "transform_matrix": pose(i).tolist()}
                        for i in range(6)]}
    (tmp_path / "cap" / "poses.json").write_text(json.dumps(poses))
    return tmp_path / "cap"


def test_a_class_that_keeps_the_distortion_says_so_and_the_hull_refuses_it(capture, tmp_path):
    kept = build_capture_class(capture, tmp_path / "raw", size=W, test_every=3, poses=capture / "poses.json",
                               undistort=False)
    build_capture_class(capture, tmp_path / "plain", size=W, test_every=3, poses=None)
    undone = build_capture_class(capture, tmp_path / "undone", size=W, test_every=3, poses=capture / "poses.json")
    assert not kept["undistorted"] and undone["undistorted"] and kept["distortion_undone_px"] == 0.0
    image = lambda c, rel: cv2.imread(str(tmp_path / c / rel))  # noqa: E731
    assert np.array_equal(image("raw", "train/good/0.png"), image("plain", "train/good/0.png"))
    assert not np.array_equal(image("raw", "train/good/0.png"), image("undone", "train/good/0.png"))
    meta = json.loads((tmp_path / "raw" / "transforms.json").read_text())
    assert meta["k1"] == K1 and meta["camera_model"] == "SIMPLE_RADIAL"
    assert "k1" not in json.loads((tmp_path / "undone" / "transforms.json").read_text())
    with pytest.raises(DataError, match="keep_distortion"):
        build_capture_class(capture, tmp_path / "x", size=W, backdrop="hull", poses=capture / "poses.json",
                            undistort=False)


def _sfm_transforms(class_dir, path, with_k1: bool):
    """What SfM would write for the class's training images but one: the capture's poses in another frame."""
    meta = json.loads((class_dir / "transforms.json").read_text())
    frames = [{"file_path": f["file_path"],
               "transform_matrix": into_recovered_frame(np.array(f["transform_matrix"]), SIMILARITY).tolist()}
              for f in meta["frames"][1:]]                                # the first one is not registered
    out = {k: meta[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
    path.write_text(json.dumps({**out, **({"k1": K1} if with_k1 else {}),
                                "bounds": {"near": 1.0, "far": 3.0, "object_radius": 0.35}, "frames": frames}))
    return frames


@pytest.mark.parametrize("keep_distortion", [True, False])
def test_sfm_poses_of_a_class_become_the_capture_s_with_the_held_out_photographs_aligned(capture, tmp_path,
                                                                                        keep_distortion):
    sfm_class = tmp_path / "sfm800"
    record = build_capture_class(capture, sfm_class, size=W, test_every=3, poses=capture / "poses.json",
                                 undistort=not keep_distortion)
    frames = _sfm_transforms(sfm_class, tmp_path / "sfm.json", with_k1=keep_distortion)
    poses = sfm_poses(sfm_class, tmp_path / "sfm.json", capture, SIMILARITY, "a test")
    by_photo = {f["file_path"]: np.array(f["transform_matrix"]) for f in poses["frames"]}
    train_photos = list(record["train"].values())                       # 01, 03, 04, 06; 01 not registered
    assert poses["k1"] == K1 and poses["bounds"]["object_radius"] == 0.35 and poses["source"] == "a test"
    assert f"images/{train_photos[0]}" not in by_photo
    for frame in frames:                                                 # SfM's own poses, keyed by photograph
        np.testing.assert_array_equal(by_photo[f"images/{record['train'][frame['file_path']]}"],
                                      frame["transform_matrix"])
    assert poses["aligned_from_capture"] == ["02.jpg", "05.jpg"]
    s, rot, t = SIMILARITY["scale"], np.array(SIMILARITY["rotation"]), np.array(SIMILARITY["translation"])
    for photo in poses["aligned_from_capture"]:                          # back through the similarity: the capture's
        aligned, truth = by_photo[f"images/{photo}"], pose(int(photo[:2]) - 1)
        np.testing.assert_allclose(s * rot @ aligned[:3, 3] + t, truth[:3, 3], atol=1e-9)
        np.testing.assert_allclose(rot @ aligned[:3, :3], truth[:3, :3], atol=1e-9)
    # the SfM-pose class: SfM's training poses, the aligned test poses, SfM's bounds
    (tmp_path / "sfm_poses.json").write_text(json.dumps(poses))
    built = build_capture_class(capture, tmp_path / "cls", size=W, test_every=3, poses=tmp_path / "sfm_poses.json")
    assert built["unposed"] == [train_photos[0]] and built["undistorted"]
    meta = json.loads((tmp_path / "cls" / "transforms.json").read_text())
    assert len(meta["frames"]) == 3 and meta["bounds"]["object_radius"] == 0.35
    test_poses = json.loads((tmp_path / "cls" / "test_poses.json").read_text())["frames"]
    assert len(test_poses) == 2 * 4                                      # good + 3 painted, per held-out photograph
    np.testing.assert_allclose(test_poses[0]["transform_matrix"], by_photo["images/02.jpg"])


def test_sfm_that_estimates_a_distortion_on_undistorted_photographs_is_refused(capture, tmp_path):
    build_capture_class(capture, tmp_path / "sfm800", size=W, test_every=3, poses=capture / "poses.json")
    _sfm_transforms(tmp_path / "sfm800", tmp_path / "sfm.json", with_k1=True)
    assert json.loads((tmp_path / "sfm800" / CAPTURE_RECORD).read_text())["undistorted"]
    with pytest.raises(DataError, match="already undistorted"):
        sfm_poses(tmp_path / "sfm800", tmp_path / "sfm.json", capture, SIMILARITY, "")


def test_colour_gains_of_a_photograph_against_its_render():
    """benchmarks.bench_colour_gains: a photograph that is its render under another white balance has exactly
    those gains, and no residual left after them; the black backdrop is not the object."""
    import torch

    from benchmarks.bench_colour_gains import gains_against_render

    render = torch.rand(32, 40, 3, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.2
    render[:, :8] = 0.0
    found = gains_against_render(render * torch.tensor([0.8, 1.0, 1.25]), render)
    np.testing.assert_allclose(found["gain"], [0.8, 1.0, 1.25], rtol=1e-5)
    assert found["rms_after"] < 1e-5 < 0.01 < found["rms_before"] and found["object_pixels"] == 32 * 32


def test_a_reused_sfm_class_must_have_been_made_with_the_same_flags(tmp_path):
    from benchmarks.bench_capture_pipeline import SFM_ROW, reused_sfm_row

    work = tmp_path / "sfm800" / "sfm_variants" / "sfm"
    work.mkdir(parents=True)
    (work / SFM_ROW).write_text(json.dumps({"flags": "--upright_sift true", "errors": {}}))
    (tmp_path / "skull_sfm").mkdir()
    (tmp_path / "skull_sfm" / CAPTURE_RECORD).write_text(json.dumps({"poses": str(work / "poses.json")}))
    assert reused_sfm_row(tmp_path / "skull_sfm", "--upright_sift true")["flags"] == "--upright_sift true"
    with pytest.raises(DataError, match="made with --sfm_flags '--upright_sift true'"):
        reused_sfm_row(tmp_path / "skull_sfm", "--guided_matching true")
