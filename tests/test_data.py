"""The MAD reader: counts, shapes, intrinsics, downscale, image formats, ordering and bad input."""
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
import torch

from common.camera import Intrinsics
from common.errors import ConfigError, DataError
from common.run import RunOptions
from mad.images import downscale_image, downscale_mask
from mad.layout import list_classes, natural_key, resolve_class_dir
from mad.loader import load_test_set, load_train_views
from nerf.rays import camera_directions

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

def test_train_views_counts_shapes_intrinsics(tmp_path):
    cdir = make_class(tmp_path, n_train=4)
    views = load_train_views(cdir)
    assert views.images.shape == (4, 6, 8, 3) and views.images.dtype == np.float32
    assert views.poses.shape == (4, 4, 4) and views.poses.dtype == np.float32
    assert (views.height, views.width) == (6, 8)
    assert views.intrinsics == Intrinsics.centred(0.5 * 8 / math.tan(0.5 * ANGLE), 8, 6)
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


def test_saved_results_come_back_in_the_readers_order(tmp_path):
    """One order (mad.layout.sample_order_key) for the reader and anomaly.results.load_results, also where
    sorting file names and stems would differ ('1-a.png' < '1.png' but '1' < '1-a') and for numbered folders."""
    from anomaly.results import load_results, save_result

    cdir = make_class(tmp_path / "data", test={"good": [1, 10, 2], "Defect10": [0], "Defect2": [0]})
    shutil.copy(cdir / "test" / "good" / "1.png", cdir / "test" / "good" / "1-a.png")
    names = [s.name for s in load_test_set(cdir)]
    assert names == ["good/1", "good/1-a", "good/2", "good/10", "Defect2/0", "Defect10/0"]
    for name in reversed(names):
        defect = name.split("/")[0]
        save_result(tmp_path / "out", name, np.zeros((2, 2)), {"image_score": 0.0, "label": int(defect != "good"),
                                                               "defect_type": defect, "backbone": "b"})
    assert [r.name for r in load_results(tmp_path / "out")] == names


def test_half_res_is_downscale_2(tmp_path):
    cdir = make_class(tmp_path, height=6, width=8)
    full, half = load_train_views(cdir), load_train_views(cdir, downscale=RunOptions(half_res=True).image_downscale)
    assert half.images.shape == (3, 3, 4, 3) and (half.height, half.width) == (3, 4)
    assert half.intrinsics == Intrinsics(full.intrinsics.fx / 2, full.intrinsics.fy / 2, 2.0, 1.5)
    samples = load_test_set(cdir, downscale=2)
    assert samples[0].image.shape == (3, 4, 3)
    burrs = samples[2]
    assert burrs.mask.shape == (3, 4) and burrs.mask.dtype == bool and burrs.mask.any()
    assert RunOptions(downscale=4).image_downscale == 4 and RunOptions().image_downscale == 1
    with pytest.raises(ConfigError, match=r"half_res .* contradicts downscale = 4"):
        RunOptions(half_res=True, downscale=4).validated()
    with pytest.raises(ConfigError, match="downscale must be >= 1"):
        RunOptions(downscale=0).validated()


def test_non_square_images_use_width_for_focal(tmp_path):
    cdir = make_class(tmp_path, height=7, width=10)
    views = load_train_views(cdir)
    assert views.images.shape[1:3] == (7, 10)
    assert views.intrinsics == Intrinsics.centred(0.5 * 10 / math.tan(0.5 * ANGLE), 10, 7)
    half = load_train_views(cdir, downscale=2)      # the odd last row is dropped: pixel blocks stay square
    assert (half.height, half.width) == (3, 5)
    assert half.intrinsics.fx == pytest.approx(0.5 * 5 / math.tan(0.5 * ANGLE))
    assert (half.intrinsics.cx, half.intrinsics.cy) == (2.5, 1.75)


def _set_intrinsics(cdir, **keys):
    _edit_transforms(cdir, lambda meta: meta.update(keys))


