"""Text reports of evaluated classes: one class's figures, and the all-class table (like the paper's Table 2)."""
from __future__ import annotations

import numpy as np

TABLE_KEYS = ("pixel_auroc", "image_auroc", "pixel_aupro")


def report(metrics: dict) -> str:
    """Lines for the terminal: the class's AUROCs and AUPRO, then each defect type against the good images."""
    lines = [
        (f"== {metrics['class']}: {metrics['n_images']} test images ({metrics['n_good']} good), "
         f"backbone: {metrics['backbone']} =="),
        f"pixel AUROC: {metrics['pixel_auroc']:.3f}",
        f"image AUROC: {metrics['image_auroc']:.3f}",
        f"pixel AUPRO: {metrics['pixel_aupro']:.3f} (FPR <= {metrics['aupro_fpr_limit']:g})",
    ]
    for dtype, entry in metrics["per_defect"].items():
        lines.append(f"  {dtype} ({entry['n_images']} images vs good): image AUROC {_fmt(entry['image_auroc'])}, "
                     f"pixel AUROC {_fmt(entry['pixel_auroc'])}, pixel AUPRO {_fmt(entry['pixel_aupro'])}")
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
    """Markdown table in percent with a Mean row over the given (complete) classes. `extra`: further columns
    as (key, header, format spec), shown as given (n/a where a row has none; their mean over the rows that do)."""
    out = ["| class | pixel AUROC (%) | image AUROC (%) | pixel AUPRO (%) |" + "".join(f" {h} |" for _, h, _ in extra),
           "|---|---:|---:|---:|" + "---:|" * len(extra)]

    def cells(values: list) -> str:
        return "".join(f" {'n/a' if v is None else format(v, spec)} |"
                       for v, (_, _, spec) in zip(values, extra, strict=True))

    for r in rows:
        out.append(f"| {r['class']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in TABLE_KEYS) + " |"
                   + cells([r.get(key) for key, _, _ in extra]))
    if rows:
        means = [100 * float(np.mean([r[k] for r in rows])) for k in TABLE_KEYS]
        extra_means = [float(np.mean(vs)) if (vs := [r[key] for r in rows if r.get(key) is not None]) else None
                       for key, _, _ in extra]
        n = len(rows)
        out.append(f"| **Mean ({n} class{'es' if n != 1 else ''})** | " + " | ".join(f"**{m:.1f}**" for m in means)
                   + " |" + cells(extra_means))
    return "\n".join(out) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
