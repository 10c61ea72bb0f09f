"""The synthetic MAD-format generator: layout, determinism, masks, camera convention."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from common.camera import Intrinsics
from common.errors import DataError
from mad.loader import load_test_set, load_train_views
from mad.synth.cameras import (
    BLENDER_CAMERA_ANGLE_X,
    focal_from_angle,
    look_at_pose,
    random_pose,
    spherical_pose,
    train_poses,
)
from mad.synth.defects import DEFECT_TYPES, STAIN_COLORS, SUBTLE_DEFECTS, _make_burrs, _make_missing, _make_stain
from mad.synth.detail import (
    KIND_DETAIL,
    MAX_GREEBLES,
    MAX_SEAMS,
    SPEC_STRENGTH,
    class_scene,
    printed_albedo,
    specular,
)
from mad.synth.generate import SPLIT_CODE
from mad.synth.render import camera_dirs, render_view, render_with_buffers
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


# ---------------------------------------------------------------------------- synth_detail

# sha256 of the flat and textured outputs, computed with the generator before synth_detail existed: the
# detail mode draws from its own random stream and adds nothing to these classes. (Exact bytes: a numpy or
# BLAS build that rounds differently would also change them; regenerate them from the code before a change.
# The class hashes read PNGs by their pixels: in December 2026 the registry's packages began to write other PNG
# bytes for the same pixels, and the pre-detail generator, rerun with them, gives these same pixel hashes.)
_BEFORE_DETAIL = {
    (False, "view"): "c9514c2186d3bafbc3913782992e7faab5c0b46eb44591290d83dbf06af181a4",
    (True, "view"): "516ea517000e2e396e2ca99574702a9ba91af941d337bf7e26b62ece04cfe845",
    (False, "class"): "69482a59b9f7af27a65eada58d51b5de532c380aef16dad294350ecf744ad13d",
    (True, "class"): "a0f7866e53a163b183dd2a3c57003a57d3a08c39d863cc957f7f2e8d488aea6e",
}


def _sha256_files(root) -> str:
    """Hash of a class's content: PNGs by their decoded pixels (an encoder's bytes change with the Pillow or zlib
    release, the pixels do not), every other file by its bytes."""
    h = hashlib.sha256()
    for name, data in _files(root).items():
        h.update(name.encode())
        if name.endswith(".png"):
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            h.update(str(pixels.shape).encode())
            data = pixels.tobytes()
        h.update(data)
    return h.hexdigest()


def test_flat_and_textured_output_unchanged_by_detail_mode(tmp_path):
    for textured in (False, True):
        scene = make_scene(0, textured=textured)
        assert scene.detail_seed is None and not (scene.kind == KIND_DETAIL).any()
        pose = train_poses(3, 4.0, seed=0)[1]
        image = render_view(scene, pose, 32, 32, focal_from_angle(32, BLENDER_CAMERA_ANGLE_X), 2)
        assert hashlib.sha256(image.tobytes()).hexdigest() == _BEFORE_DETAIL[textured, "view"], textured
        root = generate_tiny(tmp_path / f"synthetic_{textured}", textured=textured, size=48)
        assert _sha256_files(root) == _BEFORE_DETAIL[textured, "class"], textured
        assert "detail" not in json.loads((root / "synth_stats.json").read_text())


def test_detail_scene_is_seeded_keeps_the_bricks_and_differs_from_flat():
    flat, a, b = make_scene(TINY_SEED), class_scene(TINY_SEED, detail=True), class_scene(TINY_SEED, detail=True)
    for name in ("lo", "hi", "color", "brick", "kind"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(getattr(a, name)[:flat.n_boxes], getattr(flat, name))  # same bricks first
    assert a.removable == flat.removable and a.detail_seed == TINY_SEED
    parts = a.kind == KIND_DETAIL
    assert parts[flat.n_boxes:].all() and 150 <= parts.sum() <= MAX_GREEBLES + MAX_SEAMS
    size = (a.hi - a.lo)[parts]
    assert np.median(size.max(1)) < 0.06 and np.median(size.min(1)) < 0.02  # small parts and thin seams
    assert np.linalg.norm(np.concatenate([a.lo, a.hi]), axis=1).max() <= 1.0
    other = class_scene(TINY_SEED + 1, detail=True)
    assert not np.array_equal(other.lo[other.kind == KIND_DETAIL][:50], a.lo[parts][:50])
    pose = train_poses(3, 4.0, seed=TINY_SEED)[0]
    focal = focal_from_angle(128, BLENDER_CAMERA_ANGLE_X)
    img_a, img_b = (render_view(s, pose, 128, 128, focal, 2) for s in (a, b))
    np.testing.assert_array_equal(img_a, img_b)
    img_flat = render_view(flat, pose, 128, 128, focal, 2)
    on_object = (img_flat < 255).any(-1)
    assert (np.abs(img_a.astype(int) - img_flat.astype(int)).max(-1) > 8)[on_object].mean() > 0.15
    gray = cv2.cvtColor(img_a, cv2.COLOR_RGB2GRAY)
    assert ((gray < 30) & (img_flat.max(-1) > 60)).sum() > 25  # near-black seams and prints on coloured bricks


def test_detail_parts_are_never_missing_and_never_burrs():
    flat, scene = make_scene(TINY_SEED), class_scene(TINY_SEED, detail=True)
    parts = scene.kind == KIND_DETAIL
    assert KIND_DETAIL != 2 and not (scene.kind == 2).any()
    bodies = scene.brick[scene.kind == 0]
    assert set(scene.brick[parts]) <= set(bodies)  # each part sits on a brick and has no id of its own
    assert scene.removable == flat.removable and set(scene.removable) <= set(bodies)
    for b in scene.removable:  # 'Missing' removes a whole brick; parts only with the brick they sit on
        gone = scene.without_brick(b)
        assert (gone.kind == 0).sum() == (scene.kind == 0).sum() - 1
        np.testing.assert_array_equal(gone.lo[gone.kind == KIND_DETAIL], scene.lo[parts & (scene.brick != b)])
    focal = focal_from_angle(48, BLENDER_CAMERA_ANGLE_X)
    for k in range(6):
        rng = np.random.default_rng(k)
        _, buf = render_with_buffers(scene, random_pose(rng, 4.0), 48, 48, focal, 2)
        missing = _make_missing(rng, scene, buf, 1)
        if missing is not None:
            assert (missing.kind == 0).sum() == (scene.kind == 0).sum() - 1
        burrs = _make_burrs(rng, scene, buf, SUBTLE_DEFECTS)
        if burrs is not None:  # burrs stay the only kind 2 boxes, and they are new
            assert (burrs.kind[:scene.n_boxes] == scene.kind).all() and (burrs.kind[scene.n_boxes:] == 2).all()
        assert not parts[buf.box[buf.box >= 0]].all()


def _assert_masks_are_the_changed_pixels(root, scene, size: int) -> list:
    """Every test image of the generated class at `root` against the clean render of `scene` at its pose: a good
    image unchanged, a defect image changed exactly inside its non-empty mask, every defect type seen. Returns
    (defect, mask, the clean render's hit buffers) of each defect image, for checks of where the defects lie."""
    focal = focal_from_angle(size, BLENDER_CAMERA_ANGLE_X)
    defects = []
    for frame in json.loads((root / "test_poses.json").read_text())["frames"]:
        defect = frame["file_path"].split("/")[1]
        image = _rgb(root / frame["file_path"]).astype(int)
        normal, buffers = render_with_buffers(scene, np.array(frame["transform_matrix"]), size, size, focal,
                                              TINY_SUPERSAMPLE)
        changed = np.abs(image - normal.astype(int)).max(-1) > 1
        if defect == "good":
            assert not changed.any()
            continue
        stem = frame["file_path"].split("/")[-1][:-4]
        mask = cv2.imread(str(root / "ground_truth" / defect / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        assert mask.any()
        np.testing.assert_array_equal(mask, changed)
        defects.append((defect, mask, buffers))
    assert {d for d, _, _ in defects} == set(DEFECT_TYPES)
    return defects


def test_detail_class_masks_cover_the_defects(tmp_path):
    """Detail mode: every defect image has a non-empty mask and differs from the clean render at its pose
    exactly inside it (prints and highlights are the same in both renders, parts are never a defect)."""
    root = generate_tiny(tmp_path / "synthetic", detail=True, size=48)
    stats = json.loads((root / "synth_stats.json").read_text())
    assert stats["detail"] is True and stats["defect_style"] == "subtle"
    _assert_masks_are_the_changed_pixels(root, class_scene(TINY_SEED, detail=True), 48)
    again = generate_tiny(tmp_path / "again", detail=True, size=48)
    assert _files(again) == _files(root)
    both = generate_tiny(tmp_path / "both", detail=True, textured=True, size=48)
    stats = json.loads((both / "synth_stats.json").read_text())
    assert stats["detail"] is True and stats["textured"] is True
    assert _files(both) != _files(root)


def _changed_surface(scene, bad, c2w, size, focal, s):
    """Pixels where some sub-sample sees another surface in `bad` than in `scene` (another box, compared by
    its geometry since box indices shift when a brick is removed) or a decal of `bad`."""
    _, before = render_with_buffers(scene, c2w, size, size, focal, s)
    _, after = render_with_buffers(bad, c2w, size, size, focal, s)

    def surface(sc, buf):
        box = np.maximum(buf.box, 0)
        return np.concatenate([sc.lo[box], sc.hi[box], (buf.box < 0)[..., None], buf.axis[..., None]], -1)

    changed = (surface(scene, before) != surface(bad, after)).any(-1)
    for dec in bad.decals:
        changed |= (after.box == dec.box) & (after.axis == dec.axis) & (after.sign == dec.sign)
    return changed.reshape(size, s, size, s).any((1, 3))


def test_detail_defect_masks_lie_on_the_defect():
    """In detail mode a defect view differs from the clean render only where the defect changed the surface
    (the prints, parts and highlight of the rest of the object are the same in both renders), and it
    differs there: the masks cover exactly the defects."""
    scene = class_scene(TINY_SEED, detail=True)
    size, s = 64, 2
    focal = focal_from_angle(size, BLENDER_CAMERA_ANGLE_X)
    makers = {"Burrs": lambda rng, sc, buf: _make_burrs(rng, sc, buf, SUBTLE_DEFECTS),
              "Stains": lambda rng, sc, buf: _make_stain(rng, sc, buf, SUBTLE_DEFECTS),
              "Missing": lambda rng, sc, buf: _make_missing(rng, sc, buf, 4 * s * s)}
    for defect, make in makers.items():
        shown = 0
        for k in range(8):
            rng = np.random.default_rng([k, SPLIT_CODE[defect]])
            c2w = random_pose(rng, 4.0)
            normal, buf = render_with_buffers(scene, c2w, size, size, focal, s)
            bad = make(rng, scene, buf)
            if bad is None:
                continue
            mask = np.abs(render_view(bad, c2w, size, size, focal, s).astype(int) - normal.astype(int)).max(-1) > 1
            assert not (mask & ~_changed_surface(scene, bad, c2w, size, focal, s)).any(), (defect, k)
            if defect != "Missing":
                assert (bad.kind == KIND_DETAIL).sum() == (scene.kind == KIND_DETAIL).sum()
            shown += int(mask.any())
        assert shown >= 4, defect


def _one_box_scene(detail_seed):
    return Scene(lo=np.array([[-0.5, -0.5, -0.4]]), hi=np.array([[0.5, 0.5, 0.0]]), color=np.array([[0.5, 0.5, 0.5]]),
                 brick=np.array([0]), kind=np.array([0]), removable=(0,), detail_seed=detail_seed)


def test_specular_highlight_depends_on_the_view_in_detail_mode_only():
    """The same point of a top face seen from the mirror direction of the key light (highlight) and from
    the light's own side (none): the colour differs in detail mode only; the flat mode is diffuse."""
    point = np.array([0.1, -0.05, 0.0])
    light = np.array([0.35, -0.55, 0.76]) / np.linalg.norm([0.35, -0.55, 0.76])  # render's key light
    mirror = np.array([-light[0], -light[1], light[2]])
    views = [look_at_pose(point + 4.0 * v, target=point) for v in (mirror, light)]
    colours = {}
    for seed in (None, 3):
        scene = _one_box_scene(seed)
        colours[seed] = [render_view(scene, c2w, 9, 9, 20.0)[4, 4].astype(int) for c2w in views]
    np.testing.assert_array_equal(colours[None][0], colours[None][1])
    highlight, plain = colours[3]
    assert (highlight - plain).min() > 60  # white: every channel brighter
    np.testing.assert_array_equal(plain, colours[None][1])  # away from the highlight: the diffuse colour
    assert specular(np.array([-mirror]), np.array([2]), np.array([1]), [light])[0] == pytest.approx(SPEC_STRENGTH)


def test_printed_marks_are_a_function_of_the_surface_point():
    rng = np.random.default_rng(0)
    n = 20000
    brick = rng.integers(0, 12, n)
    axis, sign = rng.integers(0, 3, n), rng.choice([-1, 1], n)
    lo = np.repeat(np.array([[-0.3, -0.2, -0.25]]), n, 0)
    hi = lo + 0.5
    points = rng.uniform(lo, hi)
    albedo = PALETTE[brick % len(PALETTE)]
    a = printed_albedo(albedo, points, axis, sign, brick, lo, hi, 5)
    perm = rng.permutation(n)
    np.testing.assert_array_equal(a[perm], printed_albedo(albedo[perm], points[perm], axis[perm], sign[perm],
                                                          brick[perm], lo[perm], hi[perm], 5))
    along = points.copy()
    along[np.arange(n), axis] += 0.1
    np.testing.assert_array_equal(a, printed_albedo(albedo, along, axis, sign, brick, lo, hi, 5))
    inked = np.abs(a - albedo).max(1) > 0
    assert 0.05 < inked.mean() < 0.6
    assert (a[inked].max(1) < 0.1).any() and (a[inked].min(1) > 0.9).any()  # black and white ink
    assert not np.array_equal(a, printed_albedo(albedo, points, axis, sign, brick, lo, hi, 6))


def test_batched_raycast_of_detail_parts_matches_the_box_loop():
    """The detail parts are cast together (render._raycast_batched); the per-box loop gives the same hits."""
    scene = class_scene(TINY_SEED, detail=True)
    looped = replace(scene, kind=np.where(scene.kind == KIND_DETAIL, 9, scene.kind))  # 9: not batched
    focal = focal_from_angle(96, BLENDER_CAMERA_ANGLE_X)
    for c2w in train_poses(3, 4.0, seed=TINY_SEED):
        _, a = render_with_buffers(scene, c2w, 96, 96, focal, 2)
        _, b = render_with_buffers(looped, c2w, 96, 96, focal, 2)
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.t, b.t)
        np.testing.assert_array_equal(a.axis, b.axis)
        assert (scene.kind[a.box[a.box >= 0]] == KIND_DETAIL).mean() > 0.02


def test_subtle_defects_are_smaller_and_of_the_parts_own_colour():
    """The detail classes' style (SUBTLE_DEFECTS): a burr is the brick's colour x 0.85 (the default's x 0.55) and
    stands at most 0.12 out of its face; a stain is half-way between the face's colour and the stain colour."""
    scene = class_scene(TINY_SEED, detail=True)
    size, s = 64, 1
    focal = focal_from_angle(size, BLENDER_CAMERA_ANGLE_X)
    burrs = stains = 0
    for k in range(6):
        rng = np.random.default_rng([k, 7])
        _, buf = render_with_buffers(scene, random_pose(rng, 4.0), size, size, focal, s)
        bad = _make_burrs(rng, scene, buf, SUBTLE_DEFECTS)
        if bad is not None:
            new = bad.kind == 2
            length = (bad.hi[new] - bad.lo[new]).max(axis=1)
            assert 1 <= new.sum() <= 3 and (length <= 0.12 + 1e-9).all()
            assert any(np.allclose(bad.color[new][0], scene.color[b] * 0.85) for b in np.flatnonzero(scene.kind == 0))
            burrs += 1
        stained = _make_stain(rng, scene, buf, SUBTLE_DEFECTS)
        if stained is not None:
            decal = stained.decals[-1]
            stain = 2.0 * decal.color - scene.color[decal.box]          # undo the half-way mix
            assert any(np.allclose(stain, c) for c in STAIN_COLORS), k
            assert decal.radii.max() <= 0.1 + 1e-9
            stains += 1
    assert burrs >= 3 and stains >= 3


def test_a_multi_object_scene_holds_its_objects_apart_on_the_ground_inside_the_unit_sphere():
    from mad.synth.multi import KIND_GROUND, make_multi_scene

    for n in (2, 4, 6):
        a = make_multi_scene(3, n)
        np.testing.assert_array_equal(a.lo, make_multi_scene(3, n).lo)
        corners = np.stack([a.lo, a.hi], 1)
        assert np.sqrt((np.abs(corners).max(1) ** 2).sum(-1)).max() == pytest.approx(0.98)
        ground = np.flatnonzero(a.kind == KIND_GROUND)
        assert len(ground) == 3 and not set(a.brick[ground].tolist()) & set(a.removable)
        assert len({tuple(c) for c in a.color[ground]}) == 2                   # a patch of another colour
        objects = np.flatnonzero(a.kind != KIND_GROUND)
        assert a.lo[objects, 2].min() == pytest.approx(a.hi[ground, 2].max())  # they stand on the slab
        assert (a.lo[objects, :2] >= a.lo[ground, :2].min(0)).all()
        assert (a.hi[objects, :2] <= a.hi[ground, :2].max(0)).all()
        # boxes whose footprints touch belong to one object: exactly n groups, none touching another
        lo, hi = a.lo[objects, :2], a.hi[objects, :2]
        touch = ((lo[:, None] <= hi[None] + 1e-9) & (lo[None] <= hi[:, None] + 1e-9)).all(-1)
        from scipy.sparse.csgraph import connected_components

        assert connected_components(touch, directed=False)[0] == n
        assert len(a.removable) >= n
    one, other = make_multi_scene(3, 4), make_multi_scene(4, 4)
    assert one.n_boxes != other.n_boxes or not np.array_equal(one.lo, other.lo)
    with pytest.raises(ValueError, match=r"2\.\.6"):
        make_multi_scene(0, 1)


def test_scene_class_masks_cover_exactly_the_defects_which_lie_on_the_objects(tmp_path):
    """A generated scene class: every defect image differs from the clean render at its pose exactly inside its
    mask, good images not at all, and no defect pixel lies on the ground slab."""
    from mad.synth.multi import KIND_GROUND

    root = generate_tiny(tmp_path / "synthetic", objects=3, size=48, radius=3.2, elev_min=15.0, elev_max=70.0)
    stats = json.loads((root / "synth_stats.json").read_text())
    assert stats["objects"] == 3
    scene = class_scene(TINY_SEED, objects=3)
    for defect, mask, buffers in _assert_masks_are_the_changed_pixels(root, scene, 48):
        if defect == "Stains":                                      # a stain is painted on what the camera sees
            seen = buffers.box.reshape(48, TINY_SUPERSAMPLE, 48, TINY_SUPERSAMPLE)
            on_ground = np.isin(seen, np.flatnonzero(scene.kind == KIND_GROUND)).all((1, 3))
            assert not (mask & on_ground).any()
