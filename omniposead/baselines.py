"""Side by side on one class: PatchCore, the pose ablations of the pipeline, and a fused map, all scored on the
same test set by the same metric code (omniposead.decomposition.score_maps -> evaluation.metrics.evaluate).

Rows (METHODS):

* patchcore           PatchCore through anomalib (anomaly.patchcore), EfficientNet-Lite2 with the bundled ImageNet
                      weights, fitted on the NeRF's training split (the views the NeRF learns from; the held-out
                      views stay out of both); its own image score (anomalib's re-weighted max patch distance);
* reverse_distillation, rd_attention, rd_nerf_views, rd_aligned
                      reverse distillation (anomaly.reverse_distillation, our implementation on the class's frozen
                      backbone), trained on the same training split, then OmniAD's additions one at a time, each
                      row keeping the ones above it: the attention blocks, NeRF renders at new poses between and
                      around the training views (rd_nerf_views of them, or as many as there are training views
                      when 0), the NeRF's renders at the poses the pipeline estimated for the test queries
                      (omniposead.distillation_views); image score: the map's maximum; setup_s: the student's
                      training and its renders, plus the NeRF's training for the NeRF-view rows and every query's
                      pose for the aligned row (its student is trained after the queries are posed);
* nearest_image       the retrieved (top-1) training image itself as the reference: no NeRF;
* nerf_retrieved_pose the NeRF rendered at the retrieved training pose: no iNeRF;
* pipeline            the full pipeline's saved maps (omniposead.pipeline.run_class: retrieval + iNeRF + NeRF);
* nerf_true_pose      the NeRF at the true test pose (omniposead.decomposition.nerf_references; classes with
                      test_poses.json only);
* fused               the pipeline's map plus PatchCore's, each first normalised by its spread on the held-out
                      training views: z = (map - mean) / std, with the mean and standard deviation of all pixels
                      of that method's maps of the held-out views (ours: the view against the NeRF at its known
                      pose; PatchCore: the view predicted by the bank that never saw it); fused = z_ours + z_patchcore.
                      A fixed rule, nothing tuned on the test set.

Map-based rows (all but patchcore) take the image score by the config's protocol (max of the average-pooled
map). Times: `setup_s` is what a row needs before its first query (NeRF training seconds from the checkpoint's
train_log.json, the retrieval database build, the PatchCore fit; the pipeline's residual fit and pose
calibration are not counted), `query_s` the seconds per test image (the pipeline's: the per-image pose, render
and score seconds it saved), `class_s` = setup_s + n x query_s.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.patchcore import PatchCore, PatchcoreOptions
from anomaly.results import load_record, load_score_map, result_paths
from anomaly.reverse_distillation import DistillationOptions, ReverseDistillation
from common.fingerprint import array_digest, digest
from common.io import atomic_write, write_json
from evaluation.report import METRIC_HEADERS, metric_cell
from mad.layout import GOOD
from nerf.checkpoint import LOG_NAME
from nerf.trainer import heldout_view_indices
from omniposead.config import OmniposeConfig
from omniposead.decomposition import METRICS, References, make_references, nerf_references, reference_maps, score_maps
from omniposead.distillation_views import distillation_images
from omniposead.pipeline import ClassAssets, load_class, run_class
from retrieval.database import DescriptorDatabase

METHODS = {
    "patchcore": "PatchCore (anomalib), no pose",
    "reverse_distillation": "reverse distillation, no pose",
    "rd_attention": "+ attention",
    "rd_nerf_views": "+ NeRF views",
    "rd_aligned": "+ aligned renders (poses estimated for the queries)",
    "nearest_image": "nearest training image as reference (no NeRF)",
    "nerf_retrieved_pose": "NeRF at the retrieved pose (no iNeRF)",
    "pipeline": "full pipeline (retrieval + iNeRF + NeRF)",
    "nerf_true_pose": "NeRF at the true pose",
    "fused": "pipeline + PatchCore, each z-scored on held-out views",
}
TABLE_NAME = "baselines"


@dataclass
class MethodRow:
    method: str
    description: str
    metrics: dict | None          # METRICS + per_defect (score_maps); None when the row cannot be made
    setup_s: float | None
    query_s: float | None
    n_queries: int
    note: str = ""

    @property
    def class_s(self) -> float | None:
        if self.setup_s is None or self.query_s is None:
            return None
        return self.setup_s + self.n_queries * self.query_s

    def record(self) -> dict:
        return {**asdict(self), "class_s": self.class_s}


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, key: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
        return out


def zscore_by_spread(maps: np.ndarray, normal_maps: np.ndarray) -> np.ndarray:
    """`maps` normalised by the spread of `normal_maps` (anomaly-free views): (maps - mean) / std over all their
    pixels (std floored at 1e-12)."""
    normal = np.asarray(normal_maps, dtype=np.float64)
    return ((np.asarray(maps, dtype=np.float64) - normal.mean()) / max(float(normal.std()), 1e-12)).astype(np.float32)


def fuse_maps(ours: np.ndarray, ours_normal: np.ndarray, theirs: np.ndarray, theirs_normal: np.ndarray) -> np.ndarray:
    """The fused row's maps: z(ours) + z(theirs), each z by zscore_by_spread on its own held-out maps; `theirs`
    is resized (bilinear) to our maps' size first when the two differ."""
    ours, theirs = np.asarray(ours), _resized(np.asarray(theirs), np.asarray(ours).shape[-2:])
    theirs_normal = _resized(np.asarray(theirs_normal), np.asarray(ours_normal).shape[-2:])
    return zscore_by_spread(ours, ours_normal) + zscore_by_spread(theirs, theirs_normal)


