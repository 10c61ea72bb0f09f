"""Reader for the MAD layout (PAD benchmark) and for the synthetic data in the same layout.

```
<data_root>/<class>/transforms.json         {"camera_angle_x" (or "fl_x", ...), "frames": [{"file_path", ...}]}
<data_root>/<class>/train/good/<n>.png      anomaly-free views with poses
<data_root>/<class>/test/good/<n>.png       normal queries (label 0)
<data_root>/<class>/test/<Defect>/<n>.png   anomalous queries (label 1), any folder name is a defect type
<data_root>/<class>/ground_truth/<Defect>/<n>_mask.png
```
Poses are camera-to-world in the Blender/OpenGL convention (camera looks down -z, y up).
Test poses are never read here: a query arrives without a pose.

Intrinsics (one camera shared by all views): either `camera_angle_x` (Blender / NeRF-synthetic: square
pixels, principal point at the centre) or the instant-ngp / nerfstudio keys `fl_x`, `fl_y`, `cx`, `cy`,
`w`, `h` (what `python -m data.colmap_poses` writes; `fl_x` wins when both are present). Intrinsics
given for another resolution (`w`, `h`) are scaled to the images' size when the aspect ratio agrees.

`downscale = k` resamples every image by 1/k: the last W mod k columns and H mod k rows are dropped,
then each k x k block is averaged (area resampling) for images and OR-ed for masks, so a defect pixel
is never lost and masks stay aligned with their images; the intrinsics are divided by k.

Every problem with the files raises `DataError` with one line naming the file and the problem.
"""
from __future__ import annotations

import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from common.camera import Intrinsics
from common.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TRANSFORMS_FILE = "transforms.json"
GOOD = "good"


@dataclass
class TrainViews:
    images: np.ndarray      # [N,H,W,3] float32 in [0,1]
    poses: np.ndarray       # [N,4,4] float32 camera-to-world (OpenGL: camera looks down -z, y up)
    intrinsics: Intrinsics  # pixels at the loaded resolution
    height: int
    width: int
    paths: list[Path] = field(default_factory=list)


@dataclass
class TestSample:
    __test__ = False        # not a pytest test class despite the name

    name: str               # "<defect_type>/<stem>", e.g. "good/3", "Burrs/12"
    path: Path
    image: np.ndarray       # [H,W,3] float32 in [0,1]
    label: int              # 0 good, 1 defect
    defect_type: str        # "good" or the defect folder name
    mask: np.ndarray        # [H,W] bool, all False for good


# ----------------------------------------------------------------------------- helpers

def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically: '2.png' < '10.png'."""
    parts = re.split(r"(\d+)", name)
    chunks = tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts if p != "")
    return chunks, name  # the name breaks ties such as '01' vs '1'; a chunk prefix sorts first


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _imread(path: Path, what: str) -> np.ndarray:
    """cv2.imread with its failures turned into one DataError line naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise DataError(f"{path}: cannot decode {what} (corrupt or not an image)")
    return raw


def read_image_file(path: Path, white_bkgd: bool = True) -> np.ndarray:
    """Read an image as float32 RGB [H,W,3] in [0,1]. RGBA is composited on white when
    `white_bkgd`, otherwise its alpha is dropped; grayscale is expanded to 3 channels."""
    path = Path(path)
    raw = _imread(path, "image")
    img = _to_unit_float(raw, path)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = np.repeat(img, 3, axis=2)
        elif channels == 2:  # gray + alpha
            gray, alpha = img[:, :, :1], img[:, :, 1:2]
            img = np.repeat(gray * alpha + (1.0 - alpha) if white_bkgd else gray, 3, axis=2)
        elif channels == 3:
            img = img[:, :, ::-1]  # BGR -> RGB
        elif channels == 4:
            rgb, alpha = img[:, :, 2::-1], img[:, :, 3:4]
            img = rgb * alpha + (1.0 - alpha) if white_bkgd else rgb
        else:
            raise DataError(f"{path}: unsupported number of channels ({channels})")
    else:
        raise DataError(f"{path}: unsupported image shape {raw.shape}")
    return np.ascontiguousarray(img, dtype=np.float32)


def read_mask_file(path: Path) -> np.ndarray:
    """Read a binary mask (0/1 or 0/255, grayscale or colour) as bool [H,W] (any channel > 0)."""
    path = Path(path)
    raw = _imread(path, "mask")
    if raw.ndim == 3:
        if raw.shape[2] in (2, 4):  # ignore alpha
            raw = raw[:, :, :-1]
        raw = raw.max(axis=2)
    elif raw.ndim != 2:
        raise DataError(f"{path}: unsupported mask shape {raw.shape}")
    return raw > 0


