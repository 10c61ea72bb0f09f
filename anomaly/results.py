"""On-disk layout of per-image results, shared by the pipeline (writer) and auroc_test.py (reader).

For the test sample named ``<defect_type>/<stem>`` (mad.loader.TestSample.name) of a class, inside
``out_dir = outputs/<dataset>/<class>/`` (common.run.RunOptions.output_dir):

    <defect_type>/<stem>.npy          float32 [H,W] anomaly map at the full query resolution (score_protocol
                                      'official': the raw map at the script's 224-px size, before the
                                      test-set min-max normalisation, which auroc_test.py applies)
    <defect_type>/<stem>.json         record: at least image_score, label, defect_type, backbone (+ scorer:
                                      the scorer settings, ScoreOptions.scorer_record; + image_digest: the
                                      content hash of the test image the map was made from)
                                      (+ name, added here, and any pipeline extras: poses, losses...)
    <defect_type>/<stem>_query.png    the query image (optional)
    <defect_type>/<stem>_ref.png      the NeRF reference rendered at the refined pose (optional)
    <defect_type>/<stem>_overlay.png  heat-map overlay (optional; auroc_test.py rewrites it with the
                                      class-wide colour scale, see evaluation.plots)

Class-level files: run.json (written by the pipeline: the run identity the maps were made with, and the
data settings read back by auroc_test.py), metrics.json, roc.png, qualitative.png (written by the evaluation).
A result is *done* when both its .npy and .json exist. save_result writes every file atomically
and the .json last, so an interrupted run never leaves a result that looks done but is not.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from common.errors import DataError
from common.io import write_image, write_json, write_npy
from common.stopwatch import peak_rss_gb
from mad.layout import sample_order_key

REQUIRED_KEYS = ("image_score", "label", "defect_type", "backbone")
RUN_RECORD = "run.json"
STAGE_RECORD = "stages.json"


@dataclass(frozen=True)
class ResultPaths:
    map: Path        # .npy score map
    record: Path     # .json record
    query: Path      # _query.png
    reference: Path  # _ref.png
    overlay: Path    # _overlay.png
    unseen: Path     # _unseen.png: the reprojected reference's pixels no training view sees


@dataclass
class SavedResult:
    name: str
    record: dict
    paths: ResultPaths

    @property
    def defect_type(self) -> str:
        return self.record["defect_type"]

    @property
    def label(self) -> int:
        return int(self.record["label"])

    def load_map(self) -> np.ndarray:
        return load_score_map(self.paths.map)


def result_paths(out_dir: str | Path, sample_name: str) -> ResultPaths:
    """Paths of one sample's result files; `sample_name` is ``<defect_type>/<stem>``."""
    parts = PurePosixPath(sample_name).parts
    if len(parts) != 2 or any(p in ("", ".", "..") for p in parts) or sample_name.startswith("/"):
        raise DataError(f"sample name {sample_name!r} is not of the form '<defect_type>/<stem>'")
    base = Path(out_dir) / parts[0]
    stem = parts[1]
    return ResultPaths(
        map=base / f"{stem}.npy",
        record=base / f"{stem}.json",
        query=base / f"{stem}_query.png",
        reference=base / f"{stem}_ref.png",
        overlay=base / f"{stem}_overlay.png",
        unseen=base / f"{stem}_unseen.png",
    )


def is_done(out_dir: str | Path, sample_name: str) -> bool:
    """True when the sample's record (.json) and score map (.npy) are both present and the map reads as a finite
    2-D map: an unreadable or non-finite map counts as not done, so the next run remakes it instead of every
    later evaluation failing on it."""
    paths = result_paths(out_dir, sample_name)
    if not (paths.record.is_file() and paths.map.is_file()):
        return False
    try:
        return bool(np.isfinite(load_score_map(paths.map)).all())
    except DataError:
        return False


def saved_image_digest(out_dir: str | Path, sample_name: str) -> str | None:
    """The content hash of the test image a saved map was made from (its record's image_digest); None when the
    record is unreadable or predates the hash."""
    try:
        return load_record(result_paths(out_dir, sample_name).record).get("image_digest")
    except DataError:
        return None


