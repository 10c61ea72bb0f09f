"""The OmniposeAD pipeline of one class, in two calls:

    assets = load_class(cfg, device)               # class folder, train views, NeRF, backbone, retrieval, test set
    results = process_batch(assets, samples)        # pose -> reference -> map -> score, one ImageResult each

`run_class` loops over the test images that have no result yet and writes each result atomically
(anomaly.results), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from anomaly.results import is_done, save_result
from anomaly.scorer import anomaly_map, image_scores
from common.runtime import resolve_device, seed_everything
from data.mad import TestSample, TrainViews, load_test_set, load_train_views, resolve_class_dir
from evaluation.plots import overlay_heatmap
from features.backbone import FrozenBackbone, load_backbone
from inerf.estimate import PoseEstimate, estimate_poses
from nerf.checkpoint import checkpoint_path, read_checkpoint, renderer_from_state
from nerf.renderer import NeRFRenderer
from nerf.trainer import NeRFTrainer, TrainSummary
from omniposead.config import OmniposeConfig
from retrieval.database import CACHE_NAME, DescriptorDatabase, load_or_build_database


def prepare_class(cfg: OmniposeConfig) -> Path:
    """The class folder; generated first by the synthetic generator when the config asks for it
    (`synthesize_if_missing`) and it does not exist."""
    run, synth = cfg.run, cfg.synth
    if synth.synthesize_if_missing and not run.class_dir.exists():
        from data.synth.generate import generate_class

        print(f"generating synthetic class {run.class_dir} (seed {synth.synth_seed}, {synth.synth_size}px)")
        generate_class(Path(run.data_root), run.class_name, synth)
    return resolve_class_dir(run.data_root, run.class_name)


def nerf_trainer(cfg: OmniposeConfig, views: TrainViews, device: torch.device, progress: bool = True,
                 state: dict | None = None) -> NeRFTrainer:
    """The class's NeRF trainer, resumed from its checkpoint (or from `state`, the checkpoint already read)."""
    run = cfg.run
    return NeRFTrainer(views, cfg.nerf, cfg.train, checkpoint=checkpoint_path(run.ckpt_dir), white_bkgd=run.white_bkgd,
                       seed=run.seed, device=device, label=run.class_name, progress=progress, state=state)


def train_class(cfg: OmniposeConfig, device: torch.device, progress: bool = True) -> TrainSummary:
    """Generate the class if asked, then train or resume its NeRF (what `python -m nerf.train` does)."""
    seed_everything(cfg.run.seed)
    views = load_train_views(prepare_class(cfg), cfg.run.image_downscale, cfg.run.white_bkgd)
    return nerf_trainer(cfg, views, device, progress).run()


def ensure_trained(cfg: OmniposeConfig, views: TrainViews, device: torch.device,
                   progress: bool = True) -> NeRFRenderer:
    """The class's frozen renderer; trains or resumes first unless a finished checkpoint exists.
    The checkpoint is read once."""
    path = checkpoint_path(cfg.run.ckpt_dir)
    state = read_checkpoint(path, device) if path.is_file() else None
    if state is not None and state.get("finished"):
        return renderer_from_state(state, path, cfg.nerf, cfg.run.white_bkgd, device)
    trainer = nerf_trainer(cfg, views, device, progress, state)
    trainer.run()
    return trainer.frozen_renderer()


@dataclass
class ClassAssets:
    """Everything the per-image work of one class needs, loaded once."""
    cfg: OmniposeConfig
    device: torch.device
    class_dir: Path
    views: TrainViews
    test_set: list[TestSample]
    renderer: NeRFRenderer
    backbone: FrozenBackbone
    database: DescriptorDatabase


def load_class(cfg: OmniposeConfig, device: torch.device | None = None, *, train: bool = True,
               progress: bool = True) -> ClassAssets:
    """Load (and, with `train`, generate and train as needed) everything of the class `cfg.run.class_name`.
    Without `train` a missing or unfinished checkpoint is an error."""
    device = resolve_device(cfg.run.device) if device is None else device
    run = cfg.run
    seed_everything(run.seed)
    class_dir = prepare_class(cfg) if train else resolve_class_dir(run.data_root, run.class_name)
    views = load_train_views(class_dir, downscale=run.image_downscale, white_bkgd=run.white_bkgd)
    test_set = load_test_set(class_dir, downscale=run.image_downscale, white_bkgd=run.white_bkgd)
    if train:
        renderer = ensure_trained(cfg, views, device, progress)
    else:
        path = checkpoint_path(run.ckpt_dir)
        renderer = renderer_from_state(read_checkpoint(path, device), path, cfg.nerf, run.white_bkgd, device)
    backbone = load_backbone(cfg.backbone, device)
    database = load_or_build_database(cfg.retrieval, backbone, views, device, run.ckpt_dir / CACHE_NAME)
    return ClassAssets(cfg, device, class_dir, views, test_set, renderer, backbone, database)


