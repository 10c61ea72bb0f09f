"""Verdicts on new photos with a trained class: a threshold per class; a record, an overlay and a mask per photo.

    assets = load_class(cfg, train=False, test_set=False, views=...)    # never retrains
    threshold = class_threshold(assets)            # saved with the class: ckpts/<dataset>/<class>/threshold.json
    rows = predict_photos(cfg, paths, out_dir)     # the whole command (predict.py)

The threshold comes from the class, never from the photos. Without labels, the held-out training views (the
trainer's split: the NeRF never trained on them) are scored exactly like queries -- retrieval (which may not return
the view itself), iNeRF, reference, map -- and the threshold is set at `max_false_alarm` of them
(evaluation.thresholds.false_alarm_threshold, its robust fit; their poses' errors against their known poses are
saved beside their scores); the masks then cover the windows of the image score's pool whose
average is above it, so a mask is empty exactly when the verdict is good. With a labelled validation folder
(`validation_dir`, laid out like a MAD class) the threshold is its best image F1 and the masks' pixel threshold
its best pixel F1. It is saved under a fingerprint of the maps' identity (omniposead.run_identity) and of its
source, and recomputed when either changes.

Photos are checked before any work (readable, the class's size and aspect after `downscale`, distinct names).
Their maps are saved like the pipeline's (anomaly.results, as `photos/<name>` under the output folder, with the
maps' identity in its run.json), so an interrupted run resumes, and a photo made under other settings or replaced
since is made again. Verdicts, overlays and masks are drawn from the saved maps and the threshold in seconds each
time, so a new threshold never remakes a map.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from anomaly.results import (
    is_done,
    load_record,
    load_score_map,
    result_paths,
    save_result,
)
from anomaly.scorer import defect_masks
from common.errors import DataError, Interrupted
from common.fingerprint import array_digest, digest
from common.io import atomic_write, ensure_writable, remove_stale_temps, write_image, write_json
from common.lock import run_lock
from common.progress import progress_bar
from common.rotations import rotation_error_deg
from evaluation.html_report import REPORT_NAME, write_html_report
from evaluation.metrics.pixel_auroc import pixel_roc_curve
from evaluation.plots import overlay_heatmap
from evaluation.thresholds import Threshold, f1_threshold, false_alarm_threshold
from mad.images import check_downscale, downscale_image, read_image_file
from mad.layout import IMAGE_EXTENSIONS, list_images
from mad.loader import TrainViews, load_test_set, raise_problems
from nerf.trainer import heldout_view_indices
from omniposead.config import OmniposeConfig
from omniposead.pipeline import ClassAssets, class_train_views, load_class, maps_to_make, score_images, used_assets
from omniposead.run_identity import run_identity
from retrieval.database import WithoutViews

THRESHOLD_NAME = "threshold.json"
THRESHOLD_FIT = "robust"               # evaluation.thresholds.gumbel_quantile's fit of the held-out views' scores
PHOTOS = "photos"                      # the photos' results: <out>/photos/<name>.npy, .json, _query.png, ...
PREDICTIONS = "predictions"            # <out>/predictions.csv and .json
COLUMNS = ("file", "name", "verdict", "score", "raw_score", "pose_loss_ratio", "pose_unsure", "seconds",
           "defect_pixels")


@dataclass
class Photo:
    """One photo to judge, loaded at the class's size."""
    name: str            # unique among the photos of a call: the file's stem (with its folder where stems clash)
    path: Path
    image: np.ndarray    # [H,W,3] float32 in [0,1]

    @cached_property
    def image_digest(self) -> str:
        return array_digest(self.image)

    @property
    def result_name(self) -> str:
        return f"{PHOTOS}/{self.name}"