def discard_result(out_dir: str | Path, sample_name: str) -> None:
    """Remove one sample's result files, the JSON record first (so it no longer counts as done even if
    interrupted half-way): maps made with other settings must not survive a remake."""
    paths = result_paths(out_dir, sample_name)
    for path in (paths.record, paths.map, paths.query, paths.reference, paths.overlay):
        path.unlink(missing_ok=True)


def save_result(out_dir: str | Path, sample_name: str, score_map, record: dict[str, Any], *,
                query: np.ndarray | None = None, reference: np.ndarray | None = None,
                overlay: np.ndarray | None = None, unseen: np.ndarray | None = None) -> ResultPaths:
    """Write one sample's results atomically (images and map first, the JSON record last).

    `score_map`: [H,W] (numpy or torch; stored float32). `record` must hold image_score, label,
    defect_type and backbone; JSON-serialisable extras (numpy arrays become lists) are kept.
    Images: [H,W,3] float in [0,1] or uint8 (numpy or torch, any device). `unseen` [H,W] bool (the reprojected
    reference's pixels no training view sees) is written as a 0/255 PNG.
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"result record for {sample_name} lacks {missing}")
    score_map = _numpy(score_map).astype(np.float32, copy=False)
    if score_map.ndim != 2:
        raise ValueError(f"score map for {sample_name} must be [H,W], got shape {score_map.shape}")
    paths = result_paths(out_dir, sample_name)
    for image, path in ((query, paths.query), (reference, paths.reference), (overlay, paths.overlay)):
        if image is not None:
            write_image(path, _numpy(image))
    if unseen is not None:
        write_image(paths.unseen, np.where(_numpy(unseen), 255, 0).astype(np.uint8))
    write_npy(paths.map, score_map)
    write_json(paths.record, {"name": sample_name, **record})
    return paths


def save_run_record(out_dir: str | Path, record: dict) -> None:
    """Write run.json: what a class's maps were made with (omniposead.pipeline.run_record: data_root and the
    loading settings at the top level, the run identity under "identity")."""
    write_json(Path(out_dir) / RUN_RECORD, record)


def save_stage_record(out_dir: str | Path, clock, maps_made: int) -> None:
    """Write stages.json: this run's wall seconds per stage (common.stopwatch.StageTimes: what was loaded,
    trained or made in this run; a reused checkpoint costs little), how many maps it made and the process's peak
    memory."""
    write_json(Path(out_dir) / STAGE_RECORD, {"seconds": dict(clock.seconds), "maps_made": int(maps_made),
                                              "peak_rss_gb": peak_rss_gb()})


def load_run_record(out_dir: str | Path) -> dict | None:
    """The run.json saved with a class's maps, or None when there is none; DataError when unreadable."""
    path = Path(out_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the settings the maps were made with ({err})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: the settings record is not a JSON object")
    return record


def load_record(path: str | Path) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read result record ({err})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: result record is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise DataError(f"{path}: result record lacks {', '.join(missing)}")
    return record


def scorer_of(record: dict) -> dict:
    """The scorer settings stored in a result record (ScoreOptions.scorer_record); records written before
    they were stored were scored with the paper's protocol, unnormalised."""
    return record.get("scorer") or {"score_protocol": "paper", "score_normalization": "none"}


def load_score_map(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        amap = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read score map ({err})") from None
    if amap.ndim != 2:
        raise DataError(f"{path}: score map must be 2-D [H,W], got shape {amap.shape}")
    return amap.astype(np.float32, copy=False)


def load_results(out_dir: str | Path) -> list[SavedResult]:
    """Every finished result under `out_dir`, in the order of mad.loader.load_test_set
    (mad.layout.sample_order_key). Maps are loaded lazily."""
    out_dir = Path(out_dir)
    results = []
    if not out_dir.is_dir():
        return results
    for json_path in out_dir.glob("*/*.json"):
        name = f"{json_path.parent.name}/{json_path.stem}"
        paths = result_paths(out_dir, name)
        if not paths.map.is_file():
            continue
        record = load_record(json_path)
        record.setdefault("name", name)
        results.append(SavedResult(name=name, record=record, paths=paths))
    results.sort(key=lambda r: sample_order_key(*r.name.split("/", 1)))
    return results


def _numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, possibly on the GPU
        array = array.detach().float().cpu().numpy() if array.is_floating_point() else array.detach().cpu().numpy()
    return np.asarray(array)
