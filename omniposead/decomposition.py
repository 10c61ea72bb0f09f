"""Where quality is lost: the class's test set scored against three references, with the config's scorer.

* oracle          the generator's anomaly-free render at the true test pose (generated classes only:
                  <class>/synth_stats.json and test_poses.json; class_scene(seed, ...) + render_view);
* nerf_true_pose  the class's NeRF rendered at the true test pose (any class with test_poses.json);
* pipeline        the references the pipeline saved (outputs/<dataset>/<class>/<defect>/<stem>_ref.png,
                  rendered at the retrieval + iNeRF pose by anomaly_nerf_lego.py).

oracle -> nerf_true_pose is what the NeRF's fidelity costs, nerf_true_pose -> pipeline what the pose
costs. Every row is scored with the same scorer options (protocol, normalisation, stages, weights), so
the same tool gives the table for each scorer. Only the NeRF checkpoint and the class data are needed;
nothing is retrained, and the pipeline's per-image results are read, never written: the table goes to
outputs/<dataset>/<class>/decomposition.json, one entry per scorer variant.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from anomaly.results import result_paths
from anomaly.scorer import anomaly_map
from common.camera import Intrinsics
from common.io import write_json
from evaluation.class_evaluation import ScoredSet
from evaluation.metrics import evaluate
from evaluation.report import METRIC_HEADERS, TABLE_KEYS, metric_cell
from mad.capture import CAPTURE_RECORD
from mad.images import read_image_file
from mad.layout import GOOD, TEST_POSES_FILE
from mad.loader import TestSample
from omniposead.config import OmniposeConfig
from omniposead.pipeline import load_class
from omniposead.pose_accuracy import load_test_poses

ROWS = ("oracle", "nerf_true_pose", "pipeline")
DECOMPOSITION_FILE = "decomposition.json"
SYNTH_STATS_FILE = "synth_stats.json"
METRICS = TABLE_KEYS            # pixel / image AUROC, pixel AUPRO, pixel F1 (evaluation.report)


def scorer_key(cfg: OmniposeConfig) -> str:
    """The scorer variant a table belongs to, e.g. 'paper/none', 'official/none', 'paper/residual', and
    'paper/residual/reprojected' when the reference is the warped training views (the NeRF's render is the
    paper's and names no suffix)."""
    key = f"{cfg.score.score_protocol}/{cfg.score.score_normalization}"
    return key if cfg.score.reference == "nerf" else f"{key}/{cfg.score.reference}"


def oracle_references(class_dir: Path, samples: list[TestSample], intrinsics: Intrinsics) -> np.ndarray | None:
    """The perfect anomaly-free reference [N,H,W,3] of each test sample, where the class has one: for a generated
    class the generator's renders at the true test poses, with its settings from synth_stats.json (seed, texture,
    supersampling; the generator's camera is a centred pinhole, so only the focal length fx is passed on); for a
    class made from a real capture (mad.capture) the photograph the defect was painted on, as its good test image
    (a good image is its own oracle in both). None for any other class."""
    if (class_dir / CAPTURE_RECORD).is_file():
        good = {s.name.split("/")[-1]: s.image for s in samples if s.defect_type == GOOD}
        return np.stack([good[s.name.split("/")[-1]] for s in samples]).astype(np.float32)
    stats_path = class_dir / SYNTH_STATS_FILE
    if not stats_path.is_file() or not (class_dir / TEST_POSES_FILE).is_file():
        return None
    names = [s.name for s in samples]
    height, width = samples[0].image.shape[:2]
    from mad.synth.detail import class_scene
    from mad.synth.render import render_view

    stats = json.loads(stats_path.read_text())
    scene = class_scene(int(stats["seed"]), textured=bool(stats.get("textured", False)),
                        detail=bool(stats.get("detail", False)), objects=int(stats.get("objects", 0)))
    truth = load_test_poses(class_dir)
    renders = [render_view(scene, np.asarray(truth[name], dtype=np.float64), height, width, intrinsics.fx,
                           int(stats.get("supersample", 1))) for name in names]
    return np.stack(renders).astype(np.float32) / 255.0


class References(NamedTuple):
    """References [N,H,W,3] in [0,1] and, for the reprojected reference, the pixels [N,H,W] bool no training view
    sees (the map is weighed down there: ScoreOptions.reference_unseen_power); None for any other reference."""
    images: np.ndarray
    unseen: np.ndarray | None = None


def make_references(reference, poses, images: np.ndarray) -> References:
    """The class's references (omniposead.reference.ReferenceMaker: the NeRF's render, or the warped training
    views) at camera-to-world `poses` [N,4,4] for the images `images` [N,H,W,3]."""
    made = [reference.with_unseen(pose, image) for pose, image in zip(poses, images, strict=True)]
    unseen = None if made[0][1] is None else np.stack([u.cpu().numpy() for _, u in made])
    return References(np.stack([r.cpu().numpy() for r, _ in made]), unseen)


def nerf_references(reference, class_dir: Path, names: list[str], images: np.ndarray) -> References | None:
    """The class's references for the test images `images` [N,H,W,3] at their true poses; None without
    test_poses.json."""
    if not (class_dir / TEST_POSES_FILE).is_file():
        return None
    truth = load_test_poses(class_dir)
    return make_references(reference, [truth[name] for name in names], images)


def pipeline_references(out_dir: Path, names: list[str], white_bkgd: bool) -> References | None:
    """The references the pipeline saved, with their unseen pixels where every one has them; None unless every
    test image has a reference."""
    paths = [result_paths(out_dir, name) for name in names]
    if not all(p.reference.is_file() for p in paths):
        return None
    unseen = (np.stack([read_image_file(p.unseen)[..., 0] > 0.5 for p in paths])
              if all(p.unseen.is_file() for p in paths) else None)
    return References(np.stack([read_image_file(p.reference, white_bkgd) for p in paths]), unseen)


def reference_maps(cfg: OmniposeConfig, backbone, residual, images: np.ndarray, references: References, device,
                   batch: int = 8) -> list[np.ndarray]:
    """The config's anomaly maps [H,W] of the test images [N,H,W,3] scored against `references` (their unseen
    pixels weighed as the config says)."""
    maps, unseen = [], references.unseen
    for start in range(0, len(images), batch):
        query, ref = (torch.from_numpy(np.ascontiguousarray(x[start:start + batch])).permute(0, 3, 1, 2).float()
                      .to(device) for x in (images, references.images))
        hidden = None if unseen is None else torch.from_numpy(unseen[start:start + batch]).to(device)
        maps.extend(anomaly_map(backbone, query, ref, cfg.score, residual=residual, unseen=hidden).cpu().numpy())
    return maps


def score_maps(cfg: OmniposeConfig, maps: list[np.ndarray], masks: list[np.ndarray], defect_types: list[str],
               image_scores: np.ndarray | None = None) -> dict:
    """METRICS and per_defect of a test set's maps, by the config's protocol (evaluation.class_evaluation.ScoredSet:
    image score = max of the average-pooled map) unless the method gives its own `image_scores`."""
    scored = ScoredSet.from_maps(maps, masks, cfg.score.score_protocol, cfg.score.image_score_pool)
    scores = scored.scores if image_scores is None else np.asarray(image_scores, dtype=np.float64)
    result = evaluate(defect_types, scores, scored.masks, scored.maps, fpr_limit=cfg.evaluation.aupro_fpr,
                      max_pixels=cfg.evaluation.eval_max_pixels, seed=cfg.run.seed)
    return {**{key: result[key] for key in METRICS}, "per_defect": result["per_defect"]}


def score_references(cfg: OmniposeConfig, backbone, residual, images: np.ndarray, references: References,
                     masks: list[np.ndarray], defect_types: list[str], device, batch: int = 8) -> dict:
    """Pixel AUROC, image AUROC, pixel AUPRO and pixel F1 of the test images scored against `references`."""
    maps = reference_maps(cfg, backbone, residual, images, references, device, batch)
    result = score_maps(cfg, maps, masks, defect_types)
    return {key: result[key] for key in METRICS}


def decompose_class(cfg: OmniposeConfig, device=None, progress: bool = True) -> dict:
    """The decomposition table of `cfg.run.class_name` for the config's scorer: {row: metrics or None}.
    The class is loaded by the pipeline's loader (load_class, without training: the checkpoint must exist)."""
    run = cfg.run
    assets = load_class(cfg, device, train=False, progress=progress, poses=False)
    views, test_set = assets.views, assets.test_set
    names = [s.name for s in test_set]
    images = np.stack([s.image for s in test_set])
    oracle = oracle_references(assets.class_dir, test_set, views.intrinsics)
    references = {
        "oracle": None if oracle is None else References(oracle),
        "nerf_true_pose": nerf_references(assets.reference, assets.class_dir, names, images),
        "pipeline": pipeline_references(run.output_dir, names, run.white_bkgd),
    }
    masks, defect_types = [s.mask for s in test_set], [s.defect_type for s in test_set]
    rows = {row: (None if refs is None else score_references(cfg, assets.backbone, assets.residual, images, refs,
                                                             masks, defect_types, assets.device))
            for row, refs in references.items()}
    return {"class": run.class_name, "dataset": run.dataset_name, "scorer": cfg.score.scorer_record(),
            "backbone": assets.backbone.description, "n_images": len(test_set),
            "n_good": sum(t == GOOD for t in defect_types), "rows": rows}


def format_table(table: dict) -> str:
    """Markdown table of one decomposition (rows without a reference say why)."""
    why = {"oracle": "not a generated class", "nerf_true_pose": "no test_poses.json",
           "pipeline": "no saved references: run anomaly_nerf_lego.py first"}
    scorer = table["scorer"]
    lines = [(f"{table['class']} ({table['n_images']} test images, {table['n_good']} good), scorer "
              f"{scorer['score_protocol']}/{scorer['score_normalization']}, backbone: {table['backbone']}"),
             "", "| reference |" + "".join(f" {METRIC_HEADERS[k]} |" for k in METRICS),
             "|---|" + "---:|" * len(METRICS)]
    for row in ROWS:
        metrics = table["rows"].get(row)
        cells = ([metric_cell(metrics.get(k)) for k in METRICS] if metrics
                 else [f"n/a ({why[row]})"] + [""] * (len(METRICS) - 1))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_decomposition(path: Path, key: str, table: dict) -> dict:
    """Add (or replace) the table of scorer variant `key` in the JSON at `path`, atomically; returns it all."""
    path = Path(path)
    content = {}
    if path.is_file():
        try:
            content = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            content = {}
    content.setdefault("variants", {})[key] = table
    write_json(path, content)
    return content
