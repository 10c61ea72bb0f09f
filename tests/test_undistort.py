"""Undoing radial lens distortion (mad.undistort): the closed-form case, a class written undistorted, the errors."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from common.errors import DataError
from mad.undistort import corner_shift_px, main, remap, undistort_class, undistortion_maps

FX, FY, CX, CY, W, H = 60.0, 62.0, 41.5, 30.0, 80, 60


def _distorted(u: float, v: float, k1: float, k2: float = 0.0) -> tuple[float, float]:
    """Where a lens with radial terms k1, k2 photographs the point a pinhole camera puts at pixel (u, v)."""
    x, y = (u - CX) / FX, (v - CY) / FY
    r2 = x * x + y * y
    f = 1.0 + k1 * r2 + k2 * r2 * r2
    return CX + FX * x * f, CY + FY * y * f


def _blob_image(centres: list[tuple[float, float]]) -> np.ndarray:
    """float32 [H, W]: a Gaussian blob (sigma 1.2 px) at each centre."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    image = sum(np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * 1.2 ** 2)) for cu, cv in centres)
    return image.astype(np.float32)


def _centroid(image: np.ndarray, u: float, v: float, r: int = 4) -> tuple[float, float]:
    v0, u0 = round(v), round(u)
    patch = image[v0 - r:v0 + r + 1, u0 - r:u0 + r + 1].astype(np.float64)
    vv, uu = np.mgrid[v0 - r:v0 + r + 1, u0 - r:u0 + r + 1]
    return float((patch * uu).sum() / patch.sum()), float((patch * vv).sum() / patch.sum())


@pytest.mark.parametrize("k1, k2", [(0.25, 0.0), (-0.2, 0.05)])
def test_a_photographed_point_returns_to_where_the_pinhole_camera_puts_it(k1, k2):
    """Blobs photographed through the lens (at their distorted positions) come back, once undistorted, to
    their pinhole positions within a tenth of a pixel; near the corners the lens moved them by pixels, so
    treating the photograph as a pinhole image would be that far off."""
    pinhole = [(12.0, 10.0), (68.0, 50.0), (41.5, 30.0), (20.0, 48.0), (66.0, 9.0)]
    photograph = _blob_image([_distorted(u, v, k1, k2) for u, v in pinhole])
    undistorted = remap(photograph, undistortion_maps(FX, FY, CX, CY, W, H, k1, k2))
    for u, v in pinhole:
        cu, cv = _centroid(undistorted, u, v)
        assert abs(cu - u) < 0.1 and abs(cv - v) < 0.1, ((u, v), (cu, cv))
    du, dv = _distorted(12.0, 10.0, k1, k2)
    assert np.hypot(du - 12.0, dv - 10.0) > 1.0            # the lens moved an outer point by more than a pixel
    corner = _distorted(0.0, H, k1, k2)                     # the corner farthest from the principal point
    assert corner_shift_px(FX, FY, CX, CY, W, H, k1, k2) == pytest.approx(np.hypot(corner[0], corner[1] - H),
                                                                          rel=1e-6)


def _distorted_class(root, k1: float = 0.2):
    """A tiny class whose transforms.json has a radial term; its images, a test image and its mask."""
    from tests.conftest import generate_tiny

    class_dir = generate_tiny(root, n_train=4, n_test_good=1, n_test_defect=1)
    meta = json.loads((class_dir / "transforms.json").read_text())
    size = cv2.imread(str(next((class_dir / "train" / "good").glob("*.png")))).shape[1]
    meta.update(fl_x=1.2 * size, fl_y=1.2 * size, cx=size / 2, cy=size / 2, w=size, h=size, k1=k1)
    meta.pop("camera_angle_x", None)
    (class_dir / "transforms.json").write_text(json.dumps(meta))
    return class_dir, meta


def test_a_class_is_written_undistorted_and_then_loads(tmp_path):
    """The loader refuses the distorted class with a pointer to mad.undistort; the undistorted copy loads (train
    views, test set with binary masks aligned with its images), has no k1, and each of its images is the
    original read through the undistortion maps; the original is untouched."""
    from mad.loader import load_test_set, load_train_views

    class_dir, meta = _distorted_class(tmp_path / "data")
    with pytest.raises(DataError, match=f"python -m mad.undistort --class_dir {class_dir}"):
        load_train_views(class_dir)
    before = {p: p.read_bytes() for p in class_dir.rglob("*.png")}
    main(["--class_dir", str(class_dir)])
    out = class_dir.with_name(class_dir.name + "_pinhole")
    assert "k1" not in json.loads((out / "transforms.json").read_text()) and not list(tmp_path.rglob("*.partial"))
    record = json.loads((out / "undistorted.json").read_text())
    assert record["k1"] == 0.2 and record["images"] == len(list((class_dir / "train").rglob("*.png"))) + \
        len(list((class_dir / "test").rglob("*.png"))) and \
        record["masks"] == len(list((class_dir / "ground_truth").rglob("*.png"))) == 3
    views = load_train_views(out)
    assert views.intrinsics.fx == pytest.approx(meta["fl_x"])
    maps = undistortion_maps(meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], meta["w"], meta["h"], 0.2)
    for path in class_dir.rglob("*.png"):
        assert path.read_bytes() == before[path]
        rel = path.relative_to(class_dir)
        written = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
        original = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, remap(original, maps, nearest="ground_truth" in rel.parts))
        if "train" in rel.parts:
            assert not np.array_equal(written, original)
    samples = load_test_set(out, white_bkgd=True)
    defect = [s for s in samples if s.defect_type != "good"]
    assert len(samples) == 4 and len(defect) == 3
    assert all(set(np.unique(s.mask)) <= {0, 1} and s.mask.any() for s in defect)


def test_undistortion_refuses_what_it_cannot_do(tmp_path):
    class_dir, meta = _distorted_class(tmp_path / "data")
    with pytest.raises(DataError, match="must go to another folder"):
        undistort_class(class_dir, class_dir)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(DataError, match="exists and is not empty"):
        undistort_class(class_dir, tmp_path / "busy")
    meta.update(p1=0.01)
    (class_dir / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"p1=0.01 is not supported \(only the radial k1 and k2\)"):
        undistort_class(class_dir, tmp_path / "out")
    meta.update(k1=0.0, p1=0.0)
    (class_dir / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="has no lens distortion"):
        undistort_class(class_dir, tmp_path / "out2")
