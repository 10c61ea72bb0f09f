"""transforms.json: the shared camera's intrinsics and each training frame's pose and image path.

Intrinsics: either `camera_angle_x` (Blender / NeRF-synthetic: square pixels, principal point at the
centre) or the instant-ngp / nerfstudio keys `fl_x`, `fl_y`, `cx`, `cy`, `w`, `h` (what
`python -m mad.colmap_poses` writes; `fl_x` wins when both are present). Intrinsics given for another
resolution (`w`, `h`) are scaled to the images' size when the aspect ratio agrees. Poses are
camera-to-world in the Blender/OpenGL convention (camera looks down -z, y up).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from common.camera import Intrinsics
from common.errors import DataError
from mad.layout import GOOD, IMAGE_EXTENSIONS, TRANSFORMS_FILE

# How far a pose's rotation block may be from orthonormal with determinant +1 (poses written with 6-7 digits, as
# Blender and COLMAP exports are, stay within 1e-5).
ROTATION_TOLERANCE = 1e-3

def read_transforms(class_dir: Path) -> tuple[dict, list[dict], Path]:
    path = class_dir / TRANSFORMS_FILE
    if not class_dir.is_dir():
        raise DataError(f"{class_dir}: class folder not found")
    if not path.is_file():
        if (class_dir / "train" / GOOD).is_dir():
            raise DataError(f"{path}: transforms file not found; the training views have no poses: recover them "
                            f"by structure-from-motion with `python -m mad.colmap_poses --class_dir {class_dir}`")
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
RADIAL_KEYS = ("k1", "k2")                 # what mad.undistort undoes
DISTORTION_KEYS = (*RADIAL_KEYS, "k3", "k4", "p1", "p2")


def scaled_camera(camera: dict, width: int, height: int) -> dict:
    """A camera (fl_x, fl_y, cx, cy for w x h images) for width x height images, each axis scaled by its own ratio,
    so that a rounded image size keeps the principal point and the focal lengths exact."""
    sx, sy = width / camera["w"], height / camera["h"]
    return {"fl_x": camera["fl_x"] * sx, "fl_y": camera["fl_y"] * sy, "cx": camera["cx"] * sx,
            "cy": camera["cy"] * sy, "w": width, "h": height}


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
            how = (f"python -m mad.undistort --class_dir {path.parent} writes the class undistorted (a new folder)"
                   if key in RADIAL_KEYS else "undistort them with COLMAP's image_undistorter")
            raise DataError(f"{path}: lens distortion {key}={meta[key]!r}: the images must be pinhole images "
                            f"first; {how}")
    for index, frame in enumerate(meta["frames"]):
        per_frame = [k for k in (*INTRINSIC_KEYS, "camera_angle_x") if isinstance(frame, dict) and k in frame
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


def frame_pose(frame, index: int, path: Path) -> np.ndarray:
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
    rotation = pose[:3, :3]
    off = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    det = float(np.linalg.det(rotation))
    if off > ROTATION_TOLERANCE or abs(det - 1.0) > ROTATION_TOLERANCE:
        raise DataError(f"{where}: 'transform_matrix' has a rotation block that is not a rotation (|R^T R - I| up to "
                        f"{off:.3g}, det {det:.4g}; tolerance {ROTATION_TOLERANCE:g}): a camera-to-world pose needs "
                        "an orthonormal R with det +1 (no scale, no reflection)")
    return pose


def frame_image_path(class_dir: Path, file_path: str, index: int, transforms: Path) -> Path:
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
