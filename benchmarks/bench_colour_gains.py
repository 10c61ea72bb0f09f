"""How far each good test photograph's exposure and white balance lie from the NeRF's render at its true pose.

    python -m benchmarks.bench_colour_gains --config configs/real/skull.txt

For every good test image of a class with test poses: the per-channel least-squares gain of the photograph to the
render over the object (pixels where both are brighter than 0.05) and the RMS residual there, before and after the
gain (anomaly.scorer.colour_gains, what `score_colour_gain` applies). Gains that spread far from 1 are what a per-image
appearance code would learn; a residual that the gain barely lowers says that it would not help. Every flag is a
pipeline option; the class's NeRF must be trained. Figures go to <output_dir>/colour_gains.json.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from anomaly.scorer import colour_gains, colour_matched_reference
from common.errors import DataError, exit_on_user_error
from common.io import write_json
from mad.layout import GOOD, TEST_POSES_FILE
from omniposead.config import parse_config
from omniposead.pipeline import load_class
from omniposead.pose_accuracy import load_test_poses

OBJECT_FLOOR = 0.05     # a pixel is the object's where both images are brighter than this (a black backdrop is not)


def gains_against_render(photo: torch.Tensor, render: torch.Tensor) -> dict:
    """[H,W,3] photograph and render in [0, 1]: the gains (photo ~ gain x render per channel, over the image) and the
    RMS residual over the object before and after them."""
    query, reference = (x.permute(2, 0, 1)[None].float() for x in (photo, render))
    gain, matched = colour_gains(reference, query), colour_matched_reference(reference, query)
    obj = (query.mean(1) > OBJECT_FLOOR) & (reference.mean(1) > OBJECT_FLOOR)
    rms = lambda ref: float(((query - ref) ** 2).mean(1)[obj].mean().sqrt())  # noqa: E731
    return {"gain": gain.flatten().tolist(), "rms_before": rms(reference), "rms_after": rms(matched),
            "object_pixels": int(obj.sum())}


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(sys.argv[1:] if argv is None else argv)
    assets = load_class(cfg, train=False, poses=False, progress=False)
    if not (assets.class_dir / TEST_POSES_FILE).is_file():
        raise DataError(f"{assets.class_dir / TEST_POSES_FILE}: the class has no test poses to render at")
    truth = load_test_poses(assets.class_dir)
    rows = {}
    with torch.no_grad():
        for sample in (s for s in assets.test_set if s.defect_type == GOOD):
            render, _ = assets.reference.with_unseen(truth[sample.name], sample.image)
            rows[sample.name] = gains_against_render(torch.as_tensor(sample.image, dtype=torch.float32), render.cpu())
            r = rows[sample.name]
            print(f"{sample.name}: gain r g b {' '.join(f'{g:.3f}' for g in r['gain'])}; RMS over the object "
                  f"{r['rms_before']:.4f} -> {r['rms_after']:.4f}")
    gains = np.array([r["gain"] for r in rows.values()])
    summary = {"gain_min": gains.min(0).tolist(), "gain_max": gains.max(0).tolist(), "gain_std": gains.std(0).tolist(),
               "rms_before": float(np.mean([r["rms_before"] for r in rows.values()])),
               "rms_after": float(np.mean([r["rms_after"] for r in rows.values()]))}
    print(f"gains over {len(rows)} photographs (r, g, b): min {np.round(gains.min(0), 3)}, max "
          f"{np.round(gains.max(0), 3)}, std {np.round(gains.std(0), 3)}; mean RMS over the object "
          f"{summary['rms_before']:.4f} -> {summary['rms_after']:.4f} with the gains")
    write_json(cfg.run.output_dir / "colour_gains.json", {"summary": summary, "images": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
