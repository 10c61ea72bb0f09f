"""Figures of the evaluation: heat-map overlays, ROC curves and a qualitative figure sheet.

Conventions (after anomalib):

* Heat maps use the jet colour map blended over the image (alpha 0.4 for the heat map).
* The colour scale is FIXED per class, never per image: by default vmin / vmax are the minimum and
  maximum of the GOOD test images' score maps (`colour_scale`), so dark blue is the lowest normal
  score and saturated red means "at least as anomalous as the most anomalous pixel of any normal
  image". A given vmin / vmax (--heatmap_vmin / --heatmap_vmax) overrides either end.
* The qualitative sheet's last column shows the prediction map >= threshold in red over the dimmed
  query, with the ground truth outlined in green (red inside green: found; green alone: missed; red
  alone: false alarm); auroc_test.py uses the pixel threshold that maximises F1 over all test pixels
  unless --qual_threshold is given.

Matplotlib is used through its object API with the Agg canvas (no pyplot state, no display needed);
figures are written atomically.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.io import atomic_path
from mad.layout import GOOD

OVERLAY_ALPHA = 0.4


def colour_scale(good_maps: Sequence[np.ndarray], all_maps: Sequence[np.ndarray] = (),
                 vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """(vmin, vmax) of the class's heat maps: min / max over the good images' maps (or over all maps
    when there are no good ones); explicit vmin / vmax win."""
    source = list(good_maps) or list(all_maps)
    lo = min(float(np.min(m)) for m in source) if source else 0.0
    hi = max(float(np.max(m)) for m in source) if source else 1.0
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + max(abs(lo) * 1e-6, 1e-6)
    return lo, hi


def heatmap_colours(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Jet-coloured map, uint8 [H,W,3] RGB; values are clipped to [vmin, vmax]."""
    import cv2

    scaled = np.clip((np.asarray(amap, dtype=np.float32) - vmin) / (vmax - vmin), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay_heatmap(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float,
                    alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Heat map blended over the image: uint8 [H,W,3]. `image` is float in [0,1] or uint8, [H,W,3]; a map of
    another size is resized to the image for display."""
    image = _to_uint8_rgb(image)
    heat = heatmap_colours(amap, vmin, vmax)
    if heat.shape[:2] != image.shape[:2]:  # a map at another resolution (score_protocol = official): display only
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def plot_roc_curves(path: str | Path, pixel_curve, image_curve, title: str = "") -> None:
    """PNG with the pixel and image ROC curves (RocCurve from evaluation.metrics), AUCs in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if pixel_curve is not None:
        fpr, tpr = _thin(pixel_curve.fpr, pixel_curve.tpr)
        ax.plot(fpr, tpr, color="tab:orange", lw=2, label=f"pixel (AUROC = {pixel_curve.auc:.3f})")
    if image_curve is not None:
        ax.plot(image_curve.fpr, image_curve.tpr, color="tab:blue", lw=2,
                label=f"image (AUROC = {image_curve.auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    _save(fig, path)


@dataclass
class QualitativeRow:
    title: str
    query: np.ndarray                 # [H,W,3] float [0,1] or uint8
    reference: np.ndarray | None      # None: shown as "n/a"
    mask: np.ndarray                  # [H,W] bool ground truth
    amap: np.ndarray                  # [H,W] score map


def select_qualitative(defect_types: Sequence[str], n: int) -> list[int]:
    """Indices of up to `n` images mixing the defect types: round-robin over the defect types
    (alphabetically) and then the good images, taking images in their given order within each type."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(defect_types):
        groups.setdefault(t, []).append(i)
    order = sorted(t for t in groups if t != GOOD) + ([GOOD] if GOOD in groups else [])
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(depth < len(groups[t]) for t in order):
        for t in order:
            if depth < len(groups[t]) and len(chosen) < n:
                chosen.append(groups[t][depth])
        depth += 1
    return chosen


def prediction_overlay(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3]: the image dimmed to grey, predicted pixels red, the ground truth's outline green
    (masks at another resolution, as with score_protocol = official, are resized to the image)."""
    grey = _to_uint8_rgb(image).mean(axis=2, keepdims=True)
    size = (grey.shape[1], grey.shape[0])
    predicted, truth = (cv2.resize(np.asarray(m, dtype=np.uint8), size, interpolation=cv2.INTER_NEAREST)
                        for m in (predicted, truth))
    out = np.repeat(0.35 * grey + 40.0, 3, axis=2).astype(np.uint8)
    out[predicted > 0] = (230, 30, 30)
    contours, _ = cv2.findContours(truth, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        out[contour[:, 0, 1], contour[:, 0, 0]] = (40, 220, 40)
    return out


def qualitative_sheet(path: str | Path, rows: Sequence[QualitativeRow], vmin: float, vmax: float,
                      threshold: float, title: str = "") -> None:
    """Figure sheet, one row per image: query | reference | GT mask | heat map | prediction (map >= threshold,
    red, over the dimmed query with the ground truth outlined in green)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = ["query", "reference", "ground truth", "heat map", f"map >= {threshold:.3g} (red; truth: green)"]
    n = max(len(rows), 1)
    fig = Figure(figsize=(2.4 * len(columns), 2.4 * n + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, len(columns), squeeze=False)
    for r, row in enumerate(rows):
        panels = [
            _to_uint8_rgb(row.query),
            None if row.reference is None else _to_uint8_rgb(row.reference),
            np.asarray(row.mask, dtype=bool),
            overlay_heatmap(row.query, row.amap, vmin, vmax),
            prediction_overlay(row.query, np.asarray(row.amap) >= threshold, row.mask),
        ]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            elif panel.ndim == 2:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
        axes[r, 0].set_ylabel(row.title, fontsize=8)
    if not rows:
        for ax in axes[0]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _thin(x: np.ndarray, y: np.ndarray, max_points: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= max_points:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, max_points).astype(int))
    return x[idx], y[idx]


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
