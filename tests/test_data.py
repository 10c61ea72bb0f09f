"""The MAD reader: counts, shapes, focal, half_res, image formats, ordering and bad input."""
from __future__ import annotations

import builtins
import json
import math
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest

from common.errors import DataError
from data.mad import list_classes, load_test_set, load_train_views, natural_key, resolve_class_dir

ANGLE = 0.6911112070083618


def _pose(k: int) -> list:
    pose = np.eye(4)
    pose[:3, 3] = [0.0, -4.0 - 0.1 * k, 0.5]
    return pose.tolist()


def _write(path: pathlib.Path, image: np.ndarray) -> pathlib.Path:
    """Write RGB(A)/gray as PNG through cv2 (which expects BGR order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    assert cv2.imwrite(str(path), np.ascontiguousarray(image))
    return path


def make_class(root: pathlib.Path, name: str = "toy", *, height: int = 6, width: int = 8, n_train: int = 3,
               test: dict | None = None, mask_max: int = 255, extensionless: bool = False) -> pathlib.Path:
    """A small MAD-layout class: train images filled with k/10 grey; test images with defects."""
    cdir = root / name
    frames = []
    for k in range(n_train):
        _write(cdir / "train" / "good" / f"{k}.png", np.full((height, width, 3), 20 * k, np.uint8))
        fp = f"train/good/{k}" if extensionless else f"train/good/{k}.png"
        frames.append({"file_path": fp, "transform_matrix": _pose(k)})
    (cdir / "transforms.json").write_text(json.dumps({"camera_angle_x": ANGLE, "frames": frames}))
    test = {"good": [0, 1], "Burrs": [0], "Stains": [0, 1]} if test is None else test
    for defect, stems in test.items():
        for stem in stems:
            img = np.full((height, width, 3), 100 + int(stem), np.uint8)
            _write(cdir / "test" / defect / f"{stem}.png", img)
            if defect != "good":
                mask = np.zeros((height, width), np.uint8)
                mask[1:3, 2:5] = mask_max
                _write(cdir / "ground_truth" / defect / f"{stem}_mask.png", mask)
    return cdir


# ----------------------------------------------------------------------------- happy paths

def test_train_views_counts_shapes_focal(tmp_path):
    cdir = make_class(tmp_path, n_train=4)
    views = load_train_views(cdir)
    assert views.images.shape == (4, 6, 8, 3) and views.images.dtype == np.float32
    assert views.poses.shape == (4, 4, 4) and views.poses.dtype == np.float32
    assert (views.height, views.width) == (6, 8)
    assert views.focal == pytest.approx(0.5 * 8 / math.tan(0.5 * ANGLE))
    np.testing.assert_allclose(views.images[2], 40 / 255, atol=1e-6)
    np.testing.assert_allclose(views.poses[3], np.array(_pose(3)), atol=1e-6)
    assert [p.name for p in views.paths] == ["0.png", "1.png", "2.png", "3.png"]


def test_test_set_labels_masks_order(tmp_path):
    cdir = make_class(tmp_path)
    samples = load_test_set(cdir)
    assert [s.name for s in samples] == ["good/0", "good/1", "Burrs/0", "Stains/0", "Stains/1"]
    assert [s.label for s in samples] == [0, 0, 1, 1, 1]
    assert [s.defect_type for s in samples] == ["good", "good", "Burrs", "Stains", "Stains"]
    for s in samples:
        assert s.image.shape == (6, 8, 3) and s.image.dtype == np.float32
        assert s.mask.shape == (6, 8) and s.mask.dtype == bool
        assert s.mask.sum() == (0 if s.label == 0 else 6)
    assert samples[4].path == cdir / "test" / "Stains" / "1.png"


def test_numeric_file_order(tmp_path):
    cdir = make_class(tmp_path, test={"good": [10, 2, 1, 0], "Burrs": [11, 3]})
    names = [s.name for s in load_test_set(cdir)]
    assert names == ["good/0", "good/1", "good/2", "good/10", "Burrs/3", "Burrs/11"]
    assert sorted(["10.png", "2.png", "b.png", "a10.png", "a9.png"], key=natural_key) == \
        ["2.png", "10.png", "a9.png", "a10.png", "b.png"]
    # A name that is a prefix of another (class folders "demo" and "demo96") must sort, not crash.
    assert sorted(["demo96", "demo", "01Gorilla", "1Gorilla", "demo9"], key=natural_key) == \
        ["01Gorilla", "1Gorilla", "demo", "demo9", "demo96"]


def test_half_res(tmp_path):
    cdir = make_class(tmp_path, height=6, width=8)
    full, half = load_train_views(cdir), load_train_views(cdir, half_res=True)
    assert half.images.shape == (3, 3, 4, 3) and (half.height, half.width) == (3, 4)
    assert half.focal == pytest.approx(full.focal / 2)
    samples = load_test_set(cdir, half_res=True)
    assert samples[0].image.shape == (3, 4, 3)
    burrs = samples[2]
    assert burrs.mask.shape == (3, 4) and burrs.mask.dtype == bool and burrs.mask.any()


def test_non_square_images_use_width_for_focal(tmp_path):
    cdir = make_class(tmp_path, height=7, width=10)
    views = load_train_views(cdir)
    assert views.images.shape[1:3] == (7, 10)
    assert views.focal == pytest.approx(0.5 * 10 / math.tan(0.5 * ANGLE))
    half = load_train_views(cdir, half_res=True)
    assert (half.height, half.width) == (3, 5)
    assert half.focal == pytest.approx(0.5 * 5 / math.tan(0.5 * ANGLE))


def test_rgba_composited_on_white_or_alpha_dropped(tmp_path):
    cdir = make_class(tmp_path, n_train=1)
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red channel
    rgba[..., 3] = 0
    rgba[0, 0, 3] = 255
    rgba[0, 1, 3] = 128
    _write(cdir / "train" / "good" / "0.png", rgba)
    white = load_train_views(cdir, white_bkgd=True).images[0]
    np.testing.assert_allclose(white[1, 1], [1, 1, 1], atol=1e-6)           # transparent -> white
    np.testing.assert_allclose(white[0, 0], [200 / 255, 0, 0], atol=1e-6)   # opaque kept
    a = 128 / 255
    np.testing.assert_allclose(white[0, 1], [200 / 255 * a + 1 - a, 1 - a, 1 - a], atol=1e-6)
    plain = load_train_views(cdir, white_bkgd=False).images[0]
    np.testing.assert_allclose(plain[1, 1], [200 / 255, 0, 0], atol=1e-6)   # alpha dropped


def test_grayscale_16bit_and_extensionless_paths(tmp_path):
    cdir = make_class(tmp_path, n_train=2, extensionless=True)
    _write(cdir / "train" / "good" / "0.png", np.full((6, 8), 51, np.uint8))
    _write(cdir / "train" / "good" / "1.png", np.full((6, 8, 3), 65535, np.uint16))
    views = load_train_views(cdir)
    assert views.images.shape == (2, 6, 8, 3)
    np.testing.assert_allclose(views.images[0], 0.2, atol=1e-6)
    np.testing.assert_allclose(views.images[1], 1.0, atol=1e-6)


def test_mask_values_01_and_0255_and_rgb_masks_agree(tmp_path):
    m255 = load_test_set(make_class(tmp_path / "a", mask_max=255))
    m1 = load_test_set(make_class(tmp_path / "b", mask_max=1))
    for x, y in zip(m255, m1):
        np.testing.assert_array_equal(x.mask, y.mask)
    cdir = make_class(tmp_path / "c")
    rgb_mask = np.zeros((6, 8, 3), np.uint8)
    rgb_mask[1:3, 2:5] = 255
    _write(cdir / "ground_truth" / "Burrs" / "0_mask.png", rgb_mask)
    np.testing.assert_array_equal(load_test_set(cdir)[2].mask, m255[2].mask)


def test_list_and_resolve_classes(tmp_path):
    make_class(tmp_path, "10Sheep")
    make_class(tmp_path, "02Unicorn")
    (tmp_path / "not_a_class").mkdir()
    assert list_classes(tmp_path) == ["02Unicorn", "10Sheep"]
    assert resolve_class_dir(tmp_path, "10Sheep") == tmp_path / "10Sheep"
    with pytest.raises(DataError, match=r"'01Gorilla' not found.*classes present: 02Unicorn, 10Sheep"):
        resolve_class_dir(tmp_path, "01Gorilla")


def test_test_poses_json_is_never_read(tmp_path, monkeypatch):
    cdir = make_class(tmp_path)
    (cdir / "test_poses.json").write_text("{ not json")
    real_open, real_read = builtins.open, pathlib.Path.read_text

    def guarded_open(file, *args, **kwargs):
        assert "test_poses" not in str(file), "test_poses.json must not be read by the reader"
        return real_open(file, *args, **kwargs)

    def guarded_read(self, *args, **kwargs):
        assert "test_poses" not in self.name, "test_poses.json must not be read by the reader"
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(pathlib.Path, "read_text", guarded_read)
    load_train_views(cdir)
    load_test_set(cdir)


# ----------------------------------------------------------------------------- bad input

def _edit_transforms(cdir, fn):
    path = cdir / "transforms.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _set_frame0(key, value):
    def fn(meta):
        meta["frames"][0][key] = value
    return fn


def _drop_frame0(key):
    def fn(meta):
        del meta["frames"][0][key]
    return fn


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("camera_angle_x"), r"transforms\.json: missing key 'camera_angle_x'"),
    (lambda m: m.update(camera_angle_x="wide"), r"transforms\.json: 'camera_angle_x' must be a number"),
    (lambda m: m.pop("frames"), r"transforms\.json: missing key 'frames'"),
    (lambda m: m.update(frames=[]), r"transforms\.json: 'frames' is empty"),
    (_drop_frame0("transform_matrix"), r"transforms\.json: frame 0 lacks key 'transform_matrix'"),
    (_drop_frame0("file_path"), r"transforms\.json: frame 0 lacks key 'file_path'"),
    (_set_frame0("transform_matrix", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), r"frame 0: .*shape \(3, 3\)"),
    (_set_frame0("transform_matrix", [[1, 0, 0, 0]] * 3 + [[0, 0, 0, "x"]]), r"frame 0: .*not a numeric"),
    (_set_frame0("transform_matrix", [[float("nan")] * 4] * 4), r"frame 0: .*non-finite"),
    (_set_frame0("file_path", "train/good/99.png"), r"99\.png: image referenced by frame 0 .* not found"),
])
def test_bad_transforms(tmp_path, edit, message):
    cdir = make_class(tmp_path)
    _edit_transforms(cdir, edit)
    with pytest.raises(DataError, match=message):
        load_train_views(cdir)


def test_missing_paths(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere")) + ": data_root folder not found"):
        list_classes(tmp_path / "nowhere")
    with pytest.raises(DataError, match="data_root folder not found"):
        resolve_class_dir(tmp_path / "nowhere", "x")
    with pytest.raises(DataError, match=r"class 'x' not found .*classes present: none"):
        resolve_class_dir(tmp_path, "x")
    cdir = make_class(tmp_path)
    (cdir / "transforms.json").unlink()
    with pytest.raises(DataError, match=r"toy/transforms\.json: transforms file not found"):
        load_train_views(cdir)


def test_malformed_json(tmp_path):
    cdir = make_class(tmp_path)
    (cdir / "transforms.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    with pytest.raises(DataError, match=r"transforms\.json: malformed JSON"):
        load_train_views(cdir)


def test_corrupt_image(tmp_path):
    cdir = make_class(tmp_path)
    (cdir / "train" / "good" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"good/1\.png: cannot decode image"):
        load_train_views(cdir)
    cdir = make_class(tmp_path / "b")
    (cdir / "test" / "Stains" / "1.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"Stains/1\.png: cannot decode image"):
        load_test_set(cdir)


def test_train_size_mismatch(tmp_path):
    cdir = make_class(tmp_path)
    _write(cdir / "train" / "good" / "2.png", np.zeros((5, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"good/2\.png: image size 8x5 differs from 8x6"):
        load_train_views(cdir)


def test_defect_image_without_mask(tmp_path):
    cdir = make_class(tmp_path)
    (cdir / "ground_truth" / "Stains" / "1_mask.png").unlink()
    with pytest.raises(DataError, match=r"Stains/1\.png: defect image has no mask .*1_mask\.png"):
        load_test_set(cdir)


def test_mask_size_mismatch(tmp_path):
    cdir = make_class(tmp_path)
    _write(cdir / "ground_truth" / "Burrs" / "0_mask.png", np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match=r"Burrs/0_mask\.png: mask size 4x3 differs from its image"):
        load_test_set(cdir)


def test_test_folder_missing_or_empty(tmp_path):
    cdir = make_class(tmp_path)
    shutil.rmtree(cdir / "test" / "Burrs")
    (cdir / "test" / "Burrs").mkdir()
    with pytest.raises(DataError, match=r"test/Burrs: test folder contains no images"):
        load_test_set(cdir)
    shutil.rmtree(cdir / "test")
    with pytest.raises(DataError, match=r"toy/test: test folder not found"):
        load_test_set(cdir)
    (cdir / "test").mkdir()
    with pytest.raises(DataError, match=r"toy/test: test folder has no sub-folders"):
        load_test_set(cdir)
