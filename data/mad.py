"""Reader for the MAD layout (PAD benchmark) and for the synthetic data in the same layout.

```
<data_root>/<class>/transforms.json           {"camera_angle_x", "frames": [{"file_path", "transform_matrix"}]}
<data_root>/<class>/train/good/<n>.png        anomaly-free views with poses
<data_root>/<class>/test/good/<n>.png         normal queries (label 0)
<data_root>/<class>/test/<Defect>/<n>.png     anomalous queries (label 1), any folder name is a defect type
<data_root>/<class>/ground_truth/<Defect>/<n>_mask.png
```
Poses are camera-to-world in the Blender/OpenGL convention (camera looks down -z, y up).
Test poses are never read here: a query arrives without a pose.

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

from common.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TRANSFORMS_FILE = "transforms.json"
GOOD = "good"


@dataclass
class TrainViews:
    images: np.ndarray      # [N,H,W,3] float32 in [0,1]
    poses: np.ndarray       # [N,4,4] float32 camera-to-world (OpenGL: camera looks down -z, y up)
    focal: float            # pixels at the loaded resolution
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


def _list_images(folder: Path) -> list[Path]:
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


def _half(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def _half_mask(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape[:2]
    return cv2.resize(mask.astype(np.uint8), (w // 2, h // 2), interpolation=cv2.INTER_NEAREST) > 0


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
    """Class folders of `data_root` (those holding a transforms.json), in natural order."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: data_root folder not found")
    names = [p.name for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(".") and (p / TRANSFORMS_FILE).is_file()]
    return sorted(names, key=natural_key)


def resolve_class_dir(data_root, class_name) -> Path:
    """`data_root/class_name`; a DataError listing the classes present when it does not exist."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: data_root folder not found")
    path = root / str(class_name)
    if not str(class_name) or not path.is_dir():
        present = list_classes(root)
        listing = ", ".join(present) if present else "none (no sub-folder with a transforms.json)"
        raise DataError(f"{path}: class {class_name!r} not found in {root}; classes present: {listing}")
    return path


# ----------------------------------------------------------------------------- train views

def _read_transforms(class_dir: Path) -> tuple[float, list[dict], Path]:
    path = class_dir / TRANSFORMS_FILE
    if not class_dir.is_dir():
        raise DataError(f"{class_dir}: class folder not found")
    if not path.is_file():
        raise DataError(f"{path}: transforms file not found")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    if "camera_angle_x" not in meta:
        raise DataError(f"{path}: missing key 'camera_angle_x'")
    angle = meta["camera_angle_x"]
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not (0.0 < float(angle) < math.pi):
        raise DataError(f"{path}: 'camera_angle_x' must be a number in (0, pi) radians, got {angle!r}")
    frames = meta.get("frames")
    if frames is None:
        raise DataError(f"{path}: missing key 'frames'")
    if not isinstance(frames, list):
        raise DataError(f"{path}: 'frames' must be a list")
    if not frames:
        raise DataError(f"{path}: 'frames' is empty (no training views)")
    return float(angle), frames, path


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


def load_train_views(class_dir, half_res: bool = False, white_bkgd: bool = True) -> TrainViews:
    """Training images (in transforms.json order) with their camera-to-world poses."""
    class_dir = Path(class_dir)
    angle, frames, tpath = _read_transforms(class_dir)
    poses = [_frame_pose(f, i, tpath) for i, f in enumerate(frames)]
    paths = [_frame_image_path(class_dir, f["file_path"], i, tpath) for i, f in enumerate(frames)]

    def load(p: Path) -> np.ndarray:
        return read_image_file(p, white_bkgd)

    images = _parallel_map(load, paths)
    h0, w0 = images[0].shape[:2]
    for p, img in zip(paths, images):
        if img.shape[:2] != (h0, w0):
            raise DataError(f"{p}: image size {img.shape[1]}x{img.shape[0]} differs from "
                            f"{w0}x{h0} of {paths[0]} (all training images must share one size)")
    if half_res:
        if h0 < 2 or w0 < 2:
            raise DataError(f"{paths[0]}: image {w0}x{h0} is too small to load at half resolution")
        images = [_half(img) for img in images]
    height, width = images[0].shape[:2]
    focal = 0.5 * width / math.tan(0.5 * angle)
    return TrainViews(
        images=np.stack(images).astype(np.float32, copy=False),
        poses=np.stack(poses).astype(np.float32),
        focal=float(focal),
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


def load_test_set(class_dir, half_res: bool = False, white_bkgd: bool = True,
                  allow_empty_masks: bool = False) -> list[TestSample]:
    """Test images without poses: 'good' first, then defect folders alphabetically; files in
    numeric order. Defect images take their mask from ground_truth/<Defect>/<stem>_mask.png.

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
        files = _list_images(folder)
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
        if half_res:
            image, mask = _half(image), _half_mask(mask)
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
