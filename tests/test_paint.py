"""Defects painted on photographs (mad.paint): the object found on a plain background, each painter's mask is
exactly what it changed and lies where its defect belongs, the same seed paints the same, bad input is refused."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from common.errors import DataError
from mad.foreground import object_mask
from mad.paint import PAINTED_TYPES, paint_defect

H, W = 120, 160


def disc_photo(object_colour=(200, 180, 140), background=(20, 18, 15), seed: int = 0):
    """A textured disc (the object) on a darker plain background with a little noise: (image, true object)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((H, W), np.uint8)
    cv2.circle(truth, (W // 2, H // 2), 40, 1, -1)
    image = np.where(truth[..., None].astype(bool), np.array(object_colour), np.array(background)).astype(np.float64)
    image += rng.normal(0, 4, image.shape) + 25 * np.sin(np.arange(W) / 3.0)[None, :, None] * truth[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), truth.astype(bool)


@pytest.mark.parametrize("colours", [((200, 180, 140), (20, 18, 15)), ((30, 30, 30), (230, 230, 225))])
def test_the_object_is_found_on_a_plain_background(colours):
    image, truth = disc_photo(*colours)
    found = object_mask(image)
    assert (found & truth).sum() / (found | truth).sum() > 0.95


@pytest.mark.parametrize("defect", PAINTED_TYPES)
def test_each_painter_changes_exactly_its_mask_where_its_defect_belongs(defect):
    image, truth = disc_photo()
    painted, mask = paint_defect(image, truth, defect, np.random.default_rng(1))
    changed = (np.abs(painted.astype(int) - image.astype(int)) > 3).any(-1)
    assert np.array_equal(mask, changed) and mask.sum() >= 20
    inside = (mask & truth).sum() / mask.sum()
    if defect == "Stains":                     # a discolouration of the surface: on the object, darker there
        assert inside == 1.0 and painted[mask].mean() < image[mask].mean()
    elif defect == "Missing":                  # a bite out of the object: its pixels now look like the background
        assert inside == 1.0 and painted[mask].mean() < 80 < image[mask].mean()
        assert cv2.connectedComponents(mask.astype(np.uint8))[0] - 1 == 1
    else:                                      # burrs stand out of the outline (rooted just inside it)
        assert inside < 0.75 and (mask & ~truth).sum() >= 10


def test_the_same_seed_paints_the_same_and_another_seed_elsewhere():
    image, truth = disc_photo()
    first = paint_defect(image, truth, "Stains", np.random.default_rng(5))
    again = paint_defect(image, truth, "Stains", np.random.default_rng(5))
    other = paint_defect(image, truth, "Stains", np.random.default_rng(6))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_bad_input_is_refused():
    image, truth = disc_photo()
    with pytest.raises(DataError, match="no painter for defect type 'Scratch'"):
        paint_defect(image, truth, "Scratch", np.random.default_rng(0))
    tiny = np.zeros_like(truth)
    tiny[:5, :5] = True
    with pytest.raises(DataError, match="too small"):
        paint_defect(image, tiny, "Stains", np.random.default_rng(0))


def test_a_capture_becomes_a_class_in_the_mad_layout(tmp_path):
    """mad.capture: every test_every-th photograph held out, the rest train/good (downscaled); each held-out one is
    a good test image and a painted one per defect type whose mask is exactly where it differs from the good
    one; the reader accepts the class; the same seed writes the same bytes."""
    from mad.capture import build_capture_class
    from mad.loader import load_test_set

    (tmp_path / "cap" / "images").mkdir(parents=True)
    for i in range(6):
        image, _ = disc_photo(seed=i)
        big = cv2.resize(image, (2 * W, 2 * H), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(tmp_path / "cap" / "images" / f"{i + 1:02d}.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    record = build_capture_class(tmp_path / "cap", tmp_path / "real" / "toy", size=W, test_every=3, seed=0)
    root = tmp_path / "real" / "toy"
    assert sorted(record["train"].values()) == ["01.jpg", "03.jpg", "04.jpg", "06.jpg"]
    assert sorted(set(record["test"].values())) == ["02.jpg", "05.jpg"]
    assert cv2.imread(str(root / "train" / "good" / "0.png")).shape == (H, W, 3)
    samples = load_test_set(root, downscale=1, white_bkgd=False, allow_empty_masks=False)
    assert sorted({s.defect_type for s in samples}) == ["Burrs", "Missing", "Stains", "good"] and len(samples) == 8
    good = {s.name.split("/")[1]: s.image for s in samples if s.defect_type == "good"}
    for s in samples:
        if s.defect_type != "good":
            differs = (np.abs(s.image - good[s.name.split("/")[1]]) > 3.5 / 255).any(-1)
            assert np.array_equal(differs, s.mask > 0)
    build_capture_class(tmp_path / "cap", tmp_path / "again" / "toy", size=W, test_every=3, seed=0)
    for path in sorted(root.rglob("*.png")):
        assert path.read_bytes() == (tmp_path / "again" / "toy" / path.relative_to(root)).read_bytes()
    with pytest.raises(DataError, match="images/ folder"):
        build_capture_class(tmp_path / "nothing", tmp_path / "x", size=W)


def test_a_black_backdrop_keeps_each_image_s_object_alone(tmp_path):
    """`--backdrop black`: every image keeps its own object (found in that image) on pure black; the painted
    defects still differ from the good image inside their masks."""
    from mad.capture import build_capture_class

    (tmp_path / "cap" / "images").mkdir(parents=True)
    truths = []
    for i in range(4):
        image, truth = disc_photo(seed=i)
        truths.append(truth)
        cv2.imwrite(str(tmp_path / "cap" / "images" / f"{i + 1:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    record = build_capture_class(tmp_path / "cap", tmp_path / "toy", size=W, test_every=3, seed=0, backdrop="black")
    assert record["backdrop"] == "black"
    train = cv2.imread(str(tmp_path / "toy" / "train" / "good" / "0.png"))
    lit = train.any(-1)
    assert (lit & truths[0]).sum() / (lit | truths[0]).sum() > 0.95 and not train[~lit].any()
    good = cv2.imread(str(tmp_path / "toy" / "test" / "good" / "0.png")).astype(int)
    for defect in PAINTED_TYPES:
        painted = cv2.imread(str(tmp_path / "toy" / "test" / defect / "0.png")).astype(int)
        mask = cv2.imread(str(tmp_path / "toy" / "ground_truth" / defect / "0_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        differs = (np.abs(painted - good) > 3).any(-1)
        assert mask.any() and (differs & mask).sum() > 0.5 * mask.sum()
    with pytest.raises(DataError, match="backdrop must be one of keep, black"):
        build_capture_class(tmp_path / "cap", tmp_path / "x", size=W, backdrop="white")


def test_the_capture_s_poses_become_the_class_s_transforms_and_test_poses(tmp_path):
    """A capture with poses (written from an SfM transforms.json of its photographs at another size): the class
    gets transforms.json for the training photographs that have a pose (the camera scaled to the class's images)
    and test_poses.json for every test image of a posed photograph; the loader reads both."""
    import json

    from mad.capture import build_capture_class, capture_poses_from_sfm
    from mad.loader import load_train_views
    from omniposead.pose_accuracy import load_test_poses

    (tmp_path / "cap" / "images").mkdir(parents=True)
    for i in range(6):
        image, _ = disc_photo(seed=i)
        big = cv2.resize(image, (2 * W, 2 * H), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(tmp_path / "cap" / "images" / f"{i + 1:02d}.JPG"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    pose = lambda k: np.diag([1.0, 1.0, 1.0, 1.0]) + np.pad(np.eye(3)[:, :1] * k, ((0, 1), (3, 0)))  # noqa: E731
    sfm = {"fl_x": 400.0, "fl_y": 400.0, "cx": 2 * W / 2, "cy": 2 * H / 2, "w": 2 * W, "h": 2 * H, "k1": 0.05,
           "bounds": {"near": 3.0, "far": 5.0, "object_radius": 0.7},
           "frames": [{"file_path": f"train/good/{i + 1:02d}.jpg", "transform_matrix": pose(i).tolist()}
                      for i in range(6) if i != 2]}                      # photograph 03 was not registered
    (tmp_path / "sfm.json").write_text(json.dumps(sfm))
    poses = capture_poses_from_sfm(tmp_path / "sfm.json", tmp_path / "cap", "SfM at 2x")
    (tmp_path / "cap" / "poses.json").write_text(json.dumps(poses))
    assert poses["frames"][0]["file_path"] == "images/01.JPG" and poses["source"] == "SfM at 2x"
    record = build_capture_class(tmp_path / "cap", tmp_path / "toy", size=W, test_every=3, seed=0,
                                 poses=tmp_path / "cap" / "poses.json")
    assert record["unposed"] == ["03.JPG"] and record["distortion_undone_px"] > 0
    # the lens distortion is undone: each image is the plain one read through the undistortion maps
    from mad.undistort import remap, undistortion_maps

    build_capture_class(tmp_path / "cap", tmp_path / "plain", size=W, test_every=3, seed=0, poses=None)
    maps = undistortion_maps(200.0, 200.0, W / 2, H / 2, W, H, 0.05)
    for rel in ("train/good/0.png", "test/good/0.png"):
        plain = cv2.imread(str(tmp_path / "plain" / rel))
        assert np.array_equal(cv2.imread(str(tmp_path / "toy" / rel)), remap(plain, maps))
        assert not np.array_equal(remap(plain, maps), plain)
    views = load_train_views(tmp_path / "toy", white_bkgd=False)        # 01, 04, 06 (03 has no pose)
    assert len(views.images) == 3 and views.bounds["object_radius"] == 0.7
    np.testing.assert_allclose(views.poses[1], pose(3), atol=1e-6)
    assert views.intrinsics.fx == pytest.approx(200.0) and views.intrinsics.cx == pytest.approx(W / 2)
    test_poses = load_test_poses(tmp_path / "toy")                       # held out: 02 and 05, each 4 images
    assert len(test_poses) == 8
    np.testing.assert_allclose(test_poses["Burrs/1"], pose(4))
    # the capture's oracle (omniposead.decomposition): each test image's unpainted photograph
    from mad.loader import load_test_set
    from omniposead.decomposition import oracle_references

    samples = load_test_set(tmp_path / "toy", white_bkgd=False)
    oracle = oracle_references(tmp_path / "toy", samples, views.intrinsics)
    good = {s.name.split("/")[1]: s.image for s in samples if s.defect_type == "good"}
    assert len(oracle) == len(samples) == 8
    for sample, reference in zip(samples, oracle, strict=True):
        assert np.array_equal(reference, good[sample.name.split("/")[1]])
