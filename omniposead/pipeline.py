"""The OmniposeAD pipeline of one class, in two calls:

    assets = load_class(cfg, device)               # class folder, train views, NeRF, backbone, retrieval, test set
    results = process_batch(assets, samples)        # pose -> reference -> map -> score, one ImageResult each

`run_class` loops over the test images that have no result yet and writes each result atomically
(anomaly.results), so an interrupted run resumes where it stopped. Everything that can be checked is
checked before the expensive work: the whole class (train views, test images, masks, sizes, labels)
and that the checkpoint and output folders can be written. The run identity (omniposead.run_identity:
every option that can change a map, the NeRF's weights hash, ...) is saved in `<output_dir>/run.json`;
when any of it changes, every map is made again and one line names the changed keys (auroc_test.py
reads the data settings from there too).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomaly.residual import ResidualModel
from anomaly.results import (
    discard_result,
    is_done,
    load_run_record,
    save_result,
    save_run_record,
    save_stage_record,
    saved_image_digest,
)
from anomaly.scorer import anomaly_map, image_scores
from common.errors import DataError, Interrupted
from common.io import ensure_writable, remove_stale_temps
from common.lock import run_lock
from common.progress import progress_bar
from common.runtime import resolve_device, seed_everything
from common.stopwatch import StageTimes, peak_rss_gb
from evaluation.plots import overlay_heatmap
from features.backbone import FrozenBackbone, load_backbone
from inerf.estimate import PoseEstimate, estimate_poses
from inerf.global_search import CandidateViews, global_fallback, lost_queries, with_confidence
from mad.layout import GOOD, TRANSFORMS_FILE, resolve_class_dir
from mad.loader import TestSample, TrainViews, load_test_set, load_train_views
from mad.view_subset import select_train_views
from nerf.checkpoint import check_views, checkpoint_path, read_checkpoint, renderer_from_state, weights_digest
from nerf.renderer import NeRFRenderer
from nerf.trainer import NeRFTrainer, TrainSummary
from omniposead.config import OmniposeConfig
from omniposead.pose_calibration import PoseCalibration, load_or_calibrate, load_or_render_candidates
from omniposead.pose_polish import PosePolisher
from omniposead.reference import ReferenceMaker
from omniposead.residual_fit import load_or_fit_residual
from omniposead.run_identity import identity_changes, run_identity
from retrieval.database import CACHE_NAME, DescriptorDatabase, load_or_build_database


def prepare_class(cfg: OmniposeConfig) -> Path:
    """The class folder; generated first by the synthetic generator when the config asks for it
    (`synthesize_if_missing`) and it does not exist."""
    run, synth = cfg.run, cfg.synth
    if synth.synthesize_if_missing and not run.class_dir.exists():
        from mad.synth.generate import generate_class

        print(f"generating synthetic class {run.class_dir} (seed {synth.synth_seed}, {synth.synth_size}px)")
        generate_class(Path(run.data_root), run.class_name, synth)
    return resolve_class_dir(run.data_root, run.class_name)


def class_train_views(cfg: OmniposeConfig, class_dir: Path) -> TrainViews:
    """The class's training views as every stage uses them: loaded, then cut to the `train_views` subset
    (mad.view_subset: farthest-point on the camera centres from a seed-drawn view) when one is asked for."""
    run = cfg.run
    views = load_train_views(class_dir, downscale=run.image_downscale, white_bkgd=run.white_bkgd)
    for problem in cfg.nerf.bound_problems(views.bounds) if views.bounds else []:
        warnings.warn(f"{class_dir / TRANSFORMS_FILE}: {problem}", stacklevel=2)
    subset = select_train_views(views, run.train_views, run.seed)
    if subset is not views:
        print(f"[{run.class_name}] training views: {len(subset.images)} of {len(views.images)} (train_views = "
              f"{run.train_views:g}, farthest-point on the camera centres, seed {run.seed})")
    return subset


def nerf_trainer(cfg: OmniposeConfig, views: TrainViews, device: torch.device, progress: bool = True,
                 state: dict | None = None) -> NeRFTrainer:
    """The class's NeRF trainer, resumed from its checkpoint (or from `state`, the checkpoint already read)."""
    run = cfg.run
    return NeRFTrainer(views, cfg.nerf, cfg.train, checkpoint=checkpoint_path(run.ckpt_dir), white_bkgd=run.white_bkgd,
                       seed=run.seed, device=device, label=run.class_name, progress=progress, state=state)