def test_full_intrinsics_and_off_centre_principal_point(tmp_path):
    """fl_x, fl_y, cx, cy (instant-ngp / nerfstudio) reach the rays: the ray of pixel (j, i) is
    ((i + 0.5 - cx)/fl_x, -(j + 0.5 - cy)/fl_y, -1)."""
    cdir = make_class(tmp_path, height=6, width=8)
    _set_intrinsics(cdir, fl_x=10.0, fl_y=12.0, cx=3.0, cy=2.5, w=8, h=6)
    views = load_train_views(cdir)
    assert views.intrinsics == Intrinsics(10.0, 12.0, 3.0, 2.5)
    dirs = camera_directions(6, 8, views.intrinsics, device="cpu", dtype=torch.float64).numpy()
    jj, ii = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    np.testing.assert_allclose(dirs[..., 0], (ii + 0.5 - 3.0) / 10.0)
    np.testing.assert_allclose(dirs[..., 1], -(jj + 0.5 - 2.5) / 12.0)
    centred = camera_directions(6, 8, Intrinsics(10.0, 12.0, 4.0, 3.0), device="cpu", dtype=torch.float64).numpy()
    np.testing.assert_allclose(dirs[..., 0] - centred[..., 0], 1.0 / 10.0)   # cx one pixel left: rays turn right
    np.testing.assert_allclose(dirs[..., 1] - centred[..., 1], -0.5 / 12.0)  # cy half a pixel up: rays turn down
    # fl_x wins over camera_angle_x; fl_y and cx, cy default to fl_x and the centre
    _set_intrinsics(cdir, fl_x=9.0, camera_angle_x=ANGLE)
    _edit_transforms(cdir, lambda meta: [meta.pop(k) for k in ("fl_y", "cx", "cy", "w", "h")])
    assert load_train_views(cdir).intrinsics == Intrinsics(9.0, 9.0, 4.0, 3.0)
    # intrinsics given for the full-size capture are scaled to the images' size (same aspect ratio)
    _set_intrinsics(cdir, fl_x=80.0, fl_y=80.0, cx=30.0, cy=20.0, w=64, h=48)
    assert load_train_views(cdir).intrinsics == Intrinsics(10.0, 10.0, 3.75, 2.5)
    # and downscale divides them (2: 4x3 images)
    assert load_train_views(cdir, downscale=2).intrinsics == Intrinsics(5.0, 5.0, 1.875, 1.25)


@pytest.mark.parametrize("keys, message", [
    ({"fl_x": 10.0, "w": 9, "h": 6}, r"intrinsics are for 9x6 images but the images are 8x6"),
    ({"fl_x": 10.0, "w": 8}, r"give both 'w' and 'h'"),
    ({"fl_x": -1.0}, r"'fl_x' must be a positive number"),
    ({"fl_x": 10.0, "cx": "mid"}, r"'cx' must be a number"),
    ({"fl_x": 10.0, "p1": 0.1}, r"lens distortion p1=0.1: .* image_undistorter"),
    ({"fl_x": 10.0, "k1": 0.1}, r"lens distortion k1=0.1: .* python -m mad.undistort"),
    ({"camera_angle_y": 4.0}, r"'camera_angle_y' must be a number in \(0, pi\)"),
])
def test_bad_intrinsics(tmp_path, keys, message):
    cdir = make_class(tmp_path)
    _set_intrinsics(cdir, **keys)
    with pytest.raises(DataError, match=r"transforms\.json: " + message):
        load_train_views(cdir)


def test_per_frame_intrinsics_are_refused(tmp_path):
    cdir = make_class(tmp_path)
    _edit_transforms(cdir, _set_frame0("fl_x", 11.0))
    with pytest.raises(DataError, match=r"frame 0 has its own 'fl_x'; one camera shared by all views"):
        load_train_views(cdir)


