"""Where the reprojected reference's false alarms lie: the share of pixels no warped training view sees (the NeRF's
guess fills them) over the whole object, inside the defect masks, and in the image-score window of the
highest-scoring good images, at the true test poses, with the map not weighed there (reference_unseen_power 0).

    python -m benchmarks.unseen_share --config configs/synthetic/full_cpu.txt --synth_detail true \\
        --class_name full_detail

Any pipeline option may follow (the class must be trained already). Prints one line per top good image and a summary.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from anomaly.scorer import image_scores
from common.errors import exit_on_user_error
from common.runtime import resolve_device, seed_everything
from mad.layout import GOOD
from omniposead.config import parse_config
from omniposead.decomposition import nerf_references, reference_maps
from omniposead.pipeline import load_class


def score_window(score_map: np.ndarray, pool: int) -> tuple[slice, slice]:
    """The pool x pool window whose average gives the image score (the max of the average-pooled map)."""
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(score_map)[None, None], pool, stride=1)[0, 0]
    row, col = np.unravel_index(int(pooled.argmax()), tuple(pooled.shape))
    return slice(row, row + pool), slice(col, col + pool)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_config([*argv, "--reference_unseen_power", "0"])
    if cfg.score.reference != "reprojected":
        raise SystemExit("unseen_share: the config's reference must be 'reprojected'")
    seed_everything(cfg.run.seed)
    assets = load_class(cfg, resolve_device(cfg.run.device), train=False, progress=False, poses=False)
    samples = assets.test_set
    images = np.stack([s.image for s in samples])
    references = nerf_references(assets.reference, assets.class_dir, [s.name for s in samples], images)
    if references is None:
        raise SystemExit(f"{assets.class_dir}: no test_poses.json (the true poses are needed)")
    maps = np.stack(reference_maps(cfg, assets.backbone, assets.residual, images, references, assets.device))
    pool = cfg.score.image_pool()
    scores = image_scores(maps, pool)
    unseen = references.unseen
    solid = np.stack([(image < 0.99).any(-1) for image in images])      # the object on the white background
    good = [i for i, s in enumerate(samples) if s.defect_type == GOOD]
    for i in sorted(good, key=lambda i: -scores[i])[:8]:
        window = score_window(maps[i], pool)
        print(f"{samples[i].name}: score {scores[i]:.2f}, unseen share in its score window "
              f"{unseen[i][window].mean():.2f}")
    print(f"unseen share of the object's pixels: {unseen[solid].mean():.3f}")
    for defect in sorted({s.defect_type for s in samples} - {GOOD}):
        inside = [unseen[i][samples[i].mask > 0] for i, s in enumerate(samples) if s.defect_type == defect]
        print(f"unseen share inside the {defect} masks: {np.concatenate(inside).mean():.3f}")


if __name__ == "__main__":
    main()
