"""Where things are in the MAD layout: class folders, image listing in natural order, the order of test
samples, mask paths.

```
<data_root>/<class>/transforms.json         {"camera_angle_x" (or "fl_x", ...), "frames": [{"file_path", ...}]}
<data_root>/<class>/train/good/<n>.png      anomaly-free views with poses
<data_root>/<class>/test/good/<n>.png       normal queries (label 0)
<data_root>/<class>/test/<Defect>/<n>.png   anomalous queries (label 1), any folder name is a defect type
<data_root>/<class>/ground_truth/<Defect>/<n>_mask.png
```
"""
from __future__ import annotations

import re
from pathlib import Path

from common.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TRANSFORMS_FILE = "transforms.json"
TEST_POSES_FILE = "test_poses.json"     # the test images' true poses, where known (generated classes, captures)
GOOD = "good"


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically: '2.png' < '10.png'."""
    parts = re.split(r"(\d+)", name)
    chunks = tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts if p != "")
    return chunks, name  # the name breaks ties such as '01' vs '1'; a chunk prefix sorts first


def sample_order_key(defect: str, stem: str) -> tuple:
    """The one order of a class's test samples (the reader's and the saved results'): the good folder first,
    then the defect folders, and the files within each, all in natural order."""
    return defect != GOOD, natural_key(defect), natural_key(stem)


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_classes(data_root) -> list[str]:
    """Class folders of `data_root` (those holding a transforms.json or train/good), in natural order.
    A class without poses is listed: loading it says how to recover them (mad.colmap_poses)."""
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


def mask_path(class_dir: Path, defect: str, image_path: Path) -> Path:
    folder = class_dir / "ground_truth" / defect
    stem = image_path.stem
    for name in (f"{stem}_mask.png", f"{stem}.png", f"{stem}_mask{image_path.suffix}"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{image_path}: defect image has no mask (expected {folder / (stem + '_mask.png')})")
