"""How much of the photographs' detail the NeRF's render keeps, and whether the poses or the NeRF lose the rest.

    python -m benchmarks.bench_reference_detail --config configs/real/skull.txt

Two figures per class, each from a trained NeRF (every flag is a pipeline option; nothing is trained here):
- **detail**: at every `--every`-th view's own pose, the NeRF's render against its photograph over the object (both
  brighter than 0.05, eroded by 4 px): the PSNR there, and the detail ratio, the spread of the render's Laplacian
  of Gaussian (sigma 1 px) over the photograph's. 1 keeps every fine edge; on a fine random texture a render
  blurred by a Gaussian of sigma 0.5 / 1 / 2 px keeps 0.83 / 0.46 / 0.14. Training and held-out views are shown
  apart: a NeRF that keeps the detail of the views it was trained on and loses it on the others overfits; one that
  loses it on both does not fit them.
- **consistency**: each held-out view's photograph against its nearest training photographs warped into it with
  the NeRF's depth (nerf.reprojection.warp_view), the local shift between them in 32 px patches (OpenCV's phase
  correlation, where the warp sees the whole patch and it has texture; its sub-pixel estimate reads a 2.2 px shift
  as 1.7-2.2 px). Poses that agree to a pixel shift the patches by under a pixel; poses off by a fraction of a
  degree shift them by several (0.25 deg is about 4 px at 400 px).
A NeRF blurred on its own training views, with consistent poses, loses the detail in its fit, not in the poses.
Figures go to <output_dir>/reference_detail.json.
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import torch
from scipy import ndimage

from benchmarks.bench_colour_gains import OBJECT_FLOOR
from common.errors import exit_on_user_error
from common.io import write_json
from nerf.reprojection import backproject, surface_depth, warp_view
from nerf.trainer import split_views
from omniposead.config import parse_config
from omniposead.pipeline import load_class
from omniposead.reference import nearest_views

PATCH, STRIDE, MIN_RESPONSE = 32, 16, 0.3


def detail_figures(photo: np.ndarray, render: np.ndarray, erode: int = 4) -> tuple[float, float]:
    """(PSNR over the object, detail ratio) of a render [H,W,3] against its photograph, both in [0, 1]."""
    obj = (photo.mean(-1) > OBJECT_FLOOR) & (render.mean(-1) > OBJECT_FLOOR)
    obj = ndimage.binary_erosion(obj, iterations=erode)
    mse = float(((photo - render) ** 2).mean(-1)[obj].mean())
    log = lambda image: ndimage.gaussian_laplace(image.mean(-1), 1.0)[obj].std()    # noqa: E731
    return -10.0 * np.log10(max(mse, 1e-12)), float(log(render) / log(photo))


def patch_shifts(photo: np.ndarray, warped: np.ndarray, seen: np.ndarray) -> list[float]:
    """Shifts in pixels between grey images [H,W] in the PATCH-sized patches that `seen` covers and that have
    texture, by phase correlation (only confident ones: response above MIN_RESPONSE)."""
    window = cv2.createHanningWindow((PATCH, PATCH), cv2.CV_64F)
    shifts = []
    for y in range(0, photo.shape[0] - PATCH + 1, STRIDE):
        for x in range(0, photo.shape[1] - PATCH + 1, STRIDE):
            box = (slice(y, y + PATCH), slice(x, x + PATCH))
            if seen[box].mean() < 0.98 or photo[box].std() < 0.02:
                continue
            (dx, dy), response = cv2.phaseCorrelate(photo[box].astype(np.float64), warped[box].astype(np.float64),
                                                    window)
            if response > MIN_RESPONSE:
                shifts.append(float(np.hypot(dx, dy)))
    return shifts


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2GRAY)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--every", type=int, default=3, help="the detail of every this-many-th view")
    args, rest = own.parse_known_args(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(rest, description=__doc__.splitlines()[0] + " (and --every N: the detail of every N-th "
                                                                    "view, default 3)")
    assets = load_class(cfg, train=False, poses=False, progress=False)
    views, maker = assets.views, assets.reference
    train_idx, held_idx = split_views(len(views.images), cfg.train.holdout_every)
    rows = {"train": [], "held-out": []}

    def render(i: int) -> tuple[torch.Tensor, dict]:
        """View i's pose and the NeRF's buffers there."""
        pose = torch.as_tensor(views.poses[i], dtype=torch.float32, device=assets.device)
        return pose, assets.renderer.render_buffers(pose, views.height, views.width, views.intrinsics)

    with torch.no_grad():
        held = {i: render(i) for i in held_idx}          # each rendered once: for its detail and for the warps
        for i in range(0, len(views.images), max(args.every, 1)):
            _, buffers = held[i] if i in held else render(i)
            psnr, ratio = detail_figures(views.images[i], buffers["rgb"].cpu().numpy())
            rows["held-out" if i in held else "train"].append({"view": i, "psnr_object": psnr, "detail": ratio})
        shifts = {}
        for i, (pose, buffers) in held.items():
            points = backproject(surface_depth(buffers["depth"], buffers["acc"]), pose, views.intrinsics)
            for j in nearest_views(views.poses[i].astype(np.float64), np.asarray(train_idx), views.poses, 3):
                colour, seen = warp_view(points, maker.source(j), views.intrinsics, cfg.score.reference_tolerance)
                shifts[f"{i}<-{j}"] = patch_shifts(grey(views.images[i]), grey(colour.cpu().numpy()),
                                                   seen.cpu().numpy())
    summary = {}
    for split, entries in rows.items():
        if entries:
            summary[split] = {"views": len(entries), "psnr_object": float(np.mean([e["psnr_object"] for e in entries])),
                              "detail": float(np.mean([e["detail"] for e in entries]))}
            print(f"{split} views ({len(entries)}): PSNR over the object {summary[split]['psnr_object']:.2f} dB, "
                  f"detail ratio {summary[split]['detail']:.3f}")
    pooled = [s for values in shifts.values() for s in values]
    if pooled:
        summary["shift_px"] = {"patches": len(pooled), "median": float(np.median(pooled)),
                               "p90": float(np.percentile(pooled, 90))}
        print(f"held-out photographs against their nearest training photographs warped with the NeRF's depth: "
              f"{len(pooled)} patches, shift median {np.median(pooled):.2f} px, p90 {np.percentile(pooled, 90):.2f} px")
    write_json(cfg.run.output_dir / "reference_detail.json", {"summary": summary, "views": rows, "shifts": shifts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