def _to_unit_float(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / 65535.0
    if raw.dtype in (np.float32, np.float64):
        return np.clip(raw.astype(np.float32), 0.0, 1.0)
    raise DataError(f"{path}: unsupported pixel type {raw.dtype}")


def downscale_image(img: np.ndarray, factor: int) -> np.ndarray:
    """Area resampling by 1/factor: crop to a multiple of `factor`, average each factor x factor block."""
    if factor == 1:
        return img
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    return cv2.resize(img[:h, :w], (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def downscale_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """A block of the downscaled mask is defective when any of its factor x factor pixels is (same crop
    as downscale_image, so image and mask stay aligned; no defect vanishes)."""
    if factor == 1:
        return mask
    h, w = mask.shape[0] // factor, mask.shape[1] // factor
    return mask[:h * factor, :w * factor].reshape(h, factor, w, factor).any(axis=(1, 3))


def _check_downscale(factor: int, width: int, height: int, path: Path) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise DataError(f"downscale must be an integer >= 1, got {factor!r}")
    if width < factor or height < factor:
        raise DataError(f"{path}: image {width}x{height} is too small to load at 1/{factor} resolution")


def _parallel_map(fn, items: Sequence) -> list:
    """Ordered map over a few threads (cv2 decoding releases the GIL). Every item is tried: the
    DataErrors of all failing items are raised together, one line each."""
    results, problems = _map_collecting(fn, items)
    raise_problems(problems)
    return results


def _map_collecting(fn, items: Sequence) -> tuple[list, list[str]]:
    """(results, problems): `fn` over every item in a few threads; a failing item gives None and its line."""

    def attempt(item):
        try:
            return fn(item), None
        except DataError as err:
            return None, str(err)

    items = list(items)
    workers = min(8, os.cpu_count() or 1, len(items))
    if workers <= 1:
        outcomes = [attempt(x) for x in items]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(attempt, items))
    return [result for result, _ in outcomes], [problem for _, problem in outcomes if problem]


def raise_problems(problems: Sequence[str]) -> None:
    """One DataError listing every problem (one line each), if there is any."""
    if problems:
        raise DataError("\n".join(problems))


# ----------------------------------------------------------------------------- classes

def list_classes(data_root) -> list[str]:
    """Class folders of `data_root` (those holding a transforms.json or train/good), in natural order.
    A class without poses is listed: loading it says how to recover them (data.colmap_poses)."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: data_root folder not found")
    names = [p.name for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(".")
             and ((p / TRANSFORMS_FILE).is_file() or (p / "train" / GOOD).is_dir())]
    return sorted(names, key=natural_key)


def resolve_class_dir(data_root, class_name) -> Path:
    """`data_root/class_name`; a DataError listing the classes present when it does not exist."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: data_root folder not found")
    path = root / str(class_name)
    if not str(class_name) or not path.is_dir():
        present = list_classes(root)
        listing = ", ".join(present) if present else "none (no sub-folder with a transforms.json or train/good)"
        raise DataError(f"{path}: class {class_name!r} not found in {root}; classes present: {listing}")
    return path


# ----------------------------------------------------------------------------- train views

def _read_transforms(class_dir: Path) -> tuple[dict, list[dict], Path]:
    path = class_dir / TRANSFORMS_FILE
    if not class_dir.is_dir():
        raise DataError(f"{class_dir}: class folder not found")
    if not path.is_file():
        if (class_dir / "train" / GOOD).is_dir():
            raise DataError(f"{path}: transforms file not found; the training views have no poses: recover them "
                            f"by structure-from-motion with `python -m data.colmap_poses --class_dir {class_dir}`")
        raise DataError(f"{path}: transforms file not found")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    if "camera_angle_x" not in meta and "fl_x" not in meta:
        raise DataError(f"{path}: missing key 'camera_angle_x' (or the intrinsics 'fl_x', 'fl_y', 'cx', 'cy')")
    frames = meta.get("frames")
    if frames is None:
        raise DataError(f"{path}: missing key 'frames'")
    if not isinstance(frames, list):
        raise DataError(f"{path}: 'frames' must be a list")
    if not frames:
        raise DataError(f"{path}: 'frames' is empty (no training views)")
    return meta, frames, path


INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def _number(meta: dict, key: str, path: Path, positive: bool = True) -> float:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and value <= 0):
        raise DataError(f"{path}: {key!r} must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def read_intrinsics(meta: dict, path: Path, width: int, height: int) -> Intrinsics:
    """The shared camera of a transforms.json for images of width x height pixels: fl_x [, fl_y, cx, cy]
    (cx, cy default to the centre, fl_y to fl_x) or camera_angle_x [, camera_angle_y]."""
    for key in DISTORTION_KEYS:
        if key in meta and meta[key] != 0:
            raise DataError(f"{path}: lens distortion {key}={meta[key]!r} is not supported; undistort the "
                            "images first (e.g. COLMAP's image_undistorter) and use a pinhole camera")
    for index, frame in enumerate(meta["frames"]):
        per_frame = [k for k in INTRINSIC_KEYS + ("camera_angle_x",) if isinstance(frame, dict) and k in frame
                     and frame[k] != meta.get(k)]
        if per_frame:
            raise DataError(f"{path}: frame {index} has its own {per_frame[0]!r}; one camera shared by all views "
                            "is supported (put the intrinsics at the top level)")
    if "fl_x" in meta:
        fx = _number(meta, "fl_x", path)
        fy = _number(meta, "fl_y", path) if "fl_y" in meta else fx
        scale_x = scale_y = 1.0
        if "w" in meta or "h" in meta:
            if not ("w" in meta and "h" in meta):
                raise DataError(f"{path}: give both 'w' and 'h' (the size the intrinsics refer to) or neither")
            w0, h0 = _number(meta, "w", path), _number(meta, "h", path)
            scale_x, scale_y = width / w0, height / h0
            if abs(scale_x - scale_y) > 1e-3 * max(scale_x, scale_y):
                raise DataError(f"{path}: intrinsics are for {w0:g}x{h0:g} images but the images are "
                                f"{width}x{height} (a different aspect ratio)")
        cx = _number(meta, "cx", path, positive=False) * scale_x if "cx" in meta else 0.5 * width
        cy = _number(meta, "cy", path, positive=False) * scale_y if "cy" in meta else 0.5 * height
        return Intrinsics(fx * scale_x, fy * scale_y, cx, cy)
    angle = meta["camera_angle_x"]
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not (0.0 < float(angle) < math.pi):
        raise DataError(f"{path}: 'camera_angle_x' must be a number in (0, pi) radians, got {angle!r}")
    fx = 0.5 * width / math.tan(0.5 * angle)
    fy = fx
    if "camera_angle_y" in meta:
        angle_y = meta["camera_angle_y"]
        if isinstance(angle_y, bool) or not isinstance(angle_y, (int, float)) or not (0.0 < angle_y < math.pi):
            raise DataError(f"{path}: 'camera_angle_y' must be a number in (0, pi) radians, got {angle_y!r}")
        fy = 0.5 * height / math.tan(0.5 * angle_y)
    return Intrinsics(fx, fy, 0.5 * width, 0.5 * height)


def _frame_pose(frame, index: int, path: Path) -> np.ndarray:
    where = f"{path}: frame {index}"
    if not isinstance(frame, dict):
        raise DataError(f"{where} is not an object")
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise DataError(f"{where} lacks key {key!r}")
    if not isinstance(frame["file_path"], str) or not frame["file_path"]:
        raise DataError(f"{where}: 'file_path' must be a non-empty string")
    try:
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'transform_matrix' is not a numeric 4x4 matrix") from None
    if pose.shape != (4, 4):
        raise DataError(f"{where}: 'transform_matrix' has shape {pose.shape}, expected (4, 4)")
    if not np.all(np.isfinite(pose)):
        raise DataError(f"{where}: 'transform_matrix' contains non-finite values")
    return pose


def _frame_image_path(class_dir: Path, file_path: str, index: int, transforms: Path) -> Path:
    rel = file_path.replace("\\", "/")
    candidate = class_dir / rel
    if candidate.is_file():
        return candidate
    if candidate.suffix.lower() not in IMAGE_EXTENSIONS:  # NeRF blender style: no extension
        for ext in (".png", ".PNG"):
            with_ext = candidate.with_name(candidate.name + ext)
            if with_ext.is_file():
                return with_ext
    raise DataError(f"{candidate}: image referenced by frame {index} of {transforms} not found")


def load_train_views(class_dir, downscale: int = 1, white_bkgd: bool = True) -> TrainViews:
    """Training images (in transforms.json order) with their camera-to-world poses, at 1/downscale."""
    class_dir = Path(class_dir)
    meta, frames, tpath = _read_transforms(class_dir)
    poses = [_frame_pose(f, i, tpath) for i, f in enumerate(frames)]
    paths = [_frame_image_path(class_dir, f["file_path"], i, tpath) for i, f in enumerate(frames)]

    first = read_image_file(paths[0], white_bkgd)
    h0, w0 = first.shape[:2]
    intrinsics = read_intrinsics(meta, tpath, w0, h0)  # bad intrinsics stop us before the other images load
    _check_downscale(downscale, w0, h0, paths[0])

    def load(p: Path) -> np.ndarray:  # downscaled as it is read: full-size photos never pile up in memory
        img = first if p == paths[0] else read_image_file(p, white_bkgd)
        if img.shape[:2] != (h0, w0):
            raise DataError(f"{p}: image size {img.shape[1]}x{img.shape[0]} differs from "
                            f"{w0}x{h0} of {paths[0]} (all training images must share one size)")
        return downscale_image(img, downscale)

    images = _parallel_map(load, paths)
    height, width = images[0].shape[:2]
    return TrainViews(
        images=np.stack(images).astype(np.float32, copy=False),
        poses=np.stack(poses).astype(np.float32),
        intrinsics=intrinsics.downscaled(downscale),
        height=int(height),
        width=int(width),
        paths=paths,
    )


# ----------------------------------------------------------------------------- test set

def _mask_path(class_dir: Path, defect: str, image_path: Path) -> Path:
    folder = class_dir / "ground_truth" / defect
    stem = image_path.stem
    for name in (f"{stem}_mask.png", f"{stem}.png", f"{stem}_mask{image_path.suffix}"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{image_path}: defect image has no mask (expected {folder / (stem + '_mask.png')})")


def load_test_set(class_dir, downscale: int = 1, white_bkgd: bool = True,
                  allow_empty_masks: bool = False) -> list[TestSample]:
    """Test images without poses (at 1/downscale): 'good' first, then defect folders alphabetically; files
    in numeric order. Defect images take their mask from ground_truth/<Defect>/<stem>_mask.png.

    Every problem (missing or unreadable image or mask, a mask of another size, an all-zero mask on a
    defect image unless `allow_empty_masks`, test images of different sizes) is reported together."""
    class_dir = Path(class_dir)
    if not class_dir.is_dir():
        raise DataError(f"{class_dir}: class folder not found")
    test_dir = class_dir / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: test folder not found")
    folders = [p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    folders.sort(key=lambda p: (p.name != GOOD, p.name))
    if not folders:
        raise DataError(f"{test_dir}: test folder has no sub-folders (expected good/ and defect folders)")

    jobs: list[tuple[str, Path, Path | None]] = []
    problems = []
    for folder in folders:
        files = list_images(folder)
        if not files:
            problems.append(f"{folder}: test folder contains no images")
        for f in files:
            try:
                mask = None if folder.name == GOOD else _mask_path(class_dir, folder.name, f)
            except DataError as err:
                problems.append(str(err))
                continue
            jobs.append((folder.name, f, mask))

    def load(job):
        defect, image_path, mask_path = job
        image = read_image_file(image_path, white_bkgd)
        if mask_path is None:
            mask = np.zeros(image.shape[:2], dtype=bool)
        else:
            mask = read_mask_file(mask_path)
            if mask.shape != image.shape[:2]:
                raise DataError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                                f"its image {image_path} ({image.shape[1]}x{image.shape[0]})")
            if not mask.any() and not allow_empty_masks:
                raise DataError(f"{mask_path}: mask of the defect image {image_path} is all zero (its defect "
                                "would be scored as normal); fix the mask, or pass --allow_empty_masks true")
        _check_downscale(downscale, image.shape[1], image.shape[0], image_path)
        image, mask = downscale_image(image, downscale), downscale_mask(mask, downscale)
        return TestSample(
            name=f"{defect}/{image_path.stem}",
            path=image_path,
            image=np.ascontiguousarray(image, dtype=np.float32),
            label=0 if defect == GOOD else 1,
            defect_type=defect,
            mask=mask,
        )

    loaded, load_problems = _map_collecting(load, jobs)
    samples = [s for s in loaded if s is not None]
    problems += load_problems
    if samples:
        h0, w0 = samples[0].image.shape[:2]
        problems += [f"{s.path}: image size {s.image.shape[1]}x{s.image.shape[0]} differs from {w0}x{h0} of "
                     f"{samples[0].path} (all test images must share one size)"
                     for s in samples if s.image.shape[:2] != (h0, w0)]
    raise_problems(problems)
    return samples