@dataclass(frozen=True)
class ClassThreshold:
    """The class's decision: the image threshold, and the pixel threshold (on maps averaged over pixel_pool
    windows) its masks are drawn at."""
    image: Threshold
    pixel_value: float
    pixel_pool: int
    scores: list[float]          # the calibration images' raw scores
    images: list[str]            # and which images they are
    fingerprint: str
    pose_errors_deg: list[float] | None = None   # held-out views: their estimated poses' rotation error

    def record(self) -> dict:
        return {"image": self.image.record(), "pixel_value": self.pixel_value, "pixel_pool": self.pixel_pool,
                "scores": self.scores, "images": self.images, "fingerprint": self.fingerprint,
                "pose_errors_deg": self.pose_errors_deg}

    @classmethod
    def from_record(cls, record: dict) -> ClassThreshold:
        errors = record.get("pose_errors_deg")
        return cls(Threshold.from_record(record["image"]), float(record["pixel_value"]), int(record["pixel_pool"]),
                   [float(s) for s in record["scores"]], [str(n) for n in record["images"]], record["fingerprint"],
                   None if errors is None else [float(e) for e in errors])


def photo_paths(inputs: list[str]) -> list[Path]:
    """The photos named by `inputs`: files, folders (their images) and glob patterns, in the order given."""
    paths: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = list_images(path)
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(given, recursive=True))
                     if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS]
        if not found:
            raise DataError(f"{given}: no photos there (not an image file, a folder with images, or a pattern "
                            f"matching any; image types: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        paths += [p for p in found if p not in paths]
    return paths


def photo_names(paths: list[Path]) -> list[str]:
    """A name per photo: its stem, or '<folder>-<stem>' for all of them when two stems are the same."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    names = [f"{p.parent.name}-{p.stem}" for p in paths]
    if len(set(names)) != len(names):
        clash = next(n for n in names if names.count(n) > 1)
        raise DataError(f"two photos would share the name {clash!r} "
                        f"({', '.join(str(p) for p, n in zip(paths, names, strict=True) if n == clash)}); "
                        "rename one or predict them in separate calls")
    return names


def load_photos(paths: list[Path], views: TrainViews, cfg: OmniposeConfig) -> list[Photo]:
    """The photos at the class's size; every unreadable photo and every photo of another size or aspect than the
    class's training views (after `downscale`) is one line of a single error, raised before any work."""
    run, (height, width) = cfg.run, (views.height, views.width)
    photos, problems = [], []
    for path, name in zip(paths, photo_names(paths), strict=True):
        try:
            image = read_image_file(path, run.white_bkgd)
        except DataError as err:
            problems.append(str(err))
            continue
        h, w = image.shape[:2]
        if abs(w * height - h * width) > max(w, h):      # more than a pixel off the class's aspect
            problems.append(f"{path}: photo is {w}x{h} (aspect {w / h:.3f}) but class {run.class_name} was trained "
                            f"on {width}x{height} views (aspect {width / height:.3f}); crop it to that aspect")
            continue
        if (h, w) != (height * run.image_downscale, width * run.image_downscale):
            factor = w / width
            hint = (f"; it is {factor:g} times the class's size: pass --downscale {factor:g}"
                    if factor.is_integer() and factor > 1 else f"; resize it to {width}x{height}")
            problems.append(f"{path}: photo is {w}x{h} but class {run.class_name} takes "
                            f"{width * run.image_downscale}x{height * run.image_downscale} photos "
                            f"(downscale {run.image_downscale}){hint}")
            continue
        try:
            check_downscale(run.image_downscale, w, h, path)
        except DataError as err:
            problems.append(str(err))
            continue
        photos.append(Photo(name, path, np.ascontiguousarray(downscale_image(image, run.image_downscale),
                                                             dtype=np.float32)))
    raise_problems(problems)
    return photos


def _scored(assets: ClassAssets, images: np.ndarray, what: str, progress: bool) -> list:
    """score_images over `images` in the pipeline's batches, with a bar."""
    out = []
    batch = assets.cfg.inerf.inerf_batch
    with progress_bar(total=len(images), desc=what, unit="img", disable=not progress) as bar:
        for start in range(0, len(images), batch):
            out += score_images(assets, images[start:start + batch])
            bar.update(len(images[start:start + batch]))
    return out


def threshold_fingerprint(assets: ClassAssets) -> str:
    cfg = assets.cfg
    source = ({"validation_dir": str(Path(cfg.predict.validation_dir).resolve())} if cfg.predict.validation_dir
              else {"max_false_alarm": cfg.predict.max_false_alarm, "holdout_every": cfg.train.holdout_every,
                    "fit": THRESHOLD_FIT})
    return digest([("identity", json.dumps(run_identity(cfg, used_assets(assets)), sort_keys=True)),
                   ("source", json.dumps(source, sort_keys=True))])


def class_threshold(assets: ClassAssets, progress: bool = True) -> ClassThreshold:
    """The class's threshold from ckpts/<dataset>/<class>/threshold.json when its fingerprint matches, else
    calibrated (see the module docstring) and saved there."""
    cfg = assets.cfg
    fingerprint = threshold_fingerprint(assets)
    path = cfg.run.ckpt_dir / THRESHOLD_NAME
    if path.is_file():
        try:
            saved = ClassThreshold.from_record(json.loads(path.read_text()))
            if saved.fingerprint == fingerprint:
                return _warn_if_few(saved, cfg)
        except (OSError, ValueError, KeyError, TypeError):
            pass                                                  # unreadable: calibrated again
    threshold = (_validation_threshold(assets, fingerprint, progress) if cfg.predict.validation_dir
                 else _heldout_threshold(assets, fingerprint, progress))
    write_json(path, threshold.record())
    return _warn_if_few(threshold, cfg)


def _warn_if_few(threshold: ClassThreshold, cfg: OmniposeConfig) -> ClassThreshold:
    if threshold.image.few:
        warnings.warn(f"{cfg.run.class_name}: the threshold rests on {threshold.image.n_scores} held-out views, "
                      f"fewer than the {int(np.ceil(2 / cfg.predict.max_false_alarm))} that max_false_alarm = "
                      f"{cfg.predict.max_false_alarm:g} needs to be seen twice; it extrapolates a fitted "
                      "distribution. Hold out more views (holdout_every) or give a labelled --validation_dir",
                      stacklevel=2)
    return threshold


def _heldout_threshold(assets: ClassAssets, fingerprint: str, progress: bool) -> ClassThreshold:
    cfg = assets.cfg
    held, fallback = heldout_view_indices(len(assets.views.images), cfg.train.holdout_every,
                                          cfg.score.residual_fallback_views)
    if fallback:
        warnings.warn(f"holdout_every = 0: the threshold of {cfg.run.class_name} is set on {len(held)} views the "
                      "NeRF was trained on; they score lower than new views, so expect more false alarms than "
                      "asked", stacklevel=2)
    # retrieval may not return the view itself: it is scored as a query the class has never seen
    blind = dataclasses.replace(assets, database=WithoutViews(assets.database, held))
    images = np.asarray(assets.views.images)[held]
    scored = _scored(blind, images, f"{cfg.run.class_name} threshold views", progress)
    scores = [s.image_score for s in scored]
    image = false_alarm_threshold(scores, cfg.predict.max_false_alarm, "held-out training views", THRESHOLD_FIT)
    errors = [float(rotation_error_deg(s.pose.refined_pose, assets.views.poses[i])) for s, i in zip(scored, held,
                                                                                                  strict=True)]
    return ClassThreshold(image, image.value, cfg.score.image_pool(), scores, [f"view {i}" for i in held],
                          fingerprint, errors)


def _validation_threshold(assets: ClassAssets, fingerprint: str, progress: bool) -> ClassThreshold:
    cfg = assets.cfg
    folder = Path(cfg.predict.validation_dir)
    samples = load_test_set(folder, downscale=cfg.run.image_downscale, white_bkgd=cfg.run.white_bkgd,
                            allow_empty_masks=cfg.run.allow_empty_masks)
    size = (assets.views.height, assets.views.width)
    if samples[0].image.shape[:2] != size:
        raise DataError(f"{samples[0].path}: validation image is {samples[0].image.shape[1]}x"
                        f"{samples[0].image.shape[0]} but the class's views are {size[1]}x{size[0]}")
    if {s.label for s in samples} != {0, 1}:
        raise DataError(f"{folder / 'test'}: a validation folder needs good and defective images for an F1 "
                        "threshold; leave --validation_dir out to set it on the held-out views")
    scored = _scored(assets, np.stack([s.image for s in samples]), f"{cfg.run.class_name} validation", progress)
    scores = [s.image_score for s in scored]
    image = f1_threshold([s.label for s in samples], scores, f"labelled images of {folder}")
    pixel_value, _ = pixel_roc_curve([s.mask for s in samples], [s.score_map for s in scored],
                                     max_pixels=cfg.evaluation.eval_max_pixels).best_f1()
    return ClassThreshold(image, pixel_value, 1, scores, [s.name for s in samples], fingerprint)


@dataclass
class Prediction:
    photo: Photo
    record: dict         # the saved map's record (pose, scores, seconds)
    threshold: ClassThreshold

    @property
    def raw(self) -> float:
        return float(self.record["image_score"])

    @property
    def defective(self) -> bool:
        return bool(self.threshold.image.defective(self.raw))

    def row(self, mask: np.ndarray) -> dict:
        seconds = self.record.get("seconds") or {}
        return {"file": str(self.photo.path), "name": self.photo.name,
                "verdict": "defective" if self.defective else "good",
                "score": float(self.threshold.image.normalised(self.raw)), "raw_score": self.raw,
                "pose_loss_ratio": self.record.get("pose_loss_ratio"),
                "pose_unsure": bool(self.record.get("pose_unsure")),
                "seconds": float(sum(seconds.values())), "defect_pixels": int(mask.sum()),
                "pose": self.record.get("refined_pose")}


def predict_photos(cfg: OmniposeConfig, inputs: list[str], out_dir: Path, device: torch.device | None = None,
                   progress: bool = True) -> list[dict]:
    """Judge every photo of `inputs` with the trained class `cfg.run.class_name`: maps under out_dir/photos,
    verdicts in out_dir/predictions.{csv,json}, an overlay and a mask per photo; returns the rows."""
    paths = photo_paths(inputs)
    views = class_train_views(cfg, cfg.run.class_dir)
    photos = load_photos(paths, views, cfg)                       # bad photos stop here, before any work
    ensure_writable(out_dir, "output")
    with run_lock(out_dir, f"the predictions of {cfg.run.class_name}"):
        remove_stale_temps(out_dir / PHOTOS)
        assets = load_class(cfg, device, train=False, test_set=False, views=views, progress=progress)
        threshold = class_threshold(assets, progress)
        _make_maps(assets, photos, out_dir, progress)
        return _verdicts(cfg, photos, threshold, out_dir)


def _make_maps(assets: ClassAssets, photos: list[Photo], out_dir: Path, progress: bool) -> None:
    cfg, name = assets.cfg, assets.cfg.run.class_name
    run_json = {"class": name, "identity": run_identity(cfg, used_assets(assets))}
    # after a change every saved photo's map goes, not only this call's: a later call must not reuse one
    stale = [f"{PHOTOS}/{saved.stem}" for saved in (out_dir / PHOTOS).glob("*.json")]
    pending = [n.photo for n in maps_to_make(name, out_dir, run_json, [_Named(p) for p in photos], stale)]
    print(f"[{name}] {len(photos)} photos, {len(photos) - len(pending)} already done")
    description, scorer = assets.backbone.description, cfg.score.scorer_record()
    try:
        with progress_bar(total=len(pending), desc=f"{name} photos", unit="photo", disable=not progress) as bar:
            for start in range(0, len(pending), cfg.inerf.inerf_batch):
                chunk = pending[start:start + cfg.inerf.inerf_batch]
                for photo, s in zip(chunk, score_images(assets, np.stack([p.image for p in chunk])), strict=True):
                    record = {"image_score": s.image_score, "label": None, "defect_type": None,
                              "backbone": description, "scorer": scorer, "image_digest": photo.image_digest,
                              "file": str(photo.path), **s.pose.record(), "seconds": s.seconds}
                    save_result(out_dir, photo.result_name, s.score_map, record, query=photo.image,
                                reference=s.reference, unseen=s.unseen)
                    bar.update(1)
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        made = sum(is_done(out_dir, p.result_name) for p in photos)
        raise Interrupted(f"{made} of {len(photos)} photos have their maps in {out_dir}; rerun the same command "
                          "to make the rest") from None


@dataclass
class _Named:
    """A photo as pipeline.maps_to_make sees a sample: its result name and image hash."""
    photo: Photo

    @property
    def name(self) -> str:
        return self.photo.result_name

    @property
    def image_digest(self) -> str:
        return self.photo.image_digest


def _verdicts(cfg: OmniposeConfig, photos: list[Photo], threshold: ClassThreshold, out_dir: Path) -> list[dict]:
    """Verdict, overlay and mask of every photo from its saved map; predictions.csv / .json; one line each."""
    image = threshold.image
    vmin, vmax = image.value - 0.5 * image.spread, image.value + 0.5 * image.spread   # normalised 0 .. 1
    rows = []
    for photo in photos:
        paths = result_paths(out_dir, photo.result_name)
        prediction = Prediction(photo, load_record(paths.record), threshold)
        amap = load_score_map(paths.map)
        mask = defect_masks(amap[None], threshold.pixel_value, threshold.pixel_pool)[0]
        write_image(paths.overlay, overlay_heatmap(photo.image, amap, vmin, vmax))
        write_image(mask_path(paths.map), mask.astype(np.uint8) * 255)
        row = prediction.row(mask)
        rows.append(row)
        print(console_line(row))
    write_predictions(out_dir, rows, cfg, threshold)
    write_prediction_report(out_dir, rows, cfg, threshold)
    return rows


REPORT_COLUMNS = (("name", "photo"), ("verdict", "verdict"), ("score", "score"), ("raw_score", "raw score"),
                  ("pose_loss_ratio", "pose loss / threshold"), ("pose_unsure", "pose unsure"),
                  ("defect_pixels", "defect pixels"), ("seconds", "seconds"))
REPORT_THUMBNAILS = (("query", "photo"), ("reference", "reference"), ("overlay", "heat map"), ("mask", "mask"))


def write_prediction_report(out_dir: Path, rows: list[dict], cfg: OmniposeConfig, threshold: ClassThreshold) -> Path:
    """report.html beside predictions.csv: the threshold's source and the unsure poses at the top, then a
    sortable row per photo (highest score first) with its photo, reference, heat map and mask."""
    unsure = [r["name"] for r in rows if r["pose_unsure"]]
    defective = sum(r["verdict"] == "defective" for r in rows)
    image = threshold.image
    notes = [f"threshold: {image.source}; raw score {image.value:.4g} = score 0.5"
             + (" (an extrapolation: fewer views than the rate needs)" if image.few else ""),
             f"masks: windows of {threshold.pixel_pool} px averaging above {threshold.pixel_value:.4g}",
             f"{defective} of {len(rows)} photos defective",
             f"unsure poses: {len(unsure)}" + (f" ({', '.join(unsure)})" if unsure else "")]
    table = []
    for row in sorted(rows, key=lambda r: -r["raw_score"]):        # the most defective first
        paths = result_paths(out_dir, f"{PHOTOS}/{row['name']}")
        table.append({**row, "query": paths.query, "reference": paths.reference, "overlay": paths.overlay,
                      "mask": mask_path(paths.map)})
    return write_html_report(out_dir / REPORT_NAME, f"{cfg.run.class_name}: {len(rows)} photos", notes, table,
                             REPORT_COLUMNS, REPORT_THUMBNAILS,
                             row_class=lambda r: [c for c, on in (("defective", r["verdict"] == "defective"),
                                                                  ("unsure", r["pose_unsure"])) if on])


def mask_path(map_path: Path) -> Path:
    return map_path.with_name(f"{map_path.stem}_mask.png")


def console_line(row: dict) -> str:
    ratio = row["pose_loss_ratio"]
    pose = "pose ?" if ratio is None else f"pose loss {ratio:.2f}x threshold" + (" UNSURE" if row["pose_unsure"]
                                                                                   else "")
    return (f"{row['name']}: {row['verdict'].upper():9s} score {row['score']:.2f} (raw {row['raw_score']:.3f}), "
            f"{row['defect_pixels']} defect pixels, {pose}, {row['seconds']:.1f} s")


def write_predictions(out_dir: Path, rows: list[dict], cfg: OmniposeConfig, threshold: ClassThreshold) -> None:
    """predictions.csv (one row per photo, COLUMNS) and predictions.json (the rows with their poses, and the
    threshold with its source), both atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out_dir / f"{PREDICTIONS}.csv", lambda tmp: tmp.write_text(text.getvalue()))
    write_json(out_dir / f"{PREDICTIONS}.json", {
        "class": cfg.run.class_name, "threshold": {**threshold.record(), "source": threshold.image.source},
        "photos": rows})
