"""Class assembly for the MAD layout (PAD benchmark) and the synthetic data in the same layout: the
training views with their poses and intrinsics, and the test set with labels and masks.

Test poses are never read here: a query arrives without a pose. `downscale = k` resamples every image
by 1/k (mad/images.py) and divides the intrinsics by k. Every problem with the files raises `DataError`
with one line naming the file and the problem; all problems of a class are reported together.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from common.camera import Intrinsics
from common.errors import DataError
from common.fingerprint import array_digest, digest
from common.run import RunOptions
from mad.images import (
    check_downscale,
    downscale_image,
    downscale_mask,
    odd_sizes,
    read_image_file,
    read_mask_file,
)
from mad.layout import GOOD, list_images, mask_path, resolve_class_dir, sample_order_key
from mad.transforms import frame_image_path, frame_pose, read_intrinsics, read_transforms


@dataclass
class TrainViews:
    images: np.ndarray      # [N,H,W,3] float32 in [0,1]
    poses: np.ndarray       # [N,4,4] float32 camera-to-world (OpenGL: camera looks down -z, y up)
    intrinsics: Intrinsics  # pixels at the loaded resolution
    height: int
    width: int
    paths: list[Path] = field(default_factory=list)
    bounds: dict[str, float] | None = None  # near, far, object_radius from the SfM points (mad.colmap_poses)

    @cached_property
    def image_digest(self) -> str:
        """Content hash of the image array (hashed once; the retrieval database is keyed on it)."""
        return array_digest(self.images)

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of what a NeRF is trained on: the images, poses and intrinsics (saved in the
        checkpoint and checked whenever it is used, so a NeRF is never used with views it was not made from)."""
        return digest([("images", self.image_digest), ("poses", np.asarray(self.poses, dtype=np.float32)),
                       ("intrinsics", sorted(self.intrinsics.as_dict().items()))])

    @property
    def folder(self) -> Path | str:
        """Where the views were read from (for messages)."""
        return self.paths[0].parent if self.paths else "the training views"


@dataclass
class TestSample:
    __test__ = False        # not a pytest test class despite the name

    name: str               # "<defect_type>/<stem>", e.g. "good/3", "Burrs/12"
    path: Path
    image: np.ndarray       # [H,W,3] float32 in [0,1]
    label: int              # 0 good, 1 defect
    defect_type: str        # "good" or the defect folder name
    mask: np.ndarray        # [H,W] bool, all False for good

    @cached_property
    def image_digest(self) -> str:
        """Content hash of the image as loaded: saved with its map, so a replaced image is never judged by the
        map of the old one (the mask is not part of it: it is read afresh by every evaluation)."""
        return array_digest(self.image)


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


def load_train_views(class_dir, downscale: int = 1, white_bkgd: bool = True) -> TrainViews:
    """Training images (in transforms.json order) with their camera-to-world poses, at 1/downscale."""
    class_dir = Path(class_dir)
    meta, frames, tpath = read_transforms(class_dir)
    poses = [frame_pose(f, i, tpath) for i, f in enumerate(frames)]
    paths = [frame_image_path(class_dir, f["file_path"], i, tpath) for i, f in enumerate(frames)]

    first = read_image_file(paths[0], white_bkgd)
    h0, w0 = first.shape[:2]
    intrinsics = read_intrinsics(meta, tpath, w0, h0)  # bad intrinsics stop us before the other images load
    check_downscale(downscale, w0, h0, paths[0])

    def load(p: Path) -> tuple[tuple[int, int], np.ndarray | None]:  # downscaled as it is read: full-size
        img = first if p == paths[0] else read_image_file(p, white_bkgd)  # photos never pile up in memory
        size = (img.shape[1], img.shape[0])
        return size, downscale_image(img, downscale) if size == (w0, h0) else None

    loaded = _parallel_map(load, paths)
    raise_problems(odd_sizes(paths, [size for size, _ in loaded], "training images"))
    images = [image for _, image in loaded]
    height, width = images[0].shape[:2]
    return TrainViews(
        images=np.stack(images).astype(np.float32, copy=False),
        poses=np.stack(poses).astype(np.float32),
        intrinsics=intrinsics.downscaled(downscale),
        height=int(height),
        width=int(width),
        paths=paths,
        bounds=_bounds(meta, tpath),
    )


