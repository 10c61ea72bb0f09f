"""Do grey-level masks change the metrics? A class's saved maps evaluated against its clean masks and
against a copy whose masks carry low grey-level noise.

    python anomaly_nerf_lego.py --config configs/synthetic/demo.txt          # the maps, first
    python -m benchmarks.bench_noisy_masks --config configs/synthetic/demo.txt

The copy (under --work_dir, default /tmp/noisy_masks/<dataset>/<class>) gets `noise_max` grey levels
(1..noise_max) added to a `noise_fraction` of the pixels of every ground-truth mask (numpy seed --seed),
clipped to 255: what a JPEG saved as PNG or a careless export does to a 0/255 mask. Prints pixel AUROC,
image AUROC and pixel AUPRO for both; writes nothing into the class's outputs.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np

from common.errors import exit_on_user_error
from evaluation.class_evaluation import evaluate_class, with_saved_image_pool
from omniposead.config import parse_config


def add_mask_noise(class_dir: Path, fraction: float, noise_max: int, seed: int) -> int:
    """Add 1..noise_max to a `fraction` of the pixels of every mask under class_dir/ground_truth; the count."""
    rng = np.random.default_rng(seed)
    paths = sorted((class_dir / "ground_truth").glob("*/*.png"))
    for path in paths:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int32)
        noise = (rng.random(mask.shape) < fraction) * rng.integers(1, noise_max + 1, mask.shape)
        cv2.imwrite(str(path), np.clip(mask + noise, 0, 255).astype(np.uint8))
    return len(paths)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/noisy_masks", help="where the noisy copy of the class goes")
    parser.add_argument("--noise_fraction", type=float, default=0.3, help="share of mask pixels that get noise")
    parser.add_argument("--noise_max", type=int, default=3, help="largest grey level added")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed of the noise")
    args, extra = parser.parse_known_args(argv)
    cfg = parse_config(extra)
    run = cfg.run
    score = with_saved_image_pool(run, cfg.score)
    noisy_root = Path(args.work_dir) / run.dataset_name            # same dataset name: the maps are found
    shutil.rmtree(noisy_root / run.class_name, ignore_errors=True)
    shutil.copytree(run.class_dir, noisy_root / run.class_name)
    count = add_mask_noise(noisy_root / run.class_name, args.noise_fraction, args.noise_max, args.seed)
    print(f"{count} masks of {run.class_dir} copied to {noisy_root / run.class_name} with noise 1..{args.noise_max} "
          f"on {100 * args.noise_fraction:g} % of their pixels")
    rows = {}
    for label, data_root in (("clean masks", run.data_root), ("noisy masks", str(noisy_root))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = evaluate_class(run.replace(data_root=data_root), score, cfg.evaluation, write_outputs=False)
        rows[label] = metrics
        for w in caught:
            print(f"  warning: {w.message}", file=sys.stderr)
    print("| masks | pixel AUROC | image AUROC | pixel AUPRO |\n|---|---:|---:|---:|")
    for label, m in rows.items():
        print(f"| {label} | {m['pixel_auroc']:.3f} | {m['image_auroc']:.3f} | {m['pixel_aupro']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