def train_class(cfg: OmniposeConfig, device: torch.device, progress: bool = True) -> TrainSummary:
    """Generate the class if asked, then train or resume its NeRF (what `python train_nerf.py` does)."""
    seed_everything(cfg.run.seed)
    views = class_train_views(cfg, prepare_class(cfg))
    with training_lock(cfg):
        return nerf_trainer(cfg, views, device, progress).run()


def training_lock(cfg: OmniposeConfig):
    """One training of a class's NeRF at a time (common.lock, under its checkpoint folder): two would both write
    nerf.pt, each resuming from the other's saves."""
    cfg.run.ckpt_dir.mkdir(parents=True, exist_ok=True)
    return run_lock(cfg.run.ckpt_dir, f"the NeRF of {cfg.run.class_name}")


@dataclass
class TrainedNeRF:
    renderer: NeRFRenderer   # frozen
    step: int                # training steps behind it
    digest: str              # content hash of its weights and occupancy grid (nerf.checkpoint.weights_digest)

    @classmethod
    def from_state(cls, state: dict, path: Path, cfg: OmniposeConfig, views: TrainViews,
                   device: torch.device) -> TrainedNeRF:
        """The frozen NeRF of a checkpoint already read from `path`, once it is shown to be trained on `views`
        (nerf.checkpoint.check_views; a training option changed since gets a notice)."""
        check_views(path, state, views)
        note_training_changes(cfg, state, path)
        return cls(renderer_from_state(state, path, cfg.nerf, cfg.run.white_bkgd, device), state["step"],
                   weights_digest(state["model"], state.get("occupancy")))


def note_training_changes(cfg: OmniposeConfig, state: dict, path: Path) -> None:
    """One notice when a training option differs from the one the finished NeRF at `path` was trained with:
    it has no effect on that NeRF unless the user retrains (n_iters only when lowered below the NeRF's step:
    raised, training goes on)."""
    saved = state.get("train")
    if saved is None:
        return
    changes = [change.removeprefix("train.") for change in identity_changes({"train": saved},
                                                                          {"train": cfg.train.identity()})
               if not change.startswith("train.n_iters ") or cfg.train.n_iters < state["step"]]
    if changes:
        print(f"note: training options changed since the NeRF in {path} was trained ({'; '.join(changes)}): "
              f"they have no effect on it unless you retrain (move {path} away)")


def ensure_trained(cfg: OmniposeConfig, views: TrainViews, device: torch.device,
                   progress: bool = True) -> TrainedNeRF:
    """The class's frozen renderer; trains or resumes first unless the checkpoint has n_iters steps (training
    holds the class's training lock, and reads the checkpoint again under it). A run stopped by its time budget
    goes on with the NeRF it has (with a warning); the next run continues the training."""
    path = checkpoint_path(cfg.run.ckpt_dir)
    state = read_checkpoint(path, device) if path.is_file() else None
    if state is not None and state["step"] >= cfg.train.n_iters:
        return TrainedNeRF.from_state(state, path, cfg, views, device)
    with training_lock(cfg):
        state = read_checkpoint(path, device) if path.is_file() else None   # again: a run may have just ended
        if state is not None and state["step"] >= cfg.train.n_iters:
            return TrainedNeRF.from_state(state, path, cfg, views, device)
        trainer = nerf_trainer(cfg, views, device, progress, state)
        summary = trainer.run()
    if summary.stop_reason == "budget":
        warnings.warn(f"NeRF training of {cfg.run.class_name} stopped by max_train_minutes at step {summary.step} "
                      f"of {cfg.train.n_iters}; using it now, the next run continues the training "
                      "(and then makes the maps again)", stacklevel=2)
    return TrainedNeRF(trainer.frozen_renderer(), summary.step, trainer.weights_digest())


