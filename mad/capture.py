"""A class in the MAD layout from a folder of real photographs of one object (a capture), with painted defects.

    python -m mad.capture --capture data/captures/skull --out data/real --class_name skull [--size 400]
    python -m mad.colmap_poses --class_dir data/real/skull          # then: the training poses by SfM

Every `--test_every`-th photograph (natural order) is held out; the rest become `train/good` (no poses yet:
mad.colmap_poses recovers them). Each held-out photograph is a good test image and, once per defect type, a
defect image painted on it (mad.paint: Stains, Burrs, Missing on the object found against its background),
with the mask of exactly the painted pixels:
```
<out>/<class>/train/good/<i>.png              the training photographs, long side --size
<out>/<class>/test/good/<i>.png               the held-out photographs as they are
<out>/<class>/test/<Defect>/<i>.png           the same photographs, painted
<out>/<class>/ground_truth/<Defect>/<i>_mask.png
<out>/<class>/capture.json                    where each image came from, the options, the painted areas
```
The same capture, options and seed give byte-identical files (each image's painting has its own RNG).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError, exit_on_user_error
from common.io import write_image, write_json
from mad.layout import GOOD, list_images
from mad.paint import PAINTED_TYPES, object_mask, paint_defect

CAPTURE_RECORD = "capture.json"


def read_photo(path: Path, size: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a photograph, its long side resampled to `size` (area averaging; never enlarged)."""
    raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if raw is None:
        raise DataError(f"{path}: not a readable image")
    h, w = raw.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        raw = cv2.resize(raw, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)


def split_capture(n: int, test_every: int) -> tuple[list[int], list[int]]:
    """(train, test) indices: every `test_every`-th photograph, from the middle of the first block, is held out."""
    test = range(test_every // 2, n, test_every)
    return [i for i in range(n) if i not in test], list(test)


def build_capture_class(capture_dir: Path, class_dir: Path, *, size: int = 400, test_every: int = 5, seed: int = 0,
                        defect_types: Sequence[str] = PAINTED_TYPES) -> dict:
    """Write the class (module docstring) and return its record."""
    images_dir = capture_dir / "images"
    if not images_dir.is_dir():
        raise DataError(f"{capture_dir}: a capture needs an images/ folder of photographs")
    photos = list_images(images_dir)
    if len(photos) < 4:
        raise DataError(f"{images_dir}: {len(photos)} photographs; a class needs at least 4")
    if test_every < 2:
        raise DataError(f"test_every must be >= 2 (a class needs training views), got {test_every}")
    unknown = sorted(set(defect_types) - set(PAINTED_TYPES))
    if unknown:
        raise DataError(f"no painter for {', '.join(unknown)} (known: {', '.join(PAINTED_TYPES)})")
    train, test = split_capture(len(photos), test_every)
    record = {"capture": str(capture_dir), "size": size, "test_every": test_every, "seed": seed,
              "train": {}, "test": {}, "painted_pixels": {d: [] for d in defect_types}}
    for i, index in enumerate(train):
        write_image(class_dir / "train" / GOOD / f"{i}.png", read_photo(photos[index], size))
        record["train"][f"train/{GOOD}/{i}.png"] = photos[index].name
    for i, index in enumerate(test):
        photo = read_photo(photos[index], size)
        obj = object_mask(photo)
        write_image(class_dir / "test" / GOOD / f"{i}.png", photo)
        record["test"][f"test/{GOOD}/{i}.png"] = photos[index].name
        for d, defect in enumerate(defect_types):
            rng = np.random.default_rng([seed, index, d])
            painted, mask = paint_defect(photo, obj, defect, rng)
            write_image(class_dir / "test" / defect / f"{i}.png", painted)
            write_image(class_dir / "ground_truth" / defect / f"{i}_mask.png", mask.astype(np.uint8) * 255)
            record["test"][f"test/{defect}/{i}.png"] = photos[index].name
            record["painted_pixels"][defect].append(int(mask.sum()))
    write_json(class_dir / CAPTURE_RECORD, record)
    return record


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--capture", type=Path, required=True, help="the capture folder (its photographs in images/)")
    parser.add_argument("--out", type=Path, default=Path("data/real"), help="the data root the class is written to")
    parser.add_argument("--class_name", required=True, help="the class folder's name under --out")
    parser.add_argument("--size", type=int, default=400, help="long side of the class's images, pixels")
    parser.add_argument("--test_every", type=int, default=5, help="every this-many-th photograph is held out")
    parser.add_argument("--seed", type=int, default=0, help="the paintings' seed")
    parser.add_argument("--defect_types", nargs="+", default=list(PAINTED_TYPES), help="defect types painted")
    args = parser.parse_args(argv)
    record = build_capture_class(args.capture, args.out / args.class_name, size=args.size,
                                 test_every=args.test_every, seed=args.seed, defect_types=args.defect_types)
    print(f"{args.out / args.class_name}: {len(record['train'])} training photographs, "
          f"{len(record['test'])} test images ({', '.join(args.defect_types)} painted on each held-out one); "
          f"next: python -m mad.colmap_poses --class_dir {args.out / args.class_name}")


if __name__ == "__main__":
    main()
