"""OmniposeAD per class: NeRF -> coarse pose (retrieval) -> iNeRF -> reference render -> anomaly map.

    python anomaly_nerf_lego.py --config configs/LEGO-3D/01Gorilla.txt
    python anomaly_nerf_lego.py --config configs/LEGO-3D/01Gorilla.txt --class_name all

Trains the class's NeRF first when no finished checkpoint exists, builds (or loads) the retrieval
database, then writes per test image: the query, the reference render, the float score map
(.npy), a heat-map overlay and a JSON with poses, retrieval, iNeRF loss, timings and the
backbone used. Finished images are skipped on a re-run. Ends with the class's AUROCs
(auroc_test.py computes the same figures from the files alone).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from anomaly.results import is_done, save_result
from anomaly.scorer import anomaly_map, image_scores
from anomaly.visualize import overlay_heatmap
from common.config import build_parser, class_dir, dataset_name, output_dir, str2bool
from common.errors import exit_on_user_error
from common.runtime import resolve_device, seed_everything
from data.mad import list_classes, load_test_set, load_train_views, resolve_class_dir
from features.backbone import load_backbone
from inerf.optimize import estimate_poses
from nerf.train import ensure_trained
from retrieval.database import load_or_build_database


def build_argument_parser() -> argparse.ArgumentParser:
    parser = build_parser(__doc__.splitlines()[0])
    group = parser.add_argument_group("pipeline")
    group.add_argument("--evaluate", type=str2bool, default=True,
                       help="compute and print the class's AUROCs when its maps are done")
    return parser


def synthesize_if_requested(cfg: argparse.Namespace) -> None:
    """Generate the class with the synthetic generator when the config asks for it and it is missing."""
    if not cfg.synthesize_if_missing or class_dir(cfg).exists():
        return
    from data.synthesize import generate_class

    print(f"generating synthetic class {class_dir(cfg)} (seed {cfg.synth_seed}, {cfg.synth_size}px)")
    generate_class(Path(cfg.data_root), cfg.class_name, seed=cfg.synth_seed, size=cfg.synth_size,
                   n_train=cfg.synth_n_train, n_test_good=cfg.synth_n_test_good,
                   n_test_defect=cfg.synth_n_test_defect)


def to_chw(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().to(device)


def run_class(cfg: argparse.Namespace, device: torch.device) -> Path:
    """Write the anomaly maps of every test image of `cfg.class_name`; return the output folder."""
    seed_everything(cfg.seed)
    synthesize_if_requested(cfg)
    folder = resolve_class_dir(cfg.data_root, cfg.class_name)
    out_dir = output_dir(cfg)

    renderer = ensure_trained(cfg, device)
    train_views = load_train_views(folder, half_res=cfg.half_res, white_bkgd=cfg.white_bkgd)
    backbone = load_backbone(cfg, device)
    database = load_or_build_database(cfg, backbone, train_views, device)
    test_set = load_test_set(folder, half_res=cfg.half_res, white_bkgd=cfg.white_bkgd)
    pending = [sample for sample in test_set if not is_done(out_dir, sample.name)]
    print(f"[{cfg.class_name}] {len(test_set)} test images, {len(test_set) - len(pending)} already done, "
          f"backbone: {backbone.description}")

    with tqdm(total=len(pending), desc=f"{cfg.class_name} maps", unit="img") as bar:
        for start in range(0, len(pending), cfg.inerf_batch):
            batch = pending[start:start + cfg.inerf_batch]
            images = np.stack([sample.image for sample in batch])

            t0 = time.perf_counter()
            poses = estimate_poses(renderer, database, train_views, images, cfg, device, progress=False)
            t1 = time.perf_counter()
            references = torch.stack([
                renderer.render_image(torch.as_tensor(p["refined_pose"], dtype=torch.float32, device=device),
                                      train_views.height, train_views.width, train_views.focal)
                for p in poses]).permute(0, 3, 1, 2)
            t2 = time.perf_counter()
            maps = anomaly_map(backbone, to_chw(images, device), references, cfg)
            scores = image_scores(maps, cfg.image_score_pool)
            t3 = time.perf_counter()

            references_np = references.permute(0, 2, 3, 1).cpu().numpy()
            maps_np = maps.cpu().numpy()
            for i, sample in enumerate(batch):
                info = {
                    "image_score": float(scores[i]),
                    "label": sample.label,
                    "defect_type": sample.defect_type,
                    "backbone": backbone.description,
                    "coarse_pose": np.asarray(poses[i]["coarse_pose"]).tolist(),
                    "refined_pose": np.asarray(poses[i]["refined_pose"]).tolist(),
                    "retrieval_index": int(poses[i]["retrieval_index"]),
                    "retrieval_distance": float(poses[i]["retrieval_distance"]),
                    "inerf_final_loss": float(poses[i]["final_loss"]),
                    "seconds": {"pose": (t1 - t0) / len(batch), "render": (t2 - t1) / len(batch),
                                "score": (t3 - t2) / len(batch)},
                }
                # Preview overlay on this image's own scale; auroc_test.py redraws it on the class scale.
                overlay = (overlay_heatmap(sample.image, maps_np[i], 0.0, float(maps_np[i].max()) or 1.0)
                           if cfg.save_overlays else None)
                save_result(out_dir, sample.name, maps_np[i], info, query=sample.image,
                            reference=references_np[i], overlay=overlay)
            bar.update(len(batch))
    return out_dir


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    cfg = build_argument_parser().parse_args(argv)
    device = resolve_device(cfg.device)
    if cfg.class_name == "all":
        names = list_classes(cfg.data_root)
    else:
        names = [cfg.class_name]
    for name in names:
        class_cfg = copy.copy(cfg)
        class_cfg.class_name = name
        start = time.perf_counter()
        out_dir = run_class(class_cfg, device)
        if cfg.evaluate:
            from auroc_test import evaluate_class, report

            print(report(evaluate_class(class_cfg, name)))
        print(f"[{name}] done in {time.perf_counter() - start:.1f} s; results in {out_dir} "
              f"(dataset {dataset_name(cfg)})")


if __name__ == "__main__":
    main()