@dataclass
class ClassAssets:
    """Everything the per-image work of one class needs, loaded once."""
    cfg: OmniposeConfig
    device: torch.device
    class_dir: Path
    views: TrainViews
    test_set: list[TestSample]
    renderer: NeRFRenderer
    nerf_step: int
    nerf_digest: str
    backbone: FrozenBackbone
    database: DescriptorDatabase
    reference: ReferenceMaker                # the anomaly-free reference at a pose (omniposead.reference)
    residual: ResidualModel | None = None  # the NeRF's normal-residual model (score_normalization = residual)
    pose_calibration: PoseCalibration | None = None  # the pose-unsure threshold (omniposead.pose_calibration)
    _candidates: CandidateViews | None = None        # the global fallback's renders, made when first needed
    clock: StageTimes = field(default_factory=StageTimes)  # wall seconds of each stage so far
    _polisher: PosePolisher | None = None            # the photometric pose polish, made when first needed

    def candidates(self, progress: bool = True) -> CandidateViews:
        if self._candidates is None:
            self._candidates = load_or_render_candidates(self.cfg, self.views, self.renderer, self.nerf_digest,
                                                         self.device, progress)
        return self._candidates

    def polisher(self) -> PosePolisher:
        if self._polisher is None:
            self._polisher = PosePolisher(self.reference, self.cfg.inerf)
        return self._polisher


def check_test_set(test_set: list[TestSample], views: TrainViews, class_dir: Path, require_labels: bool) -> None:
    """Errors the pipeline would otherwise meet after hours of compute: test images of another size than
    the training views, and (when the class is to be evaluated) a test set without both labels."""
    first = test_set[0]
    problems = []
    if first.image.shape[:2] != (views.height, views.width):
        problems.append(f"{first.path}: test image is {first.image.shape[1]}x{first.image.shape[0]} but the training "
                        f"views are {views.width}x{views.height} (all test images share one size)")
    labels = {s.label for s in test_set}
    if require_labels and labels != {0, 1}:
        only = "good" if labels == {0} else "defective"
        problems.append(f"{class_dir / 'test'}: test set has only {only} images, so AUROCs cannot be computed "
                        f"(needs test/{GOOD}/ and at least one defect folder); pass --evaluate false to make "
                        "maps without evaluating")
    if problems:
        raise DataError("\n".join(problems))