def estimate_batch_poses(assets: ClassAssets, images: np.ndarray, progress: bool = False) -> list[PoseEstimate]:
    """Retrieval + iNeRF poses of query images [B,H,W,3] with the class's settings."""
    cfg = assets.cfg
    return estimate_poses(assets.renderer, assets.database, assets.views, images, cfg.inerf, assets.device,
                          retrieval_topk=cfg.retrieval.retrieval_topk, seed=cfg.run.seed, progress=progress)


@dataclass
class ImageResult:
    """One test image through the pipeline."""
    sample: TestSample
    pose: PoseEstimate
    reference: np.ndarray      # [H,W,3] float32 in [0,1]: the NeRF rendered at the refined pose
    score_map: np.ndarray      # [H,W] float32
    image_score: float
    seconds: dict[str, float]  # per image: pose, render, score

    def record(self, backbone: str) -> dict:
        """The JSON record written beside the map (anomaly.results)."""
        return {"image_score": self.image_score, "label": self.sample.label,
                "defect_type": self.sample.defect_type, "backbone": backbone,
                **self.pose.record(), "seconds": self.seconds}


def to_chw(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().to(device)


def process_batch(assets: ClassAssets, samples: list[TestSample]) -> list[ImageResult]:
    """Pose -> reference render -> anomaly map -> image score for a batch of test images."""
    cfg, device, views = assets.cfg, assets.device, assets.views
    images = np.stack([sample.image for sample in samples])
    t0 = time.perf_counter()
    poses = estimate_batch_poses(assets, images)
    t1 = time.perf_counter()
    references = torch.stack([
        assets.renderer.render_image(torch.as_tensor(p.refined_pose, dtype=torch.float32, device=device),
                                     views.height, views.width, views.intrinsics)
        for p in poses]).permute(0, 3, 1, 2)
    t2 = time.perf_counter()
    maps = anomaly_map(assets.backbone, to_chw(images, device), references, cfg.score)
    scores = image_scores(maps, cfg.score.image_score_pool)
    t3 = time.perf_counter()
    n = len(samples)
    seconds = {"pose": (t1 - t0) / n, "render": (t2 - t1) / n, "score": (t3 - t2) / n}
    references_np = references.permute(0, 2, 3, 1).cpu().numpy()
    maps_np = maps.cpu().numpy()
    return [ImageResult(sample, pose, references_np[i], maps_np[i], float(scores[i]), dict(seconds))
            for i, (sample, pose) in enumerate(zip(samples, poses))]


def run_class(cfg: OmniposeConfig, device: torch.device | None = None, progress: bool = True) -> Path:
    """Write the anomaly maps of every test image of `cfg.run.class_name`; return the output folder."""
    assets = load_class(cfg, device, progress=progress)
    out_dir = cfg.run.output_dir
    pending = [sample for sample in assets.test_set if not is_done(out_dir, sample.name)]
    name, description = cfg.run.class_name, assets.backbone.description
    print(f"[{name}] {len(assets.test_set)} test images, {len(assets.test_set) - len(pending)} already done, "
          f"backbone: {description}")
    batch = cfg.inerf.inerf_batch
    with tqdm(total=len(pending), desc=f"{name} maps", unit="img", disable=not progress) as bar:
        for start in range(0, len(pending), batch):
            for result in process_batch(assets, pending[start:start + batch]):
                image, amap = result.sample.image, result.score_map
                # Preview overlay on this image's own scale; auroc_test.py redraws it on the class scale.
                overlay = (overlay_heatmap(image, amap, 0.0, float(amap.max()) or 1.0)
                           if cfg.evaluation.save_overlays else None)
                save_result(out_dir, result.sample.name, amap, result.record(description), query=image,
                            reference=result.reference, overlay=overlay)
                bar.update(1)
    return out_dir
