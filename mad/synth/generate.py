"""Generate one class in the MAD layout: render every view in worker processes, write the images,
masks, transforms.json, test_poses.json and synth_stats.json, and move the folder into place atomically."""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError
from mad.layout import TEST_POSES_FILE
from mad.options import SynthOptions
from mad.synth.cameras import focal_from_angle, random_pose, train_poses
from mad.synth.defects import SUBTLE_DEFECTS, DefectStyle, make_defect_view
from mad.synth.detail import class_scene
from mad.synth.render import render_view
from mad.synth.scene import Scene

GENERATOR_VERSION = 1

# split codes used to derive per-image random streams
SPLIT_CODE = {"train": 0, "good": 1, "Burrs": 2, "Missing": 3, "Stains": 4}


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = image[:, :, ::-1]  # RGB -> BGR for cv2
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(data.tobytes())


def _work(task: dict) -> dict:
    """Render and write one image (runs in worker processes)."""
    scene: Scene = task["scene"]
    root = Path(task["root"])
    split, index, size, s = task["split"], task["index"], task["size"], task["supersample"]
    focal = task["focal"]
    if split == "train":
        c2w = task["pose"]
        _write_png(root / "train" / "good" / f"{index}.png", render_view(scene, c2w, size, size, focal, s))
        return {"split": split, "index": index, "pose": c2w}
    rng = np.random.default_rng(np.random.SeedSequence([task["seed"], SPLIT_CODE[split], index]))
    if split == "good":
        c2w = random_pose(rng, task["radius"], task["elev_range"])
        _write_png(root / "test" / "good" / f"{index}.png", render_view(scene, c2w, size, size, focal, s))
        return {"split": split, "index": index, "pose": c2w}
    image, mask, c2w, attempts = make_defect_view(
        scene, split, rng, height=size, width=size, focal=focal, supersample=s, radius=task["radius"],
        elev_range_deg=task["elev_range"], min_mask_pixels=task["min_mask_pixels"], style=task["defect_style"])
    _write_png(root / "test" / split / f"{index}.png", image)
    _write_png(root / "ground_truth" / split / f"{index}_mask.png", mask)
    return {"split": split, "index": index, "pose": c2w, "mask_pixels": int((mask > 0).sum()),
            "attempts": attempts}


def _frames(poses: dict, prefix_fn) -> list:
    return [{"file_path": prefix_fn(k), "transform_matrix": np.asarray(poses[k]).tolist()} for k in poses]


def generate_class(out_dir, class_name: str, opts: SynthOptions = SynthOptions(), *, overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Generate one class in the MAD layout under out_dir/class_name and return that folder.
    The folder is assembled in a hidden temporary sibling and renamed into place at the end."""
    out_dir = Path(out_dir)
    final = out_dir / class_name
    if not class_name or "/" in class_name or class_name.startswith("."):
        raise DataError(f"{final}: invalid class name {class_name!r}")
    if final.exists() and not overwrite:
        raise DataError(f"{final}: already exists (pass --overwrite to replace it)")
    opts.validated()
    seed, size, supersample, workers = opts.synth_seed, opts.synth_size, opts.synth_supersample, opts.synth_workers
    n_train, n_test_good, n_test_defect = opts.synth_n_train, opts.synth_n_test_good, opts.synth_n_test_defect
    camera_angle_x, radius, defect_types = opts.synth_camera_angle_x, opts.synth_radius, opts.synth_defect_types
    elev = (float(opts.synth_elev_min), float(opts.synth_elev_max))
    min_mask_frac = opts.synth_min_mask_frac

    scene = class_scene(seed, textured=opts.synth_textured, detail=opts.synth_detail, objects=opts.synth_objects)
    focal = focal_from_angle(size, camera_angle_x)
    min_mask_pixels = max(1, math.ceil(min_mask_frac * size * size))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{class_name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in ["train/good", "test/good"] + [f"test/{d}" for d in defect_types] + \
                   [f"ground_truth/{d}" for d in defect_types]:
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        common = {"scene": scene, "root": str(tmp), "size": size, "supersample": supersample, "focal": focal,
                  "seed": int(seed), "radius": radius, "elev_range": elev, "min_mask_pixels": min_mask_pixels,
                  "defect_style": SUBTLE_DEFECTS if opts.synth_detail else DefectStyle()}
        tasks = [dict(common, split=d, index=i) for d in defect_types for i in range(n_test_defect)]
        tasks += [dict(common, split="good", index=i) for i in range(n_test_good)]
        tasks += [dict(common, split="train", index=i, pose=p)
                  for i, p in enumerate(train_poses(n_train, radius, elev, seed))]
        results = _run_tasks(tasks, workers, progress, f"synth {class_name}")

        by_split: dict = {}
        for r in results:
            by_split.setdefault(r["split"], {})[r["index"]] = r
        train = {i: by_split["train"][i]["pose"] for i in range(n_train)}
        _write_json(tmp / "transforms.json", {
            "camera_angle_x": camera_angle_x,
            "frames": _frames(train, lambda i: f"train/good/{i}.png")})
        test_frames = []
        for split in ["good", *defect_types]:
            for i in sorted(by_split.get(split, {})):
                test_frames.append({"file_path": f"test/{split}/{i}.png",
                                    "transform_matrix": np.asarray(by_split[split][i]["pose"]).tolist()})
        _write_json(tmp / TEST_POSES_FILE, {"camera_angle_x": camera_angle_x, "frames": test_frames})
        stats = {
            "generator": f"mad.synthesize v{GENERATOR_VERSION}",
            "class_name": class_name, "seed": int(seed), "size": size, "supersample": supersample,
            "camera_angle_x": camera_angle_x, "radius": radius, "elevation_range_deg": list(elev),
            "min_mask_pixels": min_mask_pixels,
            "counts": {"train": n_train, "test_good": n_test_good,
                       **{f"test_{d}": n_test_defect for d in defect_types}},
            "mask_area_percent": {}, "rejected_views": {},
        }
        if opts.synth_textured:  # only when on: flat classes stay byte-identical to earlier versions
            stats["textured"] = True
        if opts.synth_objects:  # likewise
            stats["objects"] = int(opts.synth_objects)
        if opts.synth_detail:  # likewise
            stats["detail"] = True
            stats["defect_style"] = "subtle"     # mad.synth.defects.SUBTLE_DEFECTS
        for d in defect_types:
            rs = list(by_split.get(d, {}).values())
            if not rs:
                continue
            pct = np.array([r["mask_pixels"] for r in rs]) / (size * size) * 100.0
            stats["mask_area_percent"][d] = {k: round(float(f(pct)), 4) for k, f in
                                             (("min", np.min), ("median", np.median), ("max", np.max),
                                              ("mean", np.mean))}
            stats["rejected_views"][d] = int(sum(r["attempts"] - 1 for r in rs))
        _write_json(tmp / "synth_stats.json", stats)

        if final.exists():
            old = out_dir / f".{class_name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _run_tasks(tasks: list, workers: int | None, progress: bool, desc: str) -> list:
    from common.progress import progress_bar

    workers = int(workers or os.cpu_count() or 1)
    workers = max(1, min(workers, len(tasks)))
    bar = progress_bar(total=len(tasks), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    results = []
    try:
        if workers == 1:
            for t in tasks:
                results.append(_work(t))
                bar.update()
        else:
            ctx = mp.get_context("spawn")  # safe even when the caller has torch/OpenMP threads running
            with ctx.Pool(workers) as pool:
                for r in pool.imap_unordered(_work, tasks, chunksize=1):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    return results