def load_class(cfg: OmniposeConfig, device: torch.device | None = None, *, train: bool = True,
               require_labels: bool = False, progress: bool = True, poses: bool = True,
               test_set: bool = True, views: TrainViews | None = None) -> ClassAssets:
    """Load (and, with `train`, generate and train as needed) everything of the class `cfg.run.class_name`.
    The class is validated first, so a bad file stops the run before any training. Without `train` a
    missing checkpoint is an error. Without `poses` the pose-unsure threshold is not calibrated (for work
    that estimates no pose); without `test_set` the class's test folder is not read (new photos are scored).
    `views`: the class's training views when the caller has loaded them already (class_train_views)."""
    device = resolve_device(cfg.run.device) if device is None else device
    run = cfg.run
    seed_everything(run.seed)
    clock = StageTimes()
    with clock.stage("data"):
        class_dir = prepare_class(cfg) if train else resolve_class_dir(run.data_root, run.class_name)
        views = class_train_views(cfg, class_dir) if views is None else views
        samples = load_test_set(class_dir, downscale=run.image_downscale, white_bkgd=run.white_bkgd,
                                allow_empty_masks=run.allow_empty_masks) if test_set else []
        if samples:
            check_test_set(samples, views, class_dir, require_labels)
        ensure_writable(run.ckpt_dir, "checkpoint")
        remove_stale_temps(run.ckpt_dir)
    with clock.stage("backbone"):
        backbone = load_backbone(cfg.backbone, device)     # before training: missing weights are found in seconds
    with clock.stage("nerf"):
        if train:
            nerf = ensure_trained(cfg, views, device, progress)
        else:
            path = checkpoint_path(run.ckpt_dir)
            nerf = TrainedNeRF.from_state(read_checkpoint(path, device), path, cfg, views, device)
    with clock.stage("retrieval"):
        database = load_or_build_database(cfg.retrieval, backbone, views, device, run.ckpt_dir / CACHE_NAME)
    reference = ReferenceMaker(nerf.renderer, views, cfg.score, cfg.train.holdout_every, device)
    with clock.stage("residual"):
        residual = (load_or_fit_residual(cfg, views, reference, backbone, device, progress)
                    if cfg.score.score_normalization == "residual" else None)
    with clock.stage("pose calibration"):
        calibration = load_or_calibrate(cfg, views, nerf.renderer, nerf.digest, device) if poses else None
    return ClassAssets(cfg, device, class_dir, views, samples, nerf.renderer, nerf.step, nerf.digest, backbone,
                       database, reference, residual, calibration, clock=clock)


def estimate_batch_poses(assets: ClassAssets, images: np.ndarray, progress: bool = False) -> list[PoseEstimate]:
    """Retrieval + iNeRF poses of query images [B,H,W,3] with the class's settings; a query whose loss stays
    above the calibrated threshold is searched globally (pose_fallback), every pose gets its confidence, and with
    pose_polish_steps each is polished against the nearest training photographs (omniposead.pose_polish)."""
    cfg = assets.cfg
    poses = estimate_poses(assets.renderer, assets.database, assets.views, images, cfg.inerf, assets.device,
                           retrieval_topk=cfg.retrieval.retrieval_topk, seed=cfg.run.seed, progress=progress)
    if assets.pose_calibration is not None:
        threshold = assets.pose_calibration.threshold
        if cfg.inerf.pose_fallback and lost_queries(poses, threshold):
            poses = global_fallback(assets.renderer, assets.candidates(progress), images, poses, threshold,
                                    assets.views.intrinsics, cfg.inerf, assets.device, seed=cfg.run.seed)
        poses = with_confidence(poses, threshold)
    return assets.polisher()(poses, images) if cfg.inerf.pose_polish_steps > 0 else poses


@dataclass
class ScoredImage:
    """One query image through the pipeline: its pose, reference, map and score."""
    pose: PoseEstimate
    reference: np.ndarray      # [H,W,3] float32 in [0,1]: the anomaly-free reference at the refined pose
    score_map: np.ndarray      # [H,W] float32
    image_score: float
    seconds: dict[str, float]  # per image: pose, render, score
    unseen: np.ndarray | None          # [H,W] bool: the reprojected reference's pixels no training view sees


@dataclass
class ImageResult(ScoredImage):
    """One test image through the pipeline."""
    sample: TestSample

    def record(self, backbone: str, scorer: dict) -> dict:
        """The JSON record written beside the map (anomaly.results); `scorer`: ScoreOptions.scorer_record()."""
        return {"image_score": self.image_score, "label": self.sample.label,
                "defect_type": self.sample.defect_type, "backbone": backbone, "scorer": scorer,
                "image_digest": self.sample.image_digest,
                **self.pose.record(), "seconds": self.seconds}


