"""What an anomaly map costs, stage by stage: the backbone's pass over query and reference, the feature distance
(feature_distance, which never makes the resized [B,C,H,W] volume, beside the plain formula that does) and the
smoothing, per image at a config's size (synth_size) and scorer, on noise images (the cost does not depend on the
pixels). Other config options may follow the script's own.

    python -m benchmarks.bench_map_cost --config configs/synthetic/full_cpu.txt --batch 4 --repeats 3

Prints seconds per image (the best of the repeats, one job at a time) and the largest difference between the two
feature distances.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from anomaly.scorer import feature_distance, gaussian_blur, term_differences
from common.errors import exit_on_user_error
from common.runtime import resolve_device, seed_everything
from features.backbone import load_backbone
from omniposead.config import parse_config


def volume_distance(diffs, size) -> torch.Tensor:
    """The plain formula: every term resized to `size` as a [B,C,H,W] volume, then the norm over the channels."""
    squared = sum(F.interpolate(d, size=size, mode="bilinear", align_corners=False).square().sum(1)
                  if tuple(d.shape[-2:]) != tuple(size) else d.square().sum(1) for d in diffs)
    return squared.sqrt()


def best_seconds(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, default=4, help="images per call (the pipeline's maps: its batch)")
    parser.add_argument("--repeats", type=int, default=3)
    args, rest = parser.parse_known_args(argv)
    cfg = parse_config(["--config", args.config, *rest])
    seed_everything(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    backbone = load_backbone(cfg.backbone, device)
    size = int(cfg.synth.synth_size)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    query, reference = (torch.rand(args.batch, 3, size, size, generator=generator).to(device) for _ in range(2))
    opts = cfg.score
    with torch.no_grad():
        backbone_s, diffs = best_seconds(lambda: term_differences(backbone, query, reference, opts), args.repeats)
        ours_s, ours = best_seconds(lambda: feature_distance(diffs, (size, size)), args.repeats)
        volume_s, volume = best_seconds(lambda: volume_distance(diffs, (size, size)), args.repeats)
        blur_s, _ = best_seconds(lambda: gaussian_blur(ours, opts.smoothing_sigma()), args.repeats)
    n = args.batch
    print(f"{size}x{size}, {len(diffs)} terms ({', '.join(str(d.shape[1]) for d in diffs)} channels), batch {n}, "
          f"{device}, {torch.get_num_threads()} threads; seconds per image (best of {args.repeats}):")
    print(f"  backbone (query + reference): {backbone_s / n:.3f}")
    print(f"  feature distance: {ours_s / n:.3f} (the resized volume: {volume_s / n:.3f}, {volume_s / ours_s:.1f}x); "
          f"largest difference {float((ours - volume).abs().max()):.2e} of {float(volume.abs().max()):.2f}")
    print(f"  smoothing: {blur_s / n:.3f}")


if __name__ == "__main__":
    main()
