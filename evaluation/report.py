"""Text reports of evaluated classes: one class's figures, and the all-class table (like the paper's Table 2)."""
from __future__ import annotations

import numpy as np

TABLE_KEYS = ("pixel_auroc", "image_auroc", "pixel_aupro", "pixel_f1")
# The header of each class metric in every table: the class report, the all-class table, the decomposition and the
# baselines. Pixel F1 is the best F1 over the map's thresholds (OmniAD's pixel-wise F1).
METRIC_HEADERS = {"pixel_auroc": "pixel AUROC", "image_auroc": "image AUROC", "pixel_aupro": "pixel AUPRO",
                  "pixel_f1": "pixel F1"}


def report(metrics: dict) -> str:
    """Lines for the terminal: the class's AUROCs and AUPRO, then each defect type against the good images."""
    lines = [
        (f"== {metrics['class']}: {metrics['n_images']} test images ({metrics['n_good']} good), "
         f"backbone: {metrics['backbone']} =="),
        f"pixel AUROC: {metrics['pixel_auroc']:.3f}",
        f"image AUROC: {metrics['image_auroc']:.3f}",
        f"pixel AUPRO: {metrics['pixel_aupro']:.3f} (FPR <= {metrics['aupro_fpr_limit']:g})",
    ]
    if metrics.get("pixel_f1") is not None:
        lines.append(f"pixel F1: {metrics['pixel_f1']:.3f} (the best over thresholds, at map value "
                     f"{metrics['pixel_threshold']:.3g})")
    for dtype, entry in metrics["per_defect"].items():
        lines.append(f"  {dtype} ({entry['n_images']} images vs good): image AUROC "
                     f"{metric_cell(entry['image_auroc'])}, pixel AUROC {metric_cell(entry['pixel_auroc'])}, "
                     f"pixel AUPRO {metric_cell(entry['pixel_aupro'])}")
    cost = cost_line(metrics.get("query_cost"))
    if cost:
        lines.append(cost)
    unsure = metrics.get("pose_unsure") or []
    if unsure:
        lines.append(f"pose unsure: {len(unsure)} image{'s' if len(unsure) != 1 else ''} ({', '.join(unsure)}): "
                     "their loss stayed above what this NeRF reaches on correct poses; review their maps")
    return "\n".join(lines)


def cost_line(cost: dict | None) -> str | None:
    """One line of a class's mean query cost (metrics.json "query_cost"), or None when nothing was recorded."""
    seconds = (cost or {}).get("seconds") or {}
    if seconds.get("total") is None:
        return None
    parts = ", ".join(f"{k} {seconds[k]:.2f}" for k in ("pose", "render", "score") if seconds.get(k) is not None)
    work = (f"; pose work {cost['pose_rays']:,.0f} rays, {cost['pose_samples']:,.0f} field evaluations"
            if cost.get("pose_rays") is not None else "")
    return f"per query: {seconds['total']:.2f} s ({parts}){work}"


def results_table(rows: list[dict], extra: tuple[tuple[str, str, str], ...] = ()) -> str:
    """Markdown table in percent with a Mean row over the given classes (a metric a row lacks is n/a, and the
    mean is over the rows that have it). `extra`: further columns as (key, header, format spec), shown as given
    (n/a where a row has none; their mean over the rows that do)."""
    out = ["| class |" + "".join(f" {METRIC_HEADERS[k]} (%) |" for k in TABLE_KEYS)
           + "".join(f" {h} |" for _, h, _ in extra),
           "|---|" + "---:|" * (len(TABLE_KEYS) + len(extra))]

    def cells(values: list) -> str:
        return "".join(f" {'n/a' if v is None else format(v, spec)} |"
                       for v, (_, _, spec) in zip(values, extra, strict=True))

    for r in rows:
        out.append(f"| {r['class']} | " + " | ".join(_percent(r.get(k)) for k in TABLE_KEYS) + " |"
                   + cells([r.get(key) for key, _, _ in extra]))
    if rows:
        means = [_mean([r.get(k) for r in rows]) for k in TABLE_KEYS]
        extra_means = [_mean([r.get(key) for r in rows]) for key, _, _ in extra]
        n = len(rows)
        out.append(f"| **Mean ({n} class{'es' if n != 1 else ''})** | "
                   + " | ".join("n/a" if m is None else f"**{100 * m:.1f}**" for m in means)
                   + " |" + cells(extra_means))
    return "\n".join(out) + "\n"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _mean(values: list) -> float | None:
    """The mean of the values that are there (a metric a class could not have, or maps evaluated before it
    was recorded), None when none is."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def metric_cell(value, digits: int = 3) -> str:
    """A figure as every table shows it: `digits` decimals, "n/a" where it is missing."""
    return "n/a" if value is None else f"{value:.{digits}f}"