def to_chw(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().to(device)


def process_batch(assets: ClassAssets, samples: list[TestSample], progress: bool = False) -> list[ImageResult]:
    """Pose -> reference render -> anomaly map -> image score for a batch of test images
    (progress: a bar over the iNeRF steps)."""
    scored = score_images(assets, np.stack([sample.image for sample in samples]), progress)
    return [ImageResult(**vars(s), sample=sample) for s, sample in zip(scored, samples, strict=True)]


def score_images(assets: ClassAssets, images: np.ndarray, progress: bool = False) -> list[ScoredImage]:
    """Pose -> reference render -> anomaly map -> image score for a batch of query images [B,H,W,3] at the
    training size (progress: a bar over the iNeRF steps)."""
    cfg, device = assets.cfg, assets.device
    t0 = time.perf_counter()
    poses = estimate_batch_poses(assets, images, progress=progress)
    t1 = time.perf_counter()
    made = [assets.reference.with_unseen(p.refined_pose, image) for p, image in zip(poses, images, strict=True)]
    references = torch.stack([reference for reference, _ in made]).permute(0, 3, 1, 2)
    unseen = None if made[0][1] is None else torch.stack([u for _, u in made])
    t2 = time.perf_counter()
    maps = anomaly_map(assets.backbone, to_chw(images, device), references, cfg.score, residual=assets.residual,
                       unseen=unseen)
    scores = image_scores(maps, cfg.score.image_pool())
    t3 = time.perf_counter()
    n = len(images)
    seconds = {"pose": (t1 - t0) / n, "render": (t2 - t1) / n, "score": (t3 - t2) / n}
    references_np = references.permute(0, 2, 3, 1).cpu().numpy()
    maps_np = maps.cpu().numpy()
    unseen_np = [None] * n if unseen is None else list(unseen.cpu().numpy())
    return [ScoredImage(pose, references_np[i], maps_np[i], float(scores[i]), dict(seconds), unseen_np[i])
            for i, pose in enumerate(poses)]


def used_assets(assets: ClassAssets) -> dict:
    """What the maps are made with beyond the options (the `used` part of the run identity)."""
    return {"nerf_weights": assets.nerf_digest, "nerf_step": assets.nerf_step,
            "backbone": assets.backbone.description, "retrieval_database": assets.database.fingerprint,
            "residual_model": assets.residual.fingerprint if assets.residual is not None else None,
            "device": assets.device.type}


def run_record(assets: ClassAssets) -> dict:
    """The run.json of the class's maps: their identity, plus data_root and the loading settings at the top
    level, which the evaluation reads back (evaluation.class_evaluation, auroc_test.py)."""
    run = assets.cfg.run
    return {"data_root": str(run.data_root), **run.loading_settings(),
            "identity": run_identity(assets.cfg, used_assets(assets)),
            "pose_calibration": assets.pose_calibration.record() if assets.pose_calibration else None}


@dataclass
class ClassMaps:
    """What run_class made: the output folder, and the test set it loaded (for the evaluation to reuse)."""
    out_dir: Path
    test_set: list[TestSample]


def keep_current(name: str, out_dir: Path, done: list[TestSample]) -> list[TestSample]:
    """The samples of `done` whose saved map was made from today's test image; the others (replaced since, or
    a map made before images were hashed) are discarded, with one line naming them, to be made again."""
    stale = [s for s in done if saved_image_digest(out_dir, s.name) != s.image_digest]
    stale_names = {s.name for s in stale}
    if stale:
        print(f"[{name}] {len(stale)} test image(s) differ from the ones their maps were made from "
              f"({', '.join(s.name for s in stale[:5])}{', ...' if len(stale) > 5 else ''}): making their maps again")
    for sample in stale:
        discard_result(out_dir, sample.name)
    return [s for s in done if s.name not in stale_names]


def maps_to_make(name: str, out_dir: Path, record: dict, samples: list, stale: Iterable[str]) -> list:
    """The samples (anything with a result name `.name` and an `.image_digest`) whose maps must be made, once
    out_dir's run.json holds `record`: when its saved identity differs, one line names the changes and the saved
    results that `stale` names are discarded first (before the new run.json: an interrupted remake resumes
    correctly), and every sample is made; otherwise the samples not done, or done from another image
    (keep_current)."""
    saved = load_run_record(out_dir)
    changes = identity_changes(saved.get("identity"), record["identity"]) if saved is not None else []
    if changes:
        print(f"[{name}] changed since the saved maps: {'; '.join(changes)}: making every map again")
        for result in stale:
            discard_result(out_dir, result)
    save_run_record(out_dir, record)
    done = [] if changes else [s for s in samples if is_done(out_dir, s.name)]
    done_names = {s.name for s in keep_current(name, out_dir, done)}
    return [s for s in samples if s.name not in done_names]


def run_class(cfg: OmniposeConfig, device: torch.device | None = None, progress: bool = True) -> ClassMaps:
    """Write the anomaly maps of every test image of `cfg.run.class_name`; one run per class at a time (a lock
    under its output folder: common.lock)."""
    out_dir = cfg.run.output_dir
    ensure_writable(out_dir, "output")
    with run_lock(out_dir, f"the maps of {cfg.run.class_name}"):
        return _run_class(cfg, out_dir, device, progress)


def _run_class(cfg: OmniposeConfig, out_dir: Path, device: torch.device | None, progress: bool) -> ClassMaps:
    remove_stale_temps(out_dir)
    assets = load_class(cfg, device, require_labels=cfg.pipeline.evaluate, progress=progress)
    pending = maps_to_make(cfg.run.class_name, out_dir, run_record(assets), assets.test_set,
                           [s.name for s in assets.test_set])
    name, description = cfg.run.class_name, assets.backbone.description
    total = len(assets.test_set)
    print(f"[{name}] {total} test images, {total - len(pending)} already done, backbone: {description}")
    batch, scorer = cfg.inerf.inerf_batch, cfg.score.scorer_record()
    unsure: list[str] = []
    searched = 0
    try:
        with assets.clock.stage("maps"), progress_bar(total=len(pending), desc=f"{name} maps", unit="img",
                                                      disable=not progress) as bar:
            for start in range(0, len(pending), batch):
                chunk = pending[start:start + batch]
                bar.set_postfix_str(f"images {start + 1}-{start + len(chunk)}: pose, reference, map")
                for result in process_batch(assets, chunk, progress=progress):
                    image, amap = result.sample.image, result.score_map
                    # Preview overlay on this image's own scale; auroc_test.py redraws it on the class scale.
                    overlay = (overlay_heatmap(image, amap, 0.0, float(amap.max()) or 1.0)
                               if cfg.evaluation.save_overlays else None)
                    save_result(out_dir, result.sample.name, amap, result.record(description, scorer),
                                query=image, reference=result.reference, overlay=overlay, unseen=result.unseen)
                    unsure += [result.sample.name] if result.pose.unsure else []
                    searched += int(result.pose.fallback_tried)
                    bar.update(1)
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        done = sum(is_done(out_dir, sample.name) for sample in assets.test_set)
        raise Interrupted(f"{done} of {total} test images of {name} have their results in {out_dir}; rerun the "
                          "same command to make the rest") from None
    if pending and assets.pose_calibration is not None:
        print(f"[{name}] poses: {len(pending) - len(unsure)} of {len(pending)} sure, {len(unsure)} unsure"
              + (f" ({', '.join(unsure)})" if unsure else "") + f"; global search for {searched} "
              f"(threshold {assets.pose_calibration.threshold:.3g} = {cfg.inerf.pose_unsure_factor:g} x the "
              f"held-out median {assets.pose_calibration.median_loss:.3g})")
    save_stage_record(out_dir, assets.clock, len(pending))
    print(f"[{name}] stages: {assets.clock.line()}"
          + (f" ({assets.clock.seconds['maps'] / len(pending):.2f} s per map made)" if pending else "")
          + f"; peak memory {peak_rss_gb():.2f} GB")
    return ClassMaps(out_dir, assets.test_set)
