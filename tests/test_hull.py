"""Object masks that agree between views (mad.hull): a sphere seen from a ring of cameras, with a lamp in some
views and a part of the sphere lost in others, and a capture made into a class on the hull's backdrop."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from common.errors import DataError
from mad.hull import hull_mask, project, visual_hull

H, W, RADIUS = 96, 128, 0.5
CAMERA = {"fl_x": 200.0, "fl_y": 200.0, "cx": W / 2, "cy": H / 2}


def _look_at(eye: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world at `eye` looking at the origin, world +z up."""
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], 1)
    c2w[:3, 3] = eye
    return c2w


def _ring(n: int = 16) -> list[np.ndarray]:
    return [_look_at(4.0 * np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)]))
            for a, e in zip(np.linspace(0, 2 * np.pi, n, endpoint=False), np.resize([-0.5, 0.1, 0.6], n), strict=True)]


def _sphere_mask(c2w: np.ndarray, radius: float = 0.35) -> np.ndarray:
    """[H, W] bool: the pixels whose ray meets a sphere of `radius` at the origin."""
    v, u = np.mgrid[0:H, 0:W] + 0.5
    dirs = np.stack([(u - CAMERA["cx"]) / CAMERA["fl_x"], -(v - CAMERA["cy"]) / CAMERA["fl_y"], -np.ones_like(u)], -1)
    dirs = dirs @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    distance = np.linalg.norm(np.cross(origin, dirs), axis=-1) / np.linalg.norm(dirs, axis=-1)
    return distance < radius


def test_project_puts_the_looked_at_point_at_the_principal_point():
    c2w = _look_at(np.array([3.0, 1.0, 2.0]))
    u, v, depth = project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]]), c2w, CAMERA)
    assert u[0] == pytest.approx(W / 2) and v[0] == pytest.approx(H / 2) and depth[0] == pytest.approx(np.sqrt(14))
    assert v[1] < H / 2                                     # a point above the target is higher in the image


