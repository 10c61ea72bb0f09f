"""A class in the MAD layout from a folder of real photographs of one object (a capture), with painted defects.

    python -m mad.capture --capture data/captures/skull --out data/real --class_name skull [--size 400]
    python -m mad.colmap_poses --class_dir data/real/skull          # then: the training poses by SfM

Every `--test_every`-th photograph (natural order) is held out; the rest become `train/good`. Without poses the
class has none yet (mad.colmap_poses recovers them); with the capture's poses (<capture>/poses.json, written by
`--poses_from_sfm` from an SfM run on the photographs themselves, e.g. at their full resolution) the class gets
transforms.json for its training views and test_poses.json for its test images. Each held-out photograph is a
good test image and, once per defect type, a defect image painted on it (mad.paint: Stains, Burrs, Missing on the
object found against its background), with the mask of exactly the painted pixels:
```
<out>/<class>/train/good/<i>.png              the training photographs, long side --size
<out>/<class>/test/good/<i>.png               the held-out photographs as they are
<out>/<class>/test/<Defect>/<i>.png           the same photographs, painted
<out>/<class>/ground_truth/<Defect>/<i>_mask.png
<out>/<class>/capture.json                    where each image came from, the options, the painted areas
<out>/<class>/transforms.json, test_poses.json   with the capture's poses only
```
With `--backdrop black` every image keeps only its object (mad.foreground.object_mask of that image itself, as
a query would be treated, painted or not) on black: a class for a NeRF that composites on black
(`white_bkgd = False`) and never has to model the room behind the object. The masks stay the painted pixels.
With `--backdrop hull` (a capture with poses) the object is the visual hull voted from all the photographs
(mad.hull), seen from each image's pose: the same object in every view, test images included; a painted
Missing bite then shows the black backdrop, Burrs outside the outline are kept.
When the capture's camera has a radial distortion term (k1 in poses.json), every image is undistorted first
(mad.undistort), so the class is a pinhole class (`--keep_distortion` keeps it: a class for SfM that estimates its
own, whose transforms.json then holds the capture's k1). The same capture, options and seed give byte-identical files
(each image's painting has its own RNG).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError, exit_on_user_error
from common.io import write_image, write_json
from mad.foreground import brighter_than_backdrop, object_mask
from mad.hull import hull_mask, visual_hull
from mad.layout import GOOD, TEST_POSES_FILE, TRANSFORMS_FILE, list_images
from mad.paint import PAINTED_TYPES, REMOVES_MATERIAL, paint_defect
from mad.transforms import frame_pose, scaled_camera
from mad.undistort import Undistorter, corner_shift_px

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


BACKDROPS = ("keep", "black", "hull")
POSES_FILE = "poses.json"                  # a capture's camera poses, when it has them (capture_poses_from_sfm)
CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def capture_poses_from_sfm(transforms_path: Path, capture_dir: Path, source: str,
                           class_record: dict | None = None) -> dict:
    """A capture's poses.json content from a transforms.json that mad.colmap_poses made on the capture's own
    photographs (any size, e.g. at higher resolution than the class will use; frames matched to the photographs
    by file name) or, given that class's record (capture.json), on a class made from it (frames matched by the
    record's training images): the camera (fl_x, fl_y, cx, cy for w x h images; k1 kept when SfM estimated it),
    the bounds, one camera-to-world per registered photograph, keyed by its file name in <capture>/images, and
    `source`, a line saying how the poses were made."""
    meta = json.loads(Path(transforms_path).read_text())
    by_stem = {p.stem.lower(): p.name for p in list_images(capture_dir / "images")}
    frames = []
    for frame in meta["frames"]:
        if class_record is not None:
            photo = class_record["train"].get(frame["file_path"])
        else:
            photo = by_stem.get(Path(frame["file_path"]).stem.lower())
        if photo is None:
            raise DataError(f"{transforms_path}: {frame['file_path']} is not a photograph of {capture_dir / 'images'}")
        frames.append({"file_path": f"images/{photo}", "transform_matrix": frame["transform_matrix"]})
    return {"source": source, **{k: meta[k] for k in (*CAMERA_KEYS, "k1", "bounds") if k in meta}, "frames": frames}


def read_capture_poses(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(the camera and bounds, {photo file name: [4, 4] camera-to-world}) of a capture's poses.json."""
    try:
        meta = json.loads(Path(path).read_text())
        camera = {k: float(meta[k]) for k in CAMERA_KEYS}
        frames = list(meta["frames"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a capture pose file (camera {', '.join(CAMERA_KEYS)} and a list of frames: "
                        f"{err!r})") from None
    poses = {Path(f["file_path"]).name: frame_pose(f, i, Path(path)) for i, f in enumerate(frames)}
    return {**camera, "k1": float(meta.get("k1", 0.0)), "bounds": meta.get("bounds")}, poses


def on_backdrop(photo: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """The photograph as the class stores it: as it is (keep None), or only its `keep` pixels, on black."""
    return photo if keep is None else photo * keep[..., None].astype(np.uint8)


def painted_keep(obj: np.ndarray, defect: str, mask: np.ndarray) -> np.ndarray:
    """The pixels a painted image keeps on a black backdrop, given its photograph's object mask: a defect that
    adds material (a stain, burrs) is kept where painted, one that removes it (Missing) shows the backdrop."""
    return obj & ~mask if defect in REMOVES_MATERIAL else obj | mask


HULL_RESOLUTION = 96    # cells per side of the visual hull's grid (mad.hull), over the object's bounding cube


def hull_masks(photos: dict[str, np.ndarray], camera: dict, poses: dict[str, np.ndarray],
               keep: float = 0.85, erode: int = 0) -> dict[str, np.ndarray]:
    """{photo name: [H, W] bool} the object's visual hull (mad.hull) from every posed photograph, seen by each."""
    names = [name for name in photos if name in poses]
    height, width = photos[names[0]].shape[:2]
    cam = scaled_camera(camera, width, height)
    radius = float((camera.get("bounds") or {}).get("object_radius", 0.0))
    if radius <= 0:
        raise DataError("the capture's poses have no object radius (poses.json 'bounds'): the hull needs one")
    hull = visual_hull([brighter_than_backdrop(photos[n]) for n in names], [poses[n] for n in names], cam, radius,
                       resolution=HULL_RESOLUTION, keep=keep, erode=erode)
    if not len(hull):
        raise DataError(f"the visual hull of {len(names)} posed photographs is empty: they do not agree on an object "
                        f"brighter than its backdrop inside the object radius {radius:g}; use --backdrop black or keep")
    return {n: hull_mask(hull, poses[n], cam, height, width, radius, HULL_RESOLUTION) for n in names}


def build_capture_class(capture_dir: Path, class_dir: Path, *, size: int = 400, test_every: int = 5, seed: int = 0,
                        defect_types: Sequence[str] = PAINTED_TYPES, backdrop: str = "keep",
                        poses: Path | None = None, undistort: bool = True, hull_erode: int = 0) -> dict:
    """Write the class (module docstring) and return its record. `undistort` False keeps the photographs' lens
    distortion (their transforms.json then holds the capture's k1): a class for SfM that estimates its own."""
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
    if backdrop not in BACKDROPS:
        raise DataError(f"backdrop must be one of {', '.join(BACKDROPS)}, got {backdrop!r}")
    if hull_erode < 0:
        raise DataError(f"hull_erode must be >= 0 (layers of cells peeled off the hull), got {hull_erode}")
    if backdrop == "hull" and poses is None:
        raise DataError(f"{capture_dir}: --backdrop hull needs the capture's poses ({POSES_FILE})")
    camera, capture_poses = read_capture_poses(poses) if poses is not None else (None, {})
    distorted = camera is not None and bool(camera["k1"])
    if distorted and not undistort and backdrop == "hull":
        raise DataError(f"{capture_dir}: --backdrop hull projects a pinhole camera; it needs the lens distortion "
                        "undone (drop --keep_distortion)")
    pictures = {p.name: read_photo(p, size) for p in photos}     # at the class's size
    if distorted and undistort:
        undo = Undistorter(camera, camera["k1"])
        pictures = {name: undo(photo) for name, photo in pictures.items()}
    hulls = hull_masks(pictures, camera, capture_poses, erode=hull_erode) if backdrop == "hull" else {}

    def object_of(name: str) -> np.ndarray:
        """The photograph's object: its hull's silhouette (backdrop hull, when posed), else found in it alone."""
        return hulls[name] if name in hulls else object_mask(pictures[name])

    train, test = split_capture(len(photos), test_every)
    record = {"capture": str(capture_dir), "size": size, "test_every": test_every, "seed": seed, "backdrop": backdrop,
              **({"hull_erode": hull_erode} if backdrop == "hull" else {}), "undistorted": distorted and undistort,
              "train": {}, "test": {},
              "painted_pixels": {d: [] for d in defect_types}}
    for i, index in enumerate(train):
        name = photos[index].name
        keep = None if backdrop == "keep" else object_of(name)
        write_image(class_dir / "train" / GOOD / f"{i}.png", on_backdrop(pictures[name], keep))
        record["train"][f"train/{GOOD}/{i}.png"] = name
    for i, index in enumerate(test):
        name = photos[index].name
        photo, obj = pictures[name], object_of(name)
        write_image(class_dir / "test" / GOOD / f"{i}.png", on_backdrop(photo, None if backdrop == "keep" else obj))
        record["test"][f"test/{GOOD}/{i}.png"] = name
        for d, defect in enumerate(defect_types):
            rng = np.random.default_rng([seed, index, d])
            painted, mask = paint_defect(photo, obj, defect, rng)
            if backdrop == "black":
                keep = object_mask(painted)           # found in the painted image itself, as a query's would be
            else:
                keep = painted_keep(obj, defect, mask) if backdrop == "hull" else None
            write_image(class_dir / "test" / defect / f"{i}.png", on_backdrop(painted, keep))
            write_image(class_dir / "ground_truth" / defect / f"{i}_mask.png", mask.astype(np.uint8) * 255)
            record["test"][f"test/{defect}/{i}.png"] = name
            record["painted_pixels"][defect].append(int(mask.sum()))
    if camera is not None:
        record.update(write_class_poses(class_dir, record, camera, capture_poses), poses=str(poses))
    write_json(class_dir / CAPTURE_RECORD, record)
    return record


def write_class_poses(class_dir: Path, record: dict, camera: dict, poses: dict[str, np.ndarray]) -> dict:
    """transforms.json (the training photographs that have a pose) and test_poses.json (every test image of a
    photograph that has one) from the capture's poses; returns what the record notes: the photographs without
    a pose and how far the lens distortion undone in the images moved their corners. Images that kept their
    distortion (the record's "undistorted" False, camera k1 non-zero) get k1 in both files."""
    undistorted = record["undistorted"]
    height, width = cv2.imread(str(class_dir / next(iter(record["train"]))), cv2.IMREAD_UNCHANGED).shape[:2]
    cam = scaled_camera(camera, width, height)
    if camera["k1"] and not undistorted:
        cam.update(k1=camera["k1"], camera_model="SIMPLE_RADIAL")

    def frames(images: dict) -> list[dict]:
        return [{"file_path": rel, "transform_matrix": poses[photo].tolist()}
                for rel, photo in images.items() if photo in poses]

    train = frames(record["train"])
    if not train:
        raise DataError(f"{record['capture']}: none of the training photographs has a pose")
    write_json(class_dir / TRANSFORMS_FILE, {**cam, "bounds": camera["bounds"], "frames": train})
    write_json(class_dir / TEST_POSES_FILE, {**cam, "frames": frames(record["test"])})
    return {"unposed": sorted({p for p in (*record["train"].values(), *record["test"].values()) if p not in poses}),
            "distortion_undone_px": round(corner_shift_px(cam["fl_x"], cam["fl_y"], cam["cx"], cam["cy"], width,
                                                          height, camera["k1"]), 3) if undistorted else 0.0}


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--capture", type=Path, required=True, help="the capture folder (its photographs in images/)")
    parser.add_argument("--out", type=Path, default=Path("data/real"), help="the data root the class is written to")
    parser.add_argument("--class_name", help="the class folder's name under --out (required unless --poses_from_sfm)")
    parser.add_argument("--size", type=int, default=400, help="long side of the class's images, pixels")
    parser.add_argument("--test_every", type=int, default=5, help="every this-many-th photograph is held out")
    parser.add_argument("--seed", type=int, default=0, help="the paintings' seed")
    parser.add_argument("--defect_types", nargs="+", default=list(PAINTED_TYPES), help="defect types painted")
    parser.add_argument("--backdrop", choices=BACKDROPS, default="keep",
                        help="keep the photographs' background, or each image's object alone on black ('black': "
                             "the object found in each image alone; 'hull': the object's visual hull from the "
                             "capture's poses, the same object in every view)")
    parser.add_argument("--hull_erode", type=int, default=0,
                        help="with --backdrop hull: layers of cells peeled off the visual hull before it masks the "
                             "images (a cell is about 3 px at 400 px): the hull is larger than the object, and "
                             "its silhouette keeps a rim of the room")
    parser.add_argument("--poses", default="capture",
                        help=f"the capture's camera poses: 'capture' (<capture>/{POSES_FILE} when it exists), "
                             f"'none' (a class without poses, for mad.colmap_poses) or a {POSES_FILE} file; with "
                             f"poses the class gets {TRANSFORMS_FILE} and {TEST_POSES_FILE}")
    parser.add_argument("--keep_distortion", action="store_true",
                        help="keep the photographs' lens distortion (transforms.json then holds the capture's k1): "
                             "a class for mad.colmap_poses --camera_model SIMPLE_RADIAL, which estimates its own")
    parser.add_argument("--poses_from_sfm", type=Path, default=None, metavar="TRANSFORMS",
                        help=f"instead of a class: write <capture>/{POSES_FILE} from a {TRANSFORMS_FILE} that "
                             "mad.colmap_poses made on the capture's photographs (--source says how)")
    parser.add_argument("--source", default="", help="with --poses_from_sfm: how the poses were made (one line)")
    args = parser.parse_args(argv)
    if args.poses_from_sfm is not None:
        poses = capture_poses_from_sfm(args.poses_from_sfm, args.capture, args.source)
        write_json(args.capture / POSES_FILE, poses)
        print(f"{args.capture / POSES_FILE}: {len(poses['frames'])} of {len(list_images(args.capture / 'images'))} "
              "photographs with a pose")
        return
    if not args.class_name:
        parser.error("--class_name is required (unless --poses_from_sfm)")
    poses = {"none": None, "capture": args.capture / POSES_FILE}.get(args.poses, Path(args.poses))
    if args.poses == "capture" and not poses.is_file():
        poses = None
    record = build_capture_class(args.capture, args.out / args.class_name, size=args.size, poses=poses,
                                 test_every=args.test_every, seed=args.seed, defect_types=args.defect_types,
                                 backdrop=args.backdrop, undistort=not args.keep_distortion,
                                 hull_erode=args.hull_erode)
    print(f"{args.out / args.class_name}: {len(record['train'])} training photographs, "
          f"{len(record['test'])} test images ({', '.join(args.defect_types)} painted on each held-out one)")
    if poses is None:
        print(f"no poses: next, python -m mad.colmap_poses --class_dir {args.out / args.class_name}")
    else:
        print(f"poses from {poses} ({len(record['unposed'])} photographs without one, left out of the training and "
              f"test poses); the lens distortion undone moved the image corners by {record['distortion_undone_px']} px")


if __name__ == "__main__":
    main()