def test_downscale_keeps_masks_aligned_with_images(tmp_path):
    """A defect drawn into the image at the masked pixels is, after downscaling by 2 and 3, exactly where
    the downscaled mask is (area resampling changes every block that holds a defect pixel); a one-pixel
    defect survives; the last H mod k rows / W mod k columns are dropped from both."""
    height, width = 13, 17
    cdir = make_class(tmp_path, height=height, width=width, test={"good": [0], "Burrs": [0]})
    image = np.full((height, width, 3), 200, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[2:5, 3:9] = 255      # a patch
    mask[10, 13] = 255        # a single pixel
    mask[12, 16] = 255        # in the dropped margin for k = 2 and 3
    image[mask > 0] = (10, 40, 250)
    _write(cdir / "test" / "Burrs" / "0.png", image)
    _write(cdir / "ground_truth" / "Burrs" / "0_mask.png", mask)
    for k in (2, 3):
        burrs = load_test_set(cdir, downscale=k)[1]
        h, w = height // k, width // k
        assert burrs.image.shape == (h, w, 3) and burrs.mask.shape == (h, w)
        changed = np.abs(burrs.image - 200 / 255).max(-1) > 1e-6
        np.testing.assert_array_equal(burrs.mask, changed)
        assert burrs.mask[10 // k, 13 // k]                                  # the one-pixel defect is kept
        np.testing.assert_array_equal(downscale_mask(mask > 0, k), burrs.mask)
    assert downscale_image(image, 1) is image and downscale_mask(mask, 1) is mask


def test_class_without_poses_points_at_colmap_poses(tmp_path):
    cdir = make_class(tmp_path)
    (cdir / "transforms.json").unlink()
    assert list_classes(tmp_path) == ["toy"]          # still a class: loading it says what to do
    with pytest.raises(DataError, match=r"toy/transforms\.json: transforms file not found; the training views have "
                                        r"no poses: .*python -m mad\.colmap_poses --class_dir .*toy"):
        load_train_views(cdir)


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
    for x, y in zip(m255, m1, strict=True):
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
    (lambda m: m.pop("camera_angle_x"), r"transforms\.json: missing key 'camera_angle_x' \(or the intrinsics"),
    (lambda m: m.update(camera_angle_x="wide"), r"transforms\.json: 'camera_angle_x' must be a number"),
    (lambda m: m.pop("frames"), r"transforms\.json: missing key 'frames'"),
    (lambda m: m.update(frames=[]), r"transforms\.json: 'frames' is empty"),
    (_drop_frame0("transform_matrix"), r"transforms\.json: frame 0 lacks key 'transform_matrix'"),
    (_drop_frame0("file_path"), r"transforms\.json: frame 0 lacks key 'file_path'"),
    (_set_frame0("transform_matrix", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), r"frame 0: .*shape \(3, 3\)"),
    (_set_frame0("transform_matrix", [[1, 0, 0, 0]] * 3 + [[0, 0, 0, "x"]]), r"frame 0: .*not a numeric"),
    (_set_frame0("transform_matrix", [[float("nan")] * 4] * 4), r"frame 0: .*non-finite"),
    (_set_frame0("transform_matrix", [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 4], [0, 0, 0, 1]]),
     r"frame 0: 'transform_matrix' has a rotation block that is not a rotation .*det 8"),
    (_set_frame0("transform_matrix", [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]),
     r"frame 0: .*not a rotation .*det -1;.*no reflection"),
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
    with pytest.raises(DataError, match=r"good/2\.png: image size 8x5 differs from the 8x6 of 2 of the 3 training"):
        load_train_views(cdir)


def test_the_odd_size_is_named_even_when_it_is_read_first(tmp_path):
    """Sizes are compared with the most common one: an odd first image is named, not every image after it."""
    cdir = make_class(tmp_path)
    _write(cdir / "train" / "good" / "0.png", np.zeros((5, 8, 3), np.uint8))
    with pytest.raises(DataError) as err:
        load_train_views(cdir)
    odd = cdir / "train" / "good" / "0.png"
    line = f"{odd}: image size 8x5 differs from the 8x6 of 2 of the 3 training images (they must share one size)"
    assert str(err.value).splitlines() == [line]


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