def test_the_hull_keeps_the_object_seen_from_every_side_and_drops_what_one_view_adds_or_loses():
    """Masks of a sphere from 16 views: in 3 a lamp joins it (a disc beside it), in 2 a shadowed half drops out.
    Each view's hull mask is the sphere's silhouette (IoU > 0.85: a hull of 16 views is a little larger than the
    sphere) with neither the lamp nor the lost half."""
    poses = _ring()
    truth = [_sphere_mask(c2w) for c2w in poses]
    masks = [m.copy() for m in truth]
    lamp = np.zeros((H, W), np.uint8)
    cv2.circle(lamp, (108, 20), 10, 1, -1)
    for k in (1, 6, 11):
        masks[k] |= lamp.astype(bool)
    for k in (3, 9):
        masks[k][:, : W // 2] = False                      # the left half lost
    hull = visual_hull(masks, poses, CAMERA, RADIUS, resolution=48, keep=0.8)
    for k, c2w in enumerate(poses):
        seen = hull_mask(hull, c2w, CAMERA, H, W, RADIUS, resolution=48)
        iou = (seen & truth[k]).sum() / (seen | truth[k]).sum()
        assert iou > 0.85, (k, iou)
        assert not seen[10:30, 98:118].any()               # no lamp
    strict = visual_hull(masks, poses, CAMERA, RADIUS, resolution=48, keep=1.0)
    assert len(strict) < 0.8 * len(hull)                    # a plain intersection loses what two views lost
    with pytest.raises(DataError, match="one mask per pose"):
        visual_hull(masks[:3], poses, CAMERA, RADIUS)


def test_peeling_the_hull_takes_the_rim_beyond_the_object_off_every_silhouette():
    """A hull of 16 views is larger than the sphere: each silhouette holds a rim of pixels off the object (in a
    room, the room shows there). One layer of cells peeled off in 3D (erode = 1) keeps a subset of the cells, about
    one cell nearer the centre, and cuts that rim in every view to under half, the silhouettes still the sphere's."""
    poses = _ring()
    truth = [_sphere_mask(c2w) for c2w in poses]
    hull = visual_hull(truth, poses, CAMERA, RADIUS, resolution=48, keep=0.8)
    peeled = visual_hull(truth, poses, CAMERA, RADIUS, resolution=48, keep=0.8, erode=1)
    assert {tuple(p) for p in peeled.tolist()} < {tuple(p) for p in hull.tolist()}
    cell = 2 * RADIUS / 48
    reach = lambda points: np.linalg.norm(points, axis=1).max()     # noqa: E731
    assert reach(hull) - reach(peeled) == pytest.approx(cell, abs=0.5 * cell)
    for k, c2w in enumerate(poses):
        rim = [(hull_mask(h, c2w, CAMERA, H, W, RADIUS, resolution=48) & ~truth[k]).sum() for h in (hull, peeled)]
        seen = hull_mask(peeled, c2w, CAMERA, H, W, RADIUS, resolution=48)
        assert rim[0] > 0 and rim[1] < 0.5 * rim[0], (k, rim)
        assert (seen & truth[k]).sum() / (seen | truth[k]).sum() > 0.85, k


def test_a_capture_on_the_hull_backdrop_keeps_the_same_object_in_every_image(tmp_path):
    """mad.capture --backdrop hull: photographs of a lit sphere on a grey room with a bright lamp in some of
    them; every image keeps the sphere's silhouette at its pose and nothing of the lamp; painted Burrs outside
    the outline are kept, and a Missing bite (too small to paint on spheres this size) would show the backdrop."""
    from mad.capture import build_capture_class, painted_keep

    images = tmp_path / "cap" / "images"
    images.mkdir(parents=True)
    poses = _ring()
    frames = []
    for k, c2w in enumerate(poses):
        photo = np.full((H, W, 3), 60, np.uint8)           # the room
        photo[_sphere_mask(c2w, 0.45)] = (200, 190, 170)
        if k % 4 == 1:
            cv2.circle(photo, (112, 16), 9, (255, 255, 255), -1)   # a lamp
        cv2.imwrite(str(images / f"{k + 1:02d}.png"), photo)
        frames.append({"file_path": f"images/{k + 1:02d}.png", "transform_matrix": c2w.tolist()})
    (tmp_path / "cap" / "poses.json").write_text(json.dumps({
        **CAMERA, "w": W, "h": H, "bounds": {"object_radius": RADIUS, "near": 3.0, "far": 5.0}, "frames": frames}))
    record = build_capture_class(tmp_path / "cap", tmp_path / "toy", size=W, test_every=4, seed=0,
                                 defect_types=("Burrs", "Stains"), backdrop="hull",
                                 poses=tmp_path / "cap" / "poses.json")
    for rel, photo in {**record["train"], **record["test"]}.items():
        if not rel.startswith(("train", "test/good")):
            continue
        kept = cv2.imread(str(tmp_path / "toy" / rel)).any(-1)
        truth = _sphere_mask(poses[int(photo[:2]) - 1], 0.45)
        assert (kept & truth).sum() / (kept | truth).sum() > 0.8, rel      # a 16-view hull is a little larger
        assert not kept[7:25, 103:121].any(), rel            # no lamp
    obj, painted = _sphere_mask(poses[0]), np.zeros((H, W), bool)
    painted[40:50, 60:70] = True                                # a bite (Missing) or a sliver (Burrs) there
    assert np.array_equal(painted_keep(obj, "Missing", painted), obj & ~painted)
    assert np.array_equal(painted_keep(obj, "Burrs", painted), obj | painted)
    burrs = cv2.imread(str(tmp_path / "toy" / "test" / "Burrs" / "0.png"))
    slivers = cv2.imread(str(tmp_path / "toy" / "ground_truth" / "Burrs" / "0_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    good = cv2.imread(str(tmp_path / "toy" / "test" / "good" / "0.png"))
    outside = slivers & ~good.any(-1)
    assert outside.any() and burrs[outside].any(-1).all()
    peeled = build_capture_class(tmp_path / "cap", tmp_path / "peeled", size=W, test_every=4, seed=0,
                                 defect_types=("Stains",), backdrop="hull", poses=tmp_path / "cap" / "poses.json",
                                 hull_erode=1)
    assert peeled["hull_erode"] == 1 and record["hull_erode"] == 0
    area = lambda root, rel: cv2.imread(str(root / rel)).any(-1).sum()    # noqa: E731
    assert all(area(tmp_path / "peeled", rel) < area(tmp_path / "toy", rel) for rel in record["train"])
    with pytest.raises(DataError, match="hull_erode must be >= 0"):
        build_capture_class(tmp_path / "cap", tmp_path / "x", size=W, backdrop="hull", poses=None, hull_erode=-1)
    with pytest.raises(DataError, match="--backdrop hull needs the capture's poses"):
        build_capture_class(tmp_path / "cap", tmp_path / "x", size=W, backdrop="hull", poses=None)
    rng = np.random.default_rng(0)                          # photographs that agree on nothing: one error line
    for k in range(len(poses)):
        photo = np.full((H, W, 3), 60, np.uint8)
        cv2.circle(photo, (int(rng.integers(10, W - 10)), int(rng.integers(10, H - 10))), 8, (220, 220, 220), -1)
        cv2.imwrite(str(images / f"{k + 1:02d}.png"), photo)
    with pytest.raises(DataError, match=r"the visual hull of 16 posed photographs is empty"):
        build_capture_class(tmp_path / "cap", tmp_path / "y", size=W, backdrop="hull",
                            poses=tmp_path / "cap" / "poses.json")