def _resized(maps: np.ndarray, size) -> np.ndarray:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()


def nerf_train_seconds(cfg: OmniposeConfig) -> float | None:
    path = cfg.run.ckpt_dir / LOG_NAME
    try:
        return float(json.loads(path.read_text())["seconds"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def pipeline_maps(out_dir: Path, names: list[str]) -> tuple[np.ndarray, float]:
    """The pipeline's saved maps of `names` and its mean per-image seconds (pose + render + score records)."""
    maps, seconds = [], []
    for name in names:
        paths = result_paths(out_dir, name)
        maps.append(load_score_map(paths.map))
        seconds.append(sum(float(v) for v in (load_record(paths.record).get("seconds") or {}).values()))
    return np.stack(maps), float(np.mean(seconds))


def distillation_variants(opts: DistillationOptions, n_train: int) -> dict[str, DistillationOptions]:
    """The reverse-distillation rows' options: the plain student, then OmniAD's additions one at a time, each row
    keeping the ones above it."""
    plain = dataclasses.replace(opts, rd_attention=False, rd_nerf_views=0, rd_aligned=False)
    attention = dataclasses.replace(plain, rd_attention=True)
    nerf_views = dataclasses.replace(attention, rd_nerf_views=opts.rd_nerf_views or n_train)
    return {"reverse_distillation": plain, "rd_attention": attention, "rd_nerf_views": nerf_views,
            "rd_aligned": dataclasses.replace(nerf_views, rd_aligned=True)}


def distillation_rows(cfg: OmniposeConfig, opts: DistillationOptions, assets: ClassAssets, fit_idx: list[int],
                      images: np.ndarray, estimated: np.ndarray, progress: bool):
    """(method, maps, image scores, setup seconds, seconds per query, note) of each reverse-distillation row; each
    student is trained (or resumed) under the class's checkpoint folder."""
    views = assets.views

    # the rows are cumulative: a pose's render is made once and shared, each row still counting its seconds
    renders: dict[bytes, tuple[np.ndarray, float]] = {}
    used: list[float] = []

    def render(pose):
        key = np.asarray(pose, dtype=np.float64).tobytes()
        if key not in renders:
            started = time.perf_counter()
            with torch.no_grad():
                image = assets.renderer.render_image(torch.as_tensor(pose, dtype=torch.float32, device=assets.device),
                                                     views.height, views.width, views.intrinsics).cpu().numpy()
            renders[key] = image, time.perf_counter() - started
        used.append(renders[key][1])
        return renders[key][0]

    for method, variant in distillation_variants(opts, len(fit_idx)).items():
        used.clear()
        train, counts = distillation_images(variant, views.images[fit_idx], views.poses[fit_idx], render, estimated,
                                            cfg.run.seed)
        render_s = sum(used)
        fingerprint = digest([("options", repr(variant)), ("backbone", assets.backbone.description),
                              ("seed", cfg.run.seed), ("images", array_digest(train))])
        student = ReverseDistillation(assets.backbone, variant, assets.device, cfg.run.seed)
        student.fit(train, cfg.run.ckpt_dir / f"{method}.pt", fingerprint, progress)
        started = time.perf_counter()
        maps, scores = student.predict(images)
        query_s = (time.perf_counter() - started) / len(images)
        sources = ", ".join(f"{n} {name}" for name, n in counts.items())
        note = (f"{variant.rd_steps} steps at {variant.rd_size} px on {sources} ({render_s:.0f} s of renders); loss "
                f"{student.losses[0]:.3f} -> {student.losses[-1]:.3f}")
        yield method, maps, scores, render_s + student.seconds, query_s, note


def compare_class(cfg: OmniposeConfig, pc_opts: PatchcoreOptions | None, device: torch.device,
                  progress: bool = True, rd_opts: DistillationOptions | None = None) -> dict:
    """The comparison table of `cfg.run.class_name` ({class, rows: [MethodRow.record()], ...}); the pipeline's maps
    are made first when missing (run_class). Without `pc_opts` the PatchCore and fused rows say why they are absent;
    without `rd_opts` the reverse-distillation rows."""
    run_class(cfg, device, progress)
    assets = load_class(cfg, device, train=False, progress=progress, poses=False)
    views, test_set = assets.views, assets.test_set
    names = [s.name for s in test_set]
    images = np.stack([s.image for s in test_set])
    masks, types = [s.mask for s in test_set], [s.defect_type for s in test_set]
    n = len(test_set)
    timer = Timer()

    def our_maps(key: str, references: References) -> np.ndarray:
        return np.stack(timer.run(key, reference_maps, cfg, assets.backbone, assets.residual, images, references,
                                  assets.device))

    nerf_s = nerf_train_seconds(cfg)
    r = cfg.retrieval
    timer.run("database", DescriptorDatabase.build, assets.backbone, views.images, r.desc_dim, r.retrieval_size,
              assets.device, "", r.retrieval_batch)
    nearest, _ = timer.run("retrieval", assets.database.query, images, 1)
    nearest = nearest[:, 0]
    db_s, ret_q = timer.seconds["database"], timer.seconds["retrieval"] / n
    rows: list[MethodRow] = []

    def add(method, maps, setup, query, scores=None, note=""):
        metrics = None if maps is None else score_maps(cfg, list(maps), masks, types, scores)
        rows.append(MethodRow(method, METHODS[method], metrics, setup, query, n, note))

    nerf_setup = None if nerf_s is None else nerf_s + db_s
    add("nearest_image", our_maps("score_nearest", References(views.images[nearest])), db_s,
        ret_q + timer.seconds["score_nearest"] / n)
    rendered = timer.run("render_retrieved", make_references, assets.reference, views.poses[nearest], images)
    add("nerf_retrieved_pose", our_maps("score_retrieved", rendered), nerf_setup,
        ret_q + (timer.seconds["render_retrieved"] + timer.seconds["score_retrieved"]) / n)
    ours, ours_q = pipeline_maps(cfg.run.output_dir, names)
    add("pipeline", ours, nerf_setup, ours_q, note="residual fit and pose calibration not in setup_s")
    truth = timer.run("render_truth", nerf_references, assets.reference, assets.class_dir, names, images)
    if truth is None:
        add("nerf_true_pose", None, None, None, note="no test_poses.json")
    else:
        add("nerf_true_pose", our_maps("score_truth", truth), nerf_s,
            (timer.seconds["render_truth"] + timer.seconds["score_truth"]) / n, note="the true pose is given")

    held, _fallback = heldout_view_indices(len(views.images), cfg.train.holdout_every,
                                           cfg.score.residual_fallback_views)
    fit_idx = [i for i in range(len(views.images)) if i not in set(held)] or list(range(len(views.images)))
    if rd_opts is None:
        for method in distillation_variants(DistillationOptions(), 0):
            add(method, None, None, None, note="not run (--reverse_distillation false)")
    else:
        records = [load_record(result_paths(cfg.run.output_dir, name).record) for name in names]
        estimated = np.stack([np.asarray(r["refined_pose"], dtype=np.float64) for r in records])
        poses_s = sum(float((r.get("seconds") or {}).get("pose", 0.0)) for r in records)
        for method, maps, scores, setup, query, note in distillation_rows(cfg, rd_opts, assets, fit_idx, images,
                                                                          estimated, progress):
            # the NeRF-view rows need the NeRF first, the aligned row also every query's pose
            if method in ("rd_nerf_views", "rd_aligned"):
                setup = None if nerf_s is None else setup + nerf_s + (poses_s if method == "rd_aligned" else 0.0)
            add(method, maps, setup, query, scores=scores, note=note)
    patchcore_description = None
    if pc_opts is None:
        for method in ("patchcore", "fused"):
            add(method, None, None, None, note="not run (--patchcore false or anomalib missing)")
    else:
        patchcore = timer.run("patchcore_fit", lambda: PatchCore(pc_opts, assets.device, cfg.run.seed)
                              .fit(views.images[fit_idx]))
        patchcore_description = patchcore.description
        pc_maps, pc_scores = timer.run("patchcore_predict", patchcore.predict, images)
        pc_q = timer.seconds["patchcore_predict"] / n
        add("patchcore", pc_maps, timer.seconds["patchcore_fit"], pc_q, scores=pc_scores,
            note=f"{patchcore.description}; fitted on {len(fit_idx)} training views, bank {patchcore.bank_size}")
        pc_normal, _ = patchcore.predict(views.images[held])
        held_references = make_references(assets.reference, views.poses[held], views.images[held])
        ours_normal = np.stack(reference_maps(cfg, assets.backbone, assets.residual, views.images[held],
                                              held_references, assets.device))
        fused = fuse_maps(ours, ours_normal, pc_maps, pc_normal)
        fused_setup = None if nerf_setup is None else nerf_setup + timer.seconds["patchcore_fit"]
        add("fused", fused, fused_setup, ours_q + pc_q, note=f"z-scores on {len(held)} held-out training views")

    order = list(METHODS)
    rows.sort(key=lambda row: order.index(row.method))
    run = cfg.run
    return {"class": run.class_name, "dataset": run.dataset_name, "n_images": n,
            "n_good": sum(t == GOOD for t in types), "n_train_views": len(views.images),
            "backbone": assets.backbone.description, "patchcore": patchcore_description,
            "scorer": cfg.score.scorer_record(), "rows": [row.record() for row in rows]}


PER_DEFECT = ("image_auroc", "pixel_auroc", "pixel_aupro")    # what evaluation.metrics gives per defect type


def defect_types_of(tables: list[dict]) -> list[str]:
    return sorted({d for t in tables for row in t["rows"] if row["metrics"] for d in row["metrics"]["per_defect"]})


def markdown_table(tables: list[dict]) -> str:
    """One markdown table: a row per (class, method), the metrics, the image AUROC per defect type, the times."""
    defects = defect_types_of(tables)
    head = (["class", "method", *(METRIC_HEADERS[k] for k in METRICS)]
            + [f"image / pixel AUROC {d}" for d in defects] + ["setup s", "s / query", "s / class", "note"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tables:
        for row in t["rows"]:
            m = row["metrics"]
            cells = [t["class"], row["description"]]
            cells += [metric_cell(m.get(k)) if m else "n/a" for k in METRICS]
            for d in defects:
                pd = (m or {}).get("per_defect", {}).get(d)
                cells.append(f"{metric_cell(pd['image_auroc'])} / {metric_cell(pd['pixel_auroc'])}"
                             if pd else "n/a")
            cells += [metric_cell(row["setup_s"], 1), metric_cell(row["query_s"], 2), metric_cell(row["class_s"], 1),
                      row["note"]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(tables: list[dict]) -> str:
    """The same rows as CSV (per-defect image and pixel AUROC and AUPRO as columns)."""
    defects = defect_types_of(tables)
    columns = ["class", "method", "description", *METRICS, *(f"{d}_{k}" for d in defects for k in PER_DEFECT),
               "setup_s", "query_s", "class_s", "n_queries", "note"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for t in tables:
        for row in t["rows"]:
            m = row["metrics"] or {}
            entry = {"class": t["class"], "method": row["method"], "description": row["description"],
                     **{k: m.get(k) for k in METRICS},
                     **{f"{d}_{k}": (m.get("per_defect", {}).get(d) or {}).get(k) for d in defects for k in PER_DEFECT},
                     **{k: row[k] for k in ("setup_s", "query_s", "class_s", "n_queries", "note")}}
            writer.writerow(entry)
    return buffer.getvalue()


def write_tables(base: Path, tables: list[dict], header: str = "") -> list[Path]:
    """<base>.md, <base>.csv and <base>.json, each written atomically."""
    base = Path(base)
    md, csv_path, js = base.with_suffix(".md"), base.with_suffix(".csv"), base.with_suffix(".json")
    atomic_write(md, lambda tmp: tmp.write_text(header + markdown_table(tables)))
    atomic_write(csv_path, lambda tmp: tmp.write_text(csv_table(tables)))
    write_json(js, {"header": header, "tables": tables})
    return [md, csv_path, js]
