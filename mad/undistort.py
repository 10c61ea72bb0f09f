"""Undo a camera's radial lens distortion, so that photographs become the pinhole images the NeRF's rays assume.

    python -m mad.undistort --class_dir data/real/part [--out data/real/part_pinhole]

The distortion is COLMAP's radial model (SIMPLE_RADIAL: k1; RADIAL: k1, k2), which OpenCV's model with only its
radial terms is: a point at normalised pinhole coordinates (x, y), r^2 = x^2 + y^2, is photographed at
(x, y) * (1 + k1 r^2 + k2 r^4). The undistorted image keeps the camera matrix (fl_x, fl_y, cx, cy) and size;
each of its pixels is read from where the lens put it (bilinear for images, nearest for masks, edge pixels
repeated where that falls outside the photograph). The class command writes a new class (its images, test
images and masks undistorted; transforms.json without the distortion terms and a note of what was undone),
leaving the original untouched.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError, exit_on_user_error
from common.io import atomic_path, write_json
from mad.layout import IMAGE_EXTENSIONS, TEST_POSES_FILE, TRANSFORMS_FILE
from mad.transforms import DISTORTION_KEYS, INTRINSIC_KEYS, RADIAL_KEYS, scaled_camera


def undistortion_maps(fl_x: float, fl_y: float, cx: float, cy: float, width: int, height: int,
                      k1: float, k2: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """float32 [H, W] (map_x, map_y): where, in the distorted photograph, each pixel of the pinhole image lies."""
    camera = np.array([[fl_x, 0.0, cx], [0.0, fl_y, cy], [0.0, 0.0, 1.0]])
    return cv2.initUndistortRectifyMap(camera, np.array([k1, k2, 0.0, 0.0]), None, camera, (width, height),
                                       cv2.CV_32FC1)


def remap(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray], nearest: bool = False) -> np.ndarray:
    """The image read at the maps' positions (bilinear, or nearest for masks and labels), same dtype."""
    return cv2.remap(image, maps[0], maps[1], cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


class Undistorter:
    """Undoes a camera's radial distortion in images of any size: the camera (fl_x, fl_y, cx, cy for w x h images)
    scaled to each image, its maps made once per size."""

    def __init__(self, camera: dict, k1: float, k2: float = 0.0):
        self.camera, self.distortion = camera, (k1, k2)
        self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        height, width = image.shape[:2]
        if (width, height) not in self._maps:
            cam = scaled_camera(self.camera, width, height)
            self._maps[width, height] = undistortion_maps(cam["fl_x"], cam["fl_y"], cam["cx"], cam["cy"], width,
                                                          height, *self.distortion)
        return remap(image, self._maps[width, height], nearest=nearest)


def corner_shift_px(fl_x: float, fl_y: float, cx: float, cy: float, width: int, height: int,
                    k1: float, k2: float = 0.0) -> float:
    """How far, in pixels, the distortion moves the image corner farthest from the principal point: what
    treating the photographs as pinhole images would cost."""
    x, y = max(cx, width - cx) / fl_x, max(cy, height - cy) / fl_y
    r2 = x * x + y * y
    return abs(k1 * r2 + k2 * r2 * r2) * math.hypot(x * fl_x, y * fl_y)


def class_distortion(meta: dict, path: Path) -> dict[str, float]:
    """{k1, k2} of a transforms.json (zeros when it has none); tangential or higher terms are one error line."""
    extra = [k for k in DISTORTION_KEYS if k not in RADIAL_KEYS and meta.get(k, 0) != 0]
    if extra:
        raise DataError(f"{path}: lens distortion {', '.join(f'{k}={meta[k]!r}' for k in extra)} is not supported "
                        f"(only the radial {' and '.join(RADIAL_KEYS)}); undistort the images with COLMAP's "
                        "image_undistorter and use a pinhole camera")
    return {k: float(meta.get(k, 0.0)) for k in RADIAL_KEYS}


def undistort_class(class_dir: Path, out_dir: Path) -> dict:
    """Write `out_dir`: the class at `class_dir` with every image (train, test) and mask (ground_truth)
    undistorted by its transforms.json's radial terms, transforms.json (and test_poses.json) without them.
    Written beside it first and renamed when complete, so an interrupted run leaves no half class. Returns the
    record written to out_dir/undistorted.json."""
    class_dir, out_dir = Path(class_dir), Path(out_dir)
    transforms_path = class_dir / TRANSFORMS_FILE
    if not transforms_path.is_file():
        raise DataError(f"{transforms_path}: not found; undistortion needs the camera (run python -m mad.colmap_poses "
                        "first)")
    if out_dir.resolve() == class_dir.resolve():
        raise DataError(f"{out_dir}: the undistorted class must go to another folder (the original is kept)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: exists and is not empty; remove it or choose another --out")
    meta = json.loads(transforms_path.read_text())
    distortion = class_distortion(meta, transforms_path)
    if not any(distortion.values()):
        raise DataError(f"{transforms_path}: has no lens distortion (k1, k2) to undo; use the class as it is")
    camera = {k: float(meta[k]) for k in INTRINSIC_KEYS if k in meta}
    if len(camera) < len(INTRINSIC_KEYS):
        raise DataError(f"{transforms_path}: undistortion needs {', '.join(INTRINSIC_KEYS)} beside k1")
    undistort = Undistorter(camera, **distortion)

    final, out_dir = out_dir, out_dir.with_name(f".{out_dir.name}.partial")   # renamed when complete
    shutil.rmtree(out_dir, ignore_errors=True)
    counts = {"images": 0, "masks": 0}
    for folder, nearest in (("train", False), ("test", False), ("ground_truth", True)):
        root = class_dir / folder
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise DataError(f"{path}: not a readable image")
            undistorted = undistort(raw, nearest=nearest)
            with atomic_path(out_dir / _png_if_jpeg(str(path.relative_to(class_dir)))) as tmp:
                tmp.write_bytes(cv2.imencode(".png", undistorted)[1].tobytes())
            counts["masks" if nearest else "images"] += 1
    pinhole = {k: v for k, v in meta.items() if k not in RADIAL_KEYS}
    if "camera_model" in pinhole:
        pinhole["camera_model"] = "PINHOLE"
    for frame in pinhole.get("frames", []):
        frame["file_path"] = _png_if_jpeg(frame["file_path"])
    write_json(out_dir / TRANSFORMS_FILE, pinhole)
    if (class_dir / TEST_POSES_FILE).is_file():
        shutil.copyfile(class_dir / TEST_POSES_FILE, out_dir / TEST_POSES_FILE)
    width, height = int(camera["w"]), int(camera["h"])
    record = {"from": str(class_dir), **distortion, **counts,
              "corner_shift_px": round(corner_shift_px(camera["fl_x"], camera["fl_y"], camera["cx"], camera["cy"],
                                                       width, height, **distortion), 3),
              "at_size": [width, height]}
    write_json(out_dir / "undistorted.json", record)
    if final.exists():
        final.rmdir()                                                          # checked empty above
    out_dir.rename(final)
    return record


def _png_if_jpeg(file_path: str) -> str:
    """Undistorted JPEGs are written as PNG (no second lossy pass): their frames name the PNG."""
    path = Path(file_path)
    return str(path.with_suffix(".png")) if path.suffix.lower() in (".jpg", ".jpeg") else file_path


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--class_dir", type=Path, required=True,
                        help="a class whose transforms.json has radial distortion (k1, k2: mad.colmap_poses "
                             "--camera_model SIMPLE_RADIAL)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the undistorted class's folder (default: <class_dir>_pinhole)")
    args = parser.parse_args(argv)
    out = args.out or args.class_dir.with_name(args.class_dir.name + "_pinhole")
    record = undistort_class(args.class_dir, out)
    print(f"{out}: {record['images']} images and {record['masks']} masks undistorted (k1 {record['k1']:g}, "
          f"k2 {record['k2']:g}: the image corner moved {record['corner_shift_px']} px at "
          f"{record['at_size'][0]}x{record['at_size'][1]}); train with --class_name {out.name}")


if __name__ == "__main__":
    main()
