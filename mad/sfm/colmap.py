"""The COLMAP run (pycolmap, CPU): SIFT extraction with one shared pinhole camera, exhaustive matching
with geometric verification, incremental mapping.

Resumable: the database in the work folder keeps every image's features and every matched pair, and a
re-run extracts and matches only what is missing (mapping, a few seconds, always runs afresh). A
changed image set or changed extraction / camera settings start a new database. Progress bars count
images (extraction, registration) and image pairs (matching).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import DataError
from common.io import write_json
from common.progress import progress_bar, progress_write
from mad.sfm.consistency import MatchedPair

DATABASE = "database.db"
INPUTS = "inputs.json"
EXTRACT_CHUNK = 8        # images per extraction call (one progress step each)
MATCH_CHUNK = 300        # image pairs per matching call


@dataclass(frozen=True)
class SfmSettings:
    """What the COLMAP run needs to know (mad.options.SfmOptions gives the defaults)."""
    camera_model: str = "SIMPLE_PINHOLE"
    focal_px: float | None = None         # a known focal length (pixels): fixed, not refined
    num_threads: int = 2
    max_features: int = 8192
    peak_threshold: float | None = None
    feature_mask: Path | None = None     # a folder of masks <image name>.png (non-zero = extract there)
    affine_sift: bool = False
    upright_sift: bool = False           # one orientation per keypoint (cameras that keep their roll)
    guided_matching: bool = False
    match_max_ratio: float = 0.8         # SIFT ratio test (COLMAP's default)
    match_max_distance: float = 0.7      # largest descriptor distance of a match (COLMAP's default)
    seed: int = 0
    init_min_inliers: int = 100
    abs_pose_min_inliers: int = 30
    abs_pose_min_inlier_ratio: float = 0.25
    two_view_tracks: bool = False


@dataclass
class SfmRun:
    reconstructions: dict               # model index -> pycolmap.Reconstruction
    database: Path
    names: list[str]                    # every image given, in order
    image_ids: dict[str, int]           # database id of each name
    seconds: dict[str, float]


MAPPING_ONLY = ("num_threads", "seed", "init_min_inliers", "abs_pose_min_inliers", "abs_pose_min_inlier_ratio",
                "two_view_tracks")   # settings of the mapping alone: a database of features and matches is kept


def _fingerprint(image_dir: Path, names: list[str], settings: SfmSettings) -> dict:
    import pycolmap

    def stamp(path: Path) -> list:
        return [path.name, path.stat().st_size, path.stat().st_mtime_ns]

    extraction = {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()
                  if k not in MAPPING_ONLY}
    masks = [stamp(settings.feature_mask / f"{n}.png") for n in names] if settings.feature_mask else None
    return {"pycolmap": pycolmap.__version__, "images": [stamp(image_dir / n) for n in names], "masks": masks,
            "extraction": extraction}


def prepare_work_dir(work_dir: Path, fingerprint: dict) -> bool:
    """Keep the database when it was made from the same images and settings; else start afresh.
    Returns whether an earlier database is resumed."""
    inputs = work_dir / INPUTS
    if (work_dir / DATABASE).is_file() and inputs.is_file():
        try:
            if json.loads(inputs.read_text()) == fingerprint:
                return True
        except json.JSONDecodeError:
            pass
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    write_json(inputs, fingerprint)
    return False


def _database_state(db_path: Path) -> tuple[dict[str, int], int | None, set[int], set[tuple[int, int]]]:
    """(image id per name, the shared camera id, images with keypoints, pairs with a two-view geometry)."""
    import pycolmap

    db = pycolmap.Database.open(db_path)
    try:
        images = {img.name: img.image_id for img in db.read_all_images()}
        cameras = [c.camera_id for c in db.read_all_cameras()]
        with_keypoints = {i for i in images.values() if db.exists_keypoints(i) and db.num_keypoints_for_image(i)}
        ids = sorted(images.values())
        matched = {(a, b) for k, a in enumerate(ids) for b in ids[k + 1:] if db.exists_two_view_geometry(a, b)}
    finally:
        db.close()
    return images, (cameras[0] if cameras else None), with_keypoints, matched


def _extract(db: Path, image_dir: Path, names: list[str], settings: SfmSettings, progress: bool) -> None:
    import pycolmap

    images, camera_id, with_keypoints, _ = _database_state(db)
    todo = [n for n in names if images.get(n) not in with_keypoints]
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = settings.camera_model
    if settings.feature_mask is not None:
        reader.mask_path = str(settings.feature_mask)
    if settings.focal_px is not None:  # a known focal length, principal point at the centre
        bitmap = pycolmap.Bitmap.read(image_dir / names[0], False)
        f, w, h = settings.focal_px, bitmap.width, bitmap.height
        reader.camera_params = {"SIMPLE_PINHOLE": f"{f},{w / 2},{h / 2}", "PINHOLE": f"{f},{f},{w / 2},{h / 2}",
                                "SIMPLE_RADIAL": f"{f},{w / 2},{h / 2},0"}[settings.camera_model]
    extract = pycolmap.FeatureExtractionOptions()
    extract.num_threads = settings.num_threads
    extract.use_gpu = False
    extract.sift.max_num_features = settings.max_features
    if settings.peak_threshold is not None:
        extract.sift.peak_threshold = settings.peak_threshold
    extract.sift.estimate_affine_shape = settings.affine_sift
    extract.sift.upright = settings.upright_sift
    extract.sift.domain_size_pooling = settings.affine_sift
    with progress_bar(total=len(names), initial=len(names) - len(todo), desc="SfM features", unit="img",
                      disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), EXTRACT_CHUNK):
            if camera_id is not None:   # later calls join the one shared camera
                reader.existing_camera_id = camera_id
            chunk = todo[start:start + EXTRACT_CHUNK]
            pycolmap.extract_features(db, image_dir, image_names=chunk, camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=extract, device=pycolmap.Device.cpu)
            if camera_id is None:
                camera_id = _database_state(db)[1]
            bar.update(len(chunk))


def _match(db: Path, work_dir: Path, names: list[str], settings: SfmSettings, progress: bool) -> None:
    import pycolmap

    images, _, _, matched = _database_state(db)
    pairs = [(a, b) for k, a in enumerate(names) for b in names[k + 1:]]
    todo = [(a, b) for a, b in pairs if tuple(sorted((images[a], images[b]))) not in matched]
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = settings.num_threads
    match.use_gpu = False
    match.guided_matching = settings.guided_matching
    match.sift.max_ratio = settings.match_max_ratio
    match.sift.max_distance = settings.match_max_distance
    verify = pycolmap.TwoViewGeometryOptions()
    verify.compute_relative_pose = True  # cam2_from_cam1, used by the flipped-view check
    pairing = pycolmap.ImportedPairingOptions()
    pair_file = work_dir / "pairs.txt"
    pairing.match_list_path = str(pair_file)
    with progress_bar(total=len(pairs), initial=len(pairs) - len(todo), desc="SfM matching", unit="pair",
                      disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), MATCH_CHUNK):
            chunk = todo[start:start + MATCH_CHUNK]
            pair_file.write_text("".join(f"{a} {b}\n" for a, b in chunk))
            pycolmap.match_image_pairs(db, matching_options=match, pairing_options=pairing,
                                       verification_options=verify, device=pycolmap.Device.cpu)
            bar.update(len(chunk))
    pair_file.unlink(missing_ok=True)


def _map(db: Path, image_dir: Path, work_dir: Path, n_images: int, settings: SfmSettings, progress: bool) -> dict:
    import pycolmap

    sparse = work_dir / "sparse"
    if sparse.exists():
        shutil.rmtree(sparse)
    sparse.mkdir()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = settings.num_threads
    opts.random_seed = settings.seed
    opts.mapper.init_min_num_inliers = settings.init_min_inliers
    opts.mapper.abs_pose_min_num_inliers = settings.abs_pose_min_inliers
    opts.mapper.abs_pose_min_inlier_ratio = settings.abs_pose_min_inlier_ratio
    opts.triangulation.ignore_two_view_tracks = not settings.two_view_tracks
    if settings.focal_px is not None:
        opts.ba_refine_focal_length = False
    with progress_bar(total=n_images, desc="SfM mapping", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        def pair_registered():
            bar.update(2)

        def image_registered():
            bar.update(1)

        return pycolmap.incremental_mapping(db, image_dir, sparse, options=opts,
                                            initial_image_pair_callback=pair_registered,
                                            next_image_callback=image_registered)


def run_sfm(image_dir: Path, names: list[str], work_dir: Path, settings: SfmSettings,
            progress: bool = True, verbose: bool = False) -> SfmRun:
    """Extraction (resumed), matching (resumed), mapping of `names` in `image_dir`."""
    import pycolmap

    if not verbose:
        pycolmap.logging.minloglevel = 2  # warnings and errors only
    pycolmap.set_random_seed(settings.seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    resumed = prepare_work_dir(work_dir, _fingerprint(image_dir, names, settings))
    if resumed and progress:
        progress_write(f"resuming the COLMAP database in {work_dir}")
    db = work_dir / DATABASE
    seconds = {}
    t0 = time.perf_counter()
    _extract(db, image_dir, names, settings, progress)
    seconds["extract_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _match(db, work_dir, names, settings, progress)
    seconds["match_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    models = _map(db, image_dir, work_dir, len(names), settings, progress)
    seconds["map_s"] = time.perf_counter() - t0
    images = _database_state(db)[0]
    missing = [n for n in names if n not in images]
    if missing:
        raise DataError(f"{image_dir / missing[0]}: COLMAP could not read this image ({len(missing)} unreadable)")
    return SfmRun(models, db, names, images, seconds)


def read_matched_pairs(db_path: Path, min_inliers: int = 30) -> list[MatchedPair]:
    """Every verified pair with >= min_inliers geometric inliers: matched keypoint pixels and indices, and
    the two-view relative rotation."""
    import pycolmap

    db = pycolmap.Database.open(db_path)
    try:
        pair_ids, geometries = db.read_two_view_geometries()
        keypoints: dict[int, np.ndarray] = {}
        out = []
        for pair_id, geometry in zip(pair_ids, geometries, strict=True):
            matches = np.asarray(geometry.inlier_matches)
            if len(matches) < min_inliers:
                continue
            i1, i2 = (int(i) for i in pycolmap.pair_id_to_image_pair(pair_id))
            for i in (i1, i2):
                if i not in keypoints:
                    keypoints[i] = np.asarray(db.read_keypoints(i))[:, :2].astype(np.float64)
            relative = geometry.cam2_from_cam1
            rotation = np.asarray(relative.matrix())[:, :3] if relative is not None else None
            out.append(MatchedPair(i1, i2, keypoints[i1][matches[:, 0]], keypoints[i2][matches[:, 1]], rotation,
                                   matches[:, 0].astype(np.int64), matches[:, 1].astype(np.int64)))
        return out
    finally:
        db.close()


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)