BOUND_KEYS = ("near", "far", "object_radius")


def _bounds(meta: dict, path: Path) -> dict[str, float] | None:
    """transforms.json's "bounds" (mad.colmap_poses), checked: None when absent."""
    bounds = meta.get("bounds")
    if bounds is None:
        return None
    if not isinstance(bounds, dict) or not all(isinstance(bounds.get(k), (int, float)) for k in BOUND_KEYS):
        raise DataError(f"{path}: 'bounds' must hold the numbers {', '.join(BOUND_KEYS)}, got {bounds!r}")
    return {k: float(bounds[k]) for k in BOUND_KEYS}


def load_test_set(class_dir, downscale: int = 1, white_bkgd: bool = True,
                  allow_empty_masks: bool = False) -> list[TestSample]:
    """Test images without poses (at 1/downscale), in mad.layout.sample_order_key order ('good' first, then
    the defect folders; natural order). Defect images take their mask from ground_truth/<Defect>/<stem>_mask.png,
    read by the rule of mad.images.binarize_mask; non-binary masks give one warning naming them.

    Every problem (missing or unreadable image or mask, a mask of another size, an all-zero mask on a
    defect image unless `allow_empty_masks`, test images of different sizes) is reported together."""
    class_dir = Path(class_dir)
    if not class_dir.is_dir():
        raise DataError(f"{class_dir}: class folder not found")
    test_dir = class_dir / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: test folder not found")
    folders = [p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
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
                mask = None if folder.name == GOOD else mask_path(class_dir, folder.name, f)
            except DataError as err:
                problems.append(str(err))
                continue
            jobs.append((folder.name, f, mask))
    jobs.sort(key=lambda job: sample_order_key(job[0], job[1].stem))

    def load(job):
        defect, image_path, mask_path = job
        image = read_image_file(image_path, white_bkgd)
        note = None
        if mask_path is None:
            mask = np.zeros(image.shape[:2], dtype=bool)
        else:
            mask, note = read_mask_file(mask_path)
            if mask.shape != image.shape[:2]:
                raise DataError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                                f"its image {image_path} ({image.shape[1]}x{image.shape[0]})")
            if not mask.any() and not allow_empty_masks:
                raise DataError(f"{mask_path}: mask of the defect image {image_path} is all zero (its defect "
                                "would be scored as normal); fix the mask, or pass --allow_empty_masks true")
        check_downscale(downscale, image.shape[1], image.shape[0], image_path)
        image, mask = downscale_image(image, downscale), downscale_mask(mask, downscale)
        return note, TestSample(
            name=f"{defect}/{image_path.stem}",
            path=image_path,
            image=np.ascontiguousarray(image, dtype=np.float32),
            label=0 if defect == GOOD else 1,
            defect_type=defect,
            mask=mask,
        )

    loaded, load_problems = _map_collecting(load, jobs)
    samples = [s for _, s in filter(None, loaded)]
    problems += load_problems
    if samples:
        problems += odd_sizes([s.path for s in samples], [(s.image.shape[1], s.image.shape[0]) for s in samples],
                              "test images")
    raise_problems(problems)
    warn_non_binary([note for note, _ in filter(None, loaded) if note])
    return samples


def warn_non_binary(notes: Sequence[str]) -> None:
    """One warning for the non-binary masks of a test set: the first file and what it held, and how many more."""
    if notes:
        more = f" (and {len(notes) - 1} more masks like it)" if len(notes) > 1 else ""
        warnings.warn(f"{notes[0]}{more}", stacklevel=3)


def load_run_test_set(run: RunOptions) -> list[TestSample]:
    """The test set of the class `run.class_name` of `run.data_root`, loaded with the run's settings."""
    return load_test_set(resolve_class_dir(run.data_root, run.class_name), downscale=run.image_downscale,
                         white_bkgd=run.white_bkgd, allow_empty_masks=run.allow_empty_masks)
