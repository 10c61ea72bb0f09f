"""Every GPU figure of the project from one prepared call, with its own time budget.

    bash benchmarks/gpu_check.sh                       # on the device: carried wheels, one environment line, then
    python -m benchmarks.gpu_check --out OUT [--budget_s 330] [--sections nerf,pose] [config options]
    python -m benchmarks.gpu_check --tiny --out /tmp/gpu_check     # the CPU rehearsal (tests/test_gpu_check.py)

First generates the class of configs/synthetic/gpu_check.txt (400x400; --tiny: gpu_check_tiny.txt, 32x32)
with the project's generator on all cores, under --work_dir (data, checkpoints and maps live there, never in
OUT), then runs the sections in this order:

  cuda_paths  bf16 autocast (amp: the dtype the field's first linear layer puts out), fused Adam, checkpoint
              save and resume for every field: N steps, save, a new trainer built from the checkpoint, M more,
              against N + M straight. `resume_exact` only when every tensor (weights, optimizer state, occupancy
              grid, the device generator) is bitwise equal; the tolerance seen either way: the largest weight
              difference, absolute and relative to that tensor's largest weight, and the PSNR of one rendered
              view of each run. A second straight run is the control: does the device repeat a run at all?
              Then iNeRF (a few steps from turned true poses) and scoring on the device.
  nerf        for every field (nerf.fields.FIELD_NAMES) with and without the occupancy grid: training rays/s,
              samples per ray and held-out PSNR after each of --nerf_budgets seconds of training (cumulative,
              resumed; the variants take turns budget by budget), ms to render a held-out view at the class's
              size (benchmarks.bench_occupancy.train_to). Then the rays-per-step sweep: the config's field with
              the grid at each of --sweep_rays rays per step, a fresh run of --sweep_budget_s seconds each, the
              learning rates and the schedule's step counts scaled to the batch (sweep_config).
  detection   the pipeline on the class (omniposead.pipeline.run_class, then the evaluation): pixel / image
              AUROC, AUPRO and wall time end to end (NeRF training + maps + evaluation); then the decomposition
              rows oracle / NeRF at the true pose / pipeline (omniposead.decomposition).
  pose        median rotation / translation error and share under 2 degrees after retrieval and after iNeRF,
              seconds per query, batched by inerf_batch (omniposead.pose_accuracy): from the detection
              section's per-image poses when it made every map in this call, else estimated here.

Pose and detection use the NeRF of the config's field and sampling as the nerf section left it (trained to its
last budget); without it they train one first, for at most that long.

Time: --budget_s in all, the data step included. Each section's limit is its share (SHARES) of the time left,
among the sections still to run, so time one leaves over goes to the next. A section checks its clock before
each piece of work and skips what would not fit; an alarm stops it at its limit. Either way it is reported as
cut, with why, and keeps every figure it had; a section that raises is reported as failed with its error line,
and the others still run. OUT/gpu_report.json and OUT/gpu_report.md are rewritten (atomically) after every
section. --sections a,b runs only those, keeping the other sections of the report already in OUT.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.results import load_results
from anomaly.scorer import anomaly_map, image_scores
from benchmarks.bench_occupancy import TABLE_HEADER, row as nerf_row, train_to
from common.errors import exit_on_user_error
from common.io import atomic_write, write_json
from common.rotations import rotation_error_deg
from common.runtime import resolve_device, seed_everything, synchronize
from evaluation.class_evaluation import evaluate_class as evaluate_maps
from evaluation.report import cost_line
from features.backbone import load_backbone
from inerf.optimize import refine_poses
from mad.layout import GOOD
from mad.loader import TrainViews, load_test_set, load_train_views
from nerf.checkpoint import checkpoint_path, read_checkpoint
from nerf.options import NeRFOptions
from nerf.psnr import heldout_psnr
from nerf.trainer import NeRFTrainer
from omniposead import pose_accuracy
from omniposead.config import OmniposeConfig, parse_config
from omniposead.decomposition import decompose_class, format_table as decomposition_table, scorer_key
from omniposead.pipeline import nerf_trainer, prepare_class, run_class, to_chw
from omniposead.pose_calibration import turned_about_origin

SECTIONS = ("cuda_paths", "nerf", "detection", "pose")
# Each section's share of the time left, among those still to run. At the device defaults (330 s) the 2026-12-04
# H200 timings (data 9 s, cuda_paths 23 s; nerf 137 s for the four variants, plus about 3 x 10 s for the sweep;
# detection with the tri-plane NeRF 115 s of which 25 s were its training, which the nerf section does here)
# give limits of about 31, 187, 111 and 39 s for needs of about 25, 167, 90 and 1 s (benchmarks/RESULTS.md, "GPU").
SHARES = {"cuda_paths": 0.1, "nerf": 0.6, "detection": 0.3, "pose": 0.05}
DATA_SHARE = 0.3            # at most this share of the whole budget for generating and loading the class
REPORT_JSON, REPORT_MD = "gpu_report.json", "gpu_report.md"
CONFIGS = {False: "configs/synthetic/gpu_check.txt", True: "configs/synthetic/gpu_check_tiny.txt"}
# Defaults of the device call and of the CPU rehearsal (--tiny). The rehearsal's budget only bounds it (about 30 s
# on an idle 2-core machine): 180 s leaves its cuda_paths section 17 s, so that other jobs' load does not cut it.
DEFAULTS = {False: {"budget_s": 330.0, "nerf_budgets": [10.0, 25.0], "resume_steps": [12, 12], "inerf_steps": 30,
                    "sweep_rays": [4096, 16384, 65536], "sweep_budget_s": 8.0},
            True: {"budget_s": 180.0, "nerf_budgets": [1.0, 2.0], "resume_steps": [6, 6], "inerf_steps": 5,
                   "sweep_rays": [64, 256, 1024], "sweep_budget_s": 1.0}}
# The sweep's learning rates: x sqrt(rays / N_rand) (Adam's step is about the learning rate whatever the batch, and
# a batch k times larger has a gradient sqrt(k) times less noisy), at most x SWEEP_LR_CAP: the planes' 2e-2 is
# already TensoRF's rate for its grids, so 65536 rays train them at 4e-2 rather than 8e-2 (a guess, to measure).
SWEEP_LR_CAP = 2.0
TURN_DEG = 5.0              # the iNeRF check starts this far (camera rotation about the object) from the true pose
NO_LIMIT_ITERS = 10 ** 9    # n_iters of time-budgeted training: the budget stops it


def field_names() -> tuple[str, ...]:
    """The radiance fields the project has (nerf.fields.FIELD_NAMES); only the vanilla MLP before that module."""
    try:
        import nerf.fields as fields
    except ModuleNotFoundError as err:
        if err.name != "nerf.fields":
            raise
        return ("mlp",)
    return tuple(getattr(fields, "FIELD_NAMES", ("mlp",)))


def config_field(nerf: NeRFOptions) -> str:
    return getattr(nerf, "field", "mlp")


def with_field(nerf: NeRFOptions, name: str) -> NeRFOptions:
    """The NeRF options with field `name` (the `field` option; before it existed, only "mlp")."""
    if hasattr(nerf, "field"):
        return nerf.replace(field=name)
    if name != "mlp":
        raise ValueError(f"these NeRF options have no field option, so no field {name!r}")
    return nerf


class SectionCut(BaseException):
    """A section's time limit passed (raised by the alarm; not an Exception, so that no `except Exception` in
    the code it interrupts takes it for an error)."""


@dataclass
class Limit:
    """A section's clock."""
    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.used()


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise SectionCut when `seconds` have passed (SIGALRM; only the main thread can take signals: elsewhere
    the sections' own clock checks are the only cut)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SectionCut

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Check:
    """What the sections share: the class's config (paths under the work folder), the device, the options."""
    cfg: OmniposeConfig
    device: torch.device
    args: argparse.Namespace
    work: Path
    views: TrainViews | None = None
    maps_complete: bool = False      # the detection section made every map in this call (pose reads its poses)

    def need_views(self) -> TrainViews:
        if self.views is None:
            raise RuntimeError("the class's training views are not loaded: the data step did not finish")
        return self.views


# --------------------------------------------------------------------------------------------- data


def data_step(check: Check, limit: Limit, out: dict) -> None:
    """Generate the class when missing (all cores unless the config says synth_workers), load its views."""
    cfg = check.cfg
    out["generated_now"] = not cfg.run.class_dir.is_dir()
    out["doing"] = "generating the class"
    class_dir = prepare_class(cfg)
    out["generation_s"] = limit.used()
    out["doing"] = "loading the training views"
    check.views = views = load_train_views(class_dir, cfg.run.image_downscale, cfg.run.white_bkgd)
    stats = json.loads((class_dir / "synth_stats.json").read_text())
    out.update(class_dir=str(class_dir), size=f"{views.height}x{views.width}", counts=stats.get("counts"),
               workers=cfg.synth.synth_workers or os.cpu_count())


# --------------------------------------------------------------------------------------------- cuda_paths


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(dotted name, leaf) of nested dicts and lists."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _flat(f"{prefix}.{key}", value[key])
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _flat(f"{prefix}.{i}", item)
    else:
        yield prefix, value


@dataclass
class StateComparison:
    """Two trainer states side by side: the tensors compared, the leaves that differ, and how far apart the
    weights are (the floating-point tensors of the `weights` part): the largest absolute difference, its
    tensor, and the largest difference relative to its tensor's largest absolute weight."""
    compared: int
    differing: list[str]
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    worst: str | None = None

    @property
    def exact(self) -> bool:
        """Every leaf bitwise equal (same dtype, shape and values)."""
        return not self.differing


def _weight_difference(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(largest |x - y|, that relative to the largest |x|) of two floating-point tensors; inf when their shapes
    differ."""
    if x.shape != y.shape:
        return math.inf, math.inf
    if x.numel() == 0:
        return 0.0, 0.0
    x, y = x.detach().double(), y.detach().to(x.device).double()
    diff = float((x - y).abs().max())
    scale = float(x.abs().max())
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def state_differences(a: dict, b: dict, parts: tuple[str, ...], weights: str = "model") -> StateComparison:
    """Compare two trainer states over `parts`: bitwise, leaf by leaf, and by how much the weights (the
    floating-point tensors under `weights`) differ, so that a resume that is not exact reports its tolerance."""
    left, right = dict(_flat("", {p: a[p] for p in parts})), dict(_flat("", {p: b[p] for p in parts}))
    result = StateComparison(compared=0, differing=sorted(n.lstrip(".") for n in set(left) ^ set(right)))
    for name in sorted(set(left) & set(right)):
        x, y = left[name], right[name]
        if torch.is_tensor(x) and torch.is_tensor(y):
            result.compared += 1
            same = x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y.to(x.device))
        else:
            same = torch.is_tensor(x) == torch.is_tensor(y) and x == y
        if same:
            continue
        name = name.lstrip(".")
        result.differing.append(name)
        if name.startswith(f"{weights}.") and torch.is_tensor(x) and torch.is_tensor(y) and x.is_floating_point():
            diff, rel = _weight_difference(x, y)
            if diff > result.max_abs_diff or result.worst is None:
                result.max_abs_diff, result.worst = diff, name
            result.max_rel_diff = max(result.max_rel_diff, rel)
    return result


def view_psnr(trainer: NeRFTrainer, views: TrainViews, index: int = 0) -> float:
    """PSNR of the trainer's render of training view `index` at the class's size against its image."""
    device = trainer.device
    pose = torch.as_tensor(views.poses[index:index + 1], dtype=torch.float32, device=device)
    image = torch.as_tensor(views.images[index:index + 1], dtype=torch.float32, device=device)
    return heldout_psnr(trainer.renderer, pose, image, views.intrinsics)


def resume_check(check: Check, name: str, out: dict) -> NeRFTrainer:
    """N steps, save, a new trainer from the checkpoint, M more steps, against N + M straight (no held-out
    views, the occupancy grid updated before and after the resume), and a second straight run as the control.
    `resume_exact` only when every tensor is bitwise equal; the weights' largest difference and one view's PSNR
    of the straight and the resumed run say how close it is either way. Returns the resumed trainer."""
    base, (n, m) = check.cfg, check.args.resume_steps
    nerf = with_field(base.nerf, name)
    train = base.train.replace(holdout_every=0, max_train_minutes=0.0, save_every_minutes=0.0,
                               i_weights=NO_LIMIT_ITERS, i_val=NO_LIMIT_ITERS,
                               occupancy_warmup=max(1, n // 2), occupancy_update_every=max(1, (n + m) // 5))
    root = check.work / "resume_check" / name
    shutil.rmtree(root, ignore_errors=True)

    def trainer(folder: str, steps: int) -> NeRFTrainer:
        cfg = dataclasses.replace(base, nerf=nerf, train=train.replace(n_iters=steps),
                                  run=base.run.replace(ckpt_root=str(root / folder)))
        return nerf_trainer(cfg, check.need_views(), check.device, progress=False)

    straight = trainer("straight", n + m)
    dtypes: set[str] = set()
    linear = next((mod for mod in straight.renderer.coarse.modules() if isinstance(mod, torch.nn.Linear)), None)
    hook = None if linear is None else linear.register_forward_hook(
        lambda mod, inputs, output: dtypes.add(str(output.dtype).removeprefix("torch.")))
    start = time.perf_counter()
    try:
        straight.run()
        synchronize(check.device)
    finally:
        if hook is not None:
            hook.remove()
    out.update(steps=f"{n} + {m}", straight_s=time.perf_counter() - start, autocast_dtype=sorted(dtypes),
               fused_adam=bool(straight.optimizer.defaults.get("fused")),
               generator_device=str(straight.generator.device))
    trainer("resumed", n).run()
    resumed = trainer("resumed", n + m)           # built from the checkpoint the first run saved
    out["resumed_from_step"] = resumed.step
    resumed.run()
    again = trainer("again", n + m)               # the control: does the device repeat a run bit for bit at all?
    again.run()
    found, control = _compare(straight, resumed), _compare(straight, again)
    psnr_straight, psnr_resumed = view_psnr(straight, check.need_views()), view_psnr(resumed, check.need_views())
    out.update(tensors_compared=found.compared, differing=found.differing[:8], differing_count=len(found.differing),
               generator_equal="generator" not in found.differing,
               max_abs_diff=found.max_abs_diff, max_rel_diff=found.max_rel_diff, worst_tensor=found.worst,
               view_psnr={"straight": psnr_straight, "resumed": psnr_resumed, "delta": psnr_resumed - psnr_straight},
               repeatable=control.exact, differing_again=control.differing[:8],
               differing_again_count=len(control.differing), again_max_abs_diff=control.max_abs_diff,
               again_max_rel_diff=control.max_rel_diff,
               grid_updates=straight.renderer.grid.updates if straight.renderer.grid is not None else None,
               resume_exact=found.exact and out["resumed_from_step"] == n)
    return resumed


def _compare(a: NeRFTrainer, b: NeRFTrainer) -> StateComparison:
    """state_differences of two trainers' step, weights, optimizer, occupancy grid, and their device generators."""
    found = state_differences(a.checkpoint_state(), b.checkpoint_state(), ("step", "model", "optimizer", "occupancy"))
    found.compared += 1
    if not torch.equal(a.generator.get_state(), b.generator.get_state()):
        found.differing.append("generator")
    return found


def inerf_and_scoring(check: Check, renderer, out: dict) -> None:
    """iNeRF from true poses turned by TURN_DEG, a reference render at the result and its anomaly map, all on
    the device: a good and a defective test image of the class."""
    cfg, device, views = check.cfg, check.device, check.need_views()
    samples = load_test_set(cfg.run.class_dir, downscale=cfg.run.image_downscale, white_bkgd=cfg.run.white_bkgd)
    samples = [next(s for s in samples if s.defect_type == GOOD), next(s for s in samples if s.defect_type != GOOD)]
    truth = pose_accuracy.load_test_poses(cfg.run.class_dir)
    true = np.stack([truth[s.name] for s in samples]).astype(np.float32)
    starts = np.stack([turned_about_origin(pose, TURN_DEG, seed=i) for i, pose in enumerate(true)])
    images = np.stack([s.image for s in samples])
    steps = min(check.args.inerf_steps, cfg.inerf.inerf_steps)
    out["doing"] = "the iNeRF check"
    synchronize(device)
    t0 = time.perf_counter()
    result = refine_poses(renderer, images, starts, views.intrinsics, cfg.inerf, device, seed=cfg.run.seed,
                          steps=steps)
    synchronize(device)
    out["inerf"] = {"queries": len(samples), "steps": steps, "rays_per_query": cfg.inerf.inerf_rays,
                    "seconds": time.perf_counter() - t0, "initial_loss": float(result.initial_loss.mean()),
                    "final_loss": float(result.final_loss.mean()),
                    "rot_error_start_deg": rotation_error_deg(starts, true).tolist(),
                    "rot_error_end_deg": rotation_error_deg(result.poses, true).tolist(),
                    "finite": bool(np.isfinite(result.poses).all() and np.isfinite(result.final_loss).all())}
    out["doing"] = "the scoring check"
    backbone = load_backbone(cfg.backbone, device)
    t0 = time.perf_counter()
    references = torch.stack([renderer.render_image(torch.as_tensor(pose, device=device), views.height, views.width,
                                                    views.intrinsics) for pose in result.poses]).permute(0, 3, 1, 2)
    maps = anomaly_map(backbone, to_chw(images, device), references, cfg.score)
    scores = image_scores(maps, cfg.score.image_pool())
    synchronize(device)
    out["scoring"] = {"backbone": backbone.description, "map_device": maps.device.type,
                      "map_shape": list(maps.shape), "seconds": time.perf_counter() - t0,
                      "finite": bool(torch.isfinite(maps).all()), "image_scores": scores.cpu().tolist()}


def cuda_paths(check: Check, limit: Limit, out: dict) -> None:
    device = check.device
    out.update(device=device_name(device), amp=bool(check.cfg.nerf.amp and device.type == "cuda"),
               tf32_matmul=torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None, fields={})
    renderer = None
    for name in field_names():
        out["doing"] = f"the resume check of field {name}"
        resumed = resume_check(check, name, out["fields"].setdefault(name, {}))
        if name == config_field(check.cfg.nerf):
            renderer = resumed.frozen_renderer()
    inerf_and_scoring(check, renderer, out)


# --------------------------------------------------------------------------------------------- nerf


def nerf_variants(check: Check) -> list[tuple[str, OmniposeConfig, str]]:
    """(name, config, checkpoint root) of every field with and without the occupancy grid (those --variants
    names); the variant of the config's own field and sampling trains in the class's checkpoint folder, for pose
    and detection to use."""
    cfg = check.cfg
    variants = []
    for name in field_names():
        for grid in (False, True):
            label = f"{name}/{'grid' if grid else 'plain'}"
            if check.args.variants and label not in check.args.variants:
                continue
            nerf = with_field(cfg.nerf, name).replace(occupancy_grid=grid)
            own = name == config_field(cfg.nerf) and grid == cfg.nerf.occupancy_grid
            root = cfg.run.ckpt_root if own else str(check.work / "nerf_variants" / label.replace("/", "-"))
            variants.append((label, dataclasses.replace(cfg, nerf=nerf), root))
    unknown = sorted(set(check.args.variants) - {label for label, _, _ in variants})
    if unknown:
        raise ValueError(f"unknown NeRF variant(s) {', '.join(unknown)} in --variants; the fields are "
                         f"{', '.join(field_names())}, each /plain or /grid")
    return variants


def nerf_section(check: Check, limit: Limit, out: dict) -> None:
    views, budgets = check.need_views(), check.args.nerf_budgets
    variants = nerf_variants(check)
    out.update(budgets_s=budgets, render_size=f"{views.height}x{views.width}", fields=list(field_names()),
               variants={}, table=[])
    for _, vcfg, root in variants:           # every variant starts from scratch
        shutil.rmtree(dataclasses.replace(vcfg.run, ckpt_root=root).ckpt_dir, ignore_errors=True)
    done = {label: 0.0 for label, _, _ in variants}
    overhead = [0.0]                         # seconds a run takes beyond its training budget (loading, validation)
    for budget in budgets:                   # the variants take turns, budget by budget
        for label, vcfg, root in variants:
            if not _fits(limit, out, overhead, budget - done[label], f"{label} to {budget:g} s and what follows"):
                return
            out["doing"] = f"training {label} to {budget:g} s"
            figures = _timed_train(check, vcfg, root, budget - done[label], overhead)
            done[label] = budget
            out["variants"].setdefault(label, {})[f"{budget:g}s"] = {"budget_s": budget, **figures}
            out["table"].append(nerf_row(label, f"{budget:g} s", figures))
    rays_sweep(check, limit, out, overhead)


def _fits(limit: Limit, out: dict, overhead: list[float], seconds: float, what: str) -> bool:
    """Whether a run of `seconds` of training (plus the largest overhead seen) fits in the section's time left;
    if not, the cut is noted with `what` it leaves out."""
    if limit.left() >= seconds + overhead[0]:
        return True
    out["cut"].append(f"{what}: {max(limit.left(), 0):.0f} s of the section left, a run takes about "
                      f"{seconds + overhead[0]:.0f} s")
    return False


def _timed_train(check: Check, cfg: OmniposeConfig, root: str, seconds: float, overhead: list[float]) -> dict:
    """train_to for `seconds` more of training; updates the largest overhead seen beyond the training budget."""
    t0 = time.perf_counter()
    figures = train_to(cfg, check.need_views(), check.device, root, minutes=seconds / 60.0, n_iters=NO_LIMIT_ITERS)
    overhead[0] = max(overhead[0], time.perf_counter() - t0 - seconds)
    return figures


def sweep_config(cfg: OmniposeConfig, rays: int) -> tuple[OmniposeConfig, dict]:
    """The config's field with the occupancy grid at `rays` rays per step, and its settings for the report. The
    learning rates (lrate, and the planes' grid_lrate) go x sqrt(rays / N_rand), at most x SWEEP_LR_CAP; the
    step counts of the schedule (occupancy warm-up and update interval, lrate_decay, precrop) go x N_rand / rays,
    so that each comes after as many rays as at the config's own batch."""
    train, nerf = cfg.train, cfg.nerf.replace(occupancy_grid=True)
    lr_scale = min(math.sqrt(rays / train.N_rand), SWEEP_LR_CAP)
    per_step = train.N_rand / rays

    def steps(value: int, least: int) -> int:
        return max(least, round(value * per_step)) if value else 0

    train = train.replace(N_rand=rays, lrate=train.lrate * lr_scale, lrate_decay=train.lrate_decay * per_step,
                          occupancy_warmup=steps(train.occupancy_warmup, 1),
                          occupancy_update_every=steps(train.occupancy_update_every, 1),
                          precrop_iters=steps(train.precrop_iters, 1))
    if hasattr(nerf, "grid_lrate"):
        nerf = nerf.replace(grid_lrate=nerf.grid_lrate * lr_scale)
    settings = {"rays_per_step": rays, "lr_scale": lr_scale, "lrate": train.lrate,
                "grid_lrate": getattr(nerf, "grid_lrate", None), "lrate_decay": train.lrate_decay,
                "occupancy_warmup": train.occupancy_warmup, "occupancy_update_every": train.occupancy_update_every}
    return dataclasses.replace(cfg, nerf=nerf, train=train), settings


SWEEP_HEADER = (("| rays/step | lr x | lrate | grid_lrate | warm-up steps | grid update every | steps | train s "
                 "| rays/s | samples/ray | held-out PSNR | ms/view | occupied |"),
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def sweep_row(r: dict) -> str:
    """One markdown row of SWEEP_HEADER (the settings and the error of a run that did not fit in memory)."""
    if "error" in r:
        return (f"| {r['rays_per_step']} | {r['lr_scale']:.2f} | {r['lrate']:.3g} | {_num(r['grid_lrate'], 4)} | "
                f"{r['occupancy_warmup']} | {r['occupancy_update_every']} | {r['error']} | | | | | | |")
    occupied = f"{100 * r['occupied_fraction']:.1f} %" if r.get("occupied_fraction") is not None else "-"
    return (f"| {r['rays_per_step']} | {r['lr_scale']:.2f} | {r['lrate']:.3g} | {_num(r['grid_lrate'], 4)} | "
            f"{r['occupancy_warmup']} | {r['occupancy_update_every']} | {r['steps']} | {r['train_s']:.0f} | "
            f"{r['rays_per_s']:,.0f} | {r['samples_per_ray']:.1f} | {r['val_psnr']:.2f} | "
            f"{r['render_ms_per_view']:.0f} | {occupied} |")


def rays_sweep(check: Check, limit: Limit, out: dict, overhead: list[float]) -> None:
    """Rays per step: the config's field with the grid at each of --sweep_rays rays per step (sweep_config), a
    fresh run of --sweep_budget_s seconds each: does a bigger batch feed the device better (rays/s), and does that
    buy held-out PSNR at equal wall time?"""
    if not check.args.sweep_rays:
        return
    budget, field_name = check.args.sweep_budget_s, config_field(check.cfg.nerf)
    out["sweep"] = {"field": field_name, "budget_s": budget, "base_rays": check.cfg.train.N_rand,
                    "lr_cap": SWEEP_LR_CAP, "rows": {}, "table": []}
    for rays in check.args.sweep_rays:
        if not _fits(limit, out, overhead, budget, f"the sweep at {rays} rays per step and what follows"):
            return
        cfg, settings = sweep_config(check.cfg, rays)
        root = str(check.work / "nerf_sweep" / str(rays))
        shutil.rmtree(dataclasses.replace(cfg.run, ckpt_root=root).ckpt_dir, ignore_errors=True)
        out["doing"] = f"the sweep at {rays} rays per step"
        try:
            row = {**settings, **_timed_train(check, cfg, root, budget, overhead)}
        except torch.OutOfMemoryError as err:      # a batch too big for this device: say so, try the next one
            torch.cuda.empty_cache()
            row = {**settings, "error": error_line(err)}
        out["sweep"]["rows"][str(rays)] = row
        out["sweep"]["table"].append(sweep_row(row))


# --------------------------------------------------------------------------------------------- pose and detection


def class_nerf(check: Check, limit: Limit, out: dict) -> OmniposeConfig:
    """The config pose and detection run with: the class's NeRF as the nerf section left it, or trained now
    (the last nerf budget, at most 40 % of the section's time left), and n_iters at its step so that the
    pipeline takes it as it is."""
    cfg = check.cfg
    path = checkpoint_path(cfg.run.ckpt_dir)
    trained_here = not path.is_file()
    if trained_here:
        seconds = min(check.args.nerf_budgets[-1], max(1.0, 0.4 * limit.left()))
        out["doing"] = f"training the class's NeRF for {seconds:.0f} s"
        train_to(cfg, check.need_views(), check.device, cfg.run.ckpt_root, minutes=seconds / 60.0,
                 n_iters=NO_LIMIT_ITERS)
    state = read_checkpoint(path)
    out["nerf"] = {"field": config_field(cfg.nerf), "occupancy_grid": cfg.nerf.occupancy_grid,
                   "step": int(state["step"]), "train_s": float(state["elapsed_s"]), "trained_here": trained_here}
    return dataclasses.replace(cfg, train=cfg.train.replace(n_iters=max(int(state["step"]), 1)))


def detection(check: Check, limit: Limit, out: dict) -> None:
    cfg = class_nerf(check, limit, out)
    before = len(load_results(cfg.run.output_dir)) if cfg.run.output_dir.is_dir() else 0
    out["doing"] = "making the maps (poses, references, anomaly maps)"
    t0 = time.perf_counter()
    maps = run_class(cfg, check.device, progress=False)
    t1 = time.perf_counter()
    out["doing"] = "evaluating the maps"
    metrics = evaluate_maps(cfg.run, cfg.score, cfg.evaluation, samples=maps.test_set)
    t2 = time.perf_counter()
    check.maps_complete = True
    out.update({key: metrics[key] for key in ("pixel_auroc", "image_auroc", "pixel_aupro", "n_images", "n_good",
                                              "backbone", "per_defect")},
               pose_unsure=metrics.get("pose_unsure") or [], maps_found_before=before,
               query_cost=metrics.get("query_cost"))
    wall = {"nerf_training": out["nerf"]["train_s"], "maps": t1 - t0, "evaluation": t2 - t1}
    out["wall_s"] = {**wall, "end_to_end": sum(wall.values())}
    out["doing"] = "the decomposition"
    table = decompose_class(cfg, check.device, progress=False)
    out["decomposition"] = {"scorer": scorer_key(cfg), "rows": table["rows"], "seconds": time.perf_counter() - t2,
                            "table": decomposition_table(table)}


def pose(check: Check, limit: Limit, out: dict) -> None:
    cfg = class_nerf(check, limit, out)
    if check.maps_complete:
        out["source"] = "the detection section's per-image poses (the pipeline's retrieval + iNeRF)"
        report = pose_accuracy.evaluate_class(cfg, from_outputs=True, progress=False)
        per_image = [r.record["seconds"]["pose"] for r in load_results(cfg.run.output_dir)]
        report["seconds_per_query"] = float(np.mean(per_image))
    else:
        out["source"] = "retrieval + iNeRF on every test image here (omniposead.pose_accuracy)"
        out["doing"] = "estimating every test pose"
        report = pose_accuracy.evaluate_class(cfg, device=check.device, progress=False)
    out.update(n=report["n"], stages=report["stages"], seconds_per_query=report["seconds_per_query"],
               batch=cfg.inerf.inerf_batch, confidence=report.get("confidence"), settings=report["settings"],
               table=pose_accuracy.format_table(report))


SECTION_FUNCTIONS: dict[str, Callable[[Check, Limit, dict], None]] = {
    "cuda_paths": cuda_paths, "nerf": nerf_section, "detection": detection, "pose": pose}


# --------------------------------------------------------------------------------------------- running


def error_line(err: BaseException) -> str:
    """`Type: first line of the message (file:line of the innermost frame)`."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[0] if message else ''}{where}"


def run_step(name: str, fn: Callable[[Check, Limit, dict], None], check: Check, limit_s: float) -> dict:
    """Run one section under its limit; its result: status ok / cut / failed, seconds, figures, warnings."""
    out: dict = {"status": "running", "limit_s": round(limit_s, 1), "started": now(), "cut": []}
    limit = Limit(limit_s)
    print(f"[gpu_check] {name}: limit {limit_s:.0f} s", flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with alarm(limit_s):
                fn(check, limit, out)
            out["status"] = "cut" if out["cut"] else "ok"
        except SectionCut:
            out["status"] = "cut"
            out["cut"].append(f"its limit of {limit_s:.0f} s passed during {out.get('doing', 'its work')}")
        except Exception as err:  # noqa: BLE001 - a failed section is reported, and the others still run
            out["status"], out["error"] = "failed", error_line(err)
            traceback.print_exc()
    out.pop("doing", None)
    out["seconds"] = round(limit.used(), 2)
    messages = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
    if messages:
        out["warnings"] = messages[:5]
    print(f"[gpu_check] {name}: {out['status']} in {out['seconds']:.0f} s"
          + (f" ({out['error']})" if "error" in out else "") + "".join(f"; cut: {c}" for c in out["cut"]), flush=True)
    return out


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def machine(device: torch.device) -> dict:
    return {"device": device_name(device), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpus": os.cpu_count(), "host": platform.node()}


# --------------------------------------------------------------------------------------------- the report


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _resume_cell(f: dict) -> str:
    """`exact`, or the tolerance seen: the largest weight difference (absolute, relative) and its tensor."""
    if f.get("resume_exact"):
        return "exact"
    if f.get("max_abs_diff") is None:        # a report from before the tolerance was measured
        return str(f.get("resume_exact"))
    return (f"not exact: {f.get('differing_count')} leaves differ; max weight diff {f['max_abs_diff']:.3g} "
            f"(rel. {f['max_rel_diff']:.3g}, {f.get('worst_tensor')})")


def _psnr_cell(f: dict) -> str:
    v = f.get("view_psnr")
    return "-" if not v else f"{v['straight']:.3f} / {v['resumed']:.3f} ({v['delta']:+.4f})"


def _md_cuda_paths(s: dict) -> list[str]:
    lines = [f"device {s.get('device')}; bf16 autocast on: {s.get('amp')}; TF32 matmuls: {s.get('tf32_matmul')}", "",
             ("| field | resume | steps N + M | resumed from | tensors compared | differing | view PSNR straight / "
              "resumed (diff) dB | device generator equal | straight run repeatable (differing; max weight diff) "
              "| grid updates | autocast dtype | fused Adam | generator on |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, f in (s.get("fields") or {}).items():
        again = f.get("again_max_abs_diff")
        lines.append(f"| {name} | {_resume_cell(f)} | {f.get('steps')} | {f.get('resumed_from_step')} | "
                     f"{f.get('tensors_compared')} | {', '.join(f.get('differing') or []) or '-'} | {_psnr_cell(f)} | "
                     f"{f.get('generator_equal')} | {f.get('repeatable')} "
                     f"({', '.join(f.get('differing_again') or []) or '-'}"
                     f"{'' if again is None else f'; {again:.3g}'}) "
                     f"| {f.get('grid_updates')} | {', '.join(f.get('autocast_dtype') or [])} "
                     f"| {f.get('fused_adam')} | {f.get('generator_device')} |")
    lines += ["", ("resume: exact only when every tensor (weights, optimizer state, occupancy grid, device generator) "
                   "is bitwise equal to the straight run's; otherwise the largest weight difference, relative to "
                   "its tensor's largest weight. View PSNR: training view 0 at the class's size, each run's render "
                   "against the image.")]
    if s.get("inerf"):
        i = s["inerf"]
        lines += ["", (f"iNeRF on the device: {i['queries']} queries x {i['steps']} steps x {i['rays_per_query']} rays "
                       f"in {i['seconds']:.2f} s; loss {i['initial_loss']:.4g} -> {i['final_loss']:.4g}; "
                       "rotation error "
                       f"{', '.join(f'{a:.1f}' for a in i['rot_error_start_deg'])} -> "
                       f"{', '.join(f'{a:.1f}' for a in i['rot_error_end_deg'])} deg; finite: {i['finite']}")]
    if s.get("scoring"):
        c = s["scoring"]
        lines.append(f"scoring on the device ({c['map_device']}): maps {c['map_shape']} in {c['seconds']:.2f} s, "
                     f"finite: {c['finite']}, image scores {', '.join(f'{v:.3g}' for v in c['image_scores'])}; "
                     f"backbone {c['backbone']}")
    return lines


def _md_nerf(s: dict) -> list[str]:
    lines = [(f"fields {', '.join(s.get('fields') or [])}; budgets {s.get('budgets_s')} s of training (cumulative); "
              f"ms/view: one held-out view at {s.get('render_size')}"), "", *TABLE_HEADER, *(s.get("table") or [])]
    sweep = s.get("sweep")
    if sweep:
        base = sweep["base_rays"]
        lines += ["", (f"Rays per step: {sweep['field']} with the occupancy grid, a fresh run of "
                       f"{sweep['budget_s']:g} s of training each; learning rates x sqrt(rays / {base}), at most "
                       f"x {sweep['lr_cap']:g}; warm-up, grid update interval and lrate_decay in steps x "
                       f"{base} / rays"), "", *SWEEP_HEADER, *sweep["table"]]
    return lines


def _md_detection(s: dict) -> list[str]:
    lines = []
    if s.get("nerf"):
        n = s["nerf"]
        lines.append(f"NeRF: {n['field']}, occupancy grid {n['occupancy_grid']}, {n['step']} steps, "
                     f"{n['train_s']:.0f} s of training{' (trained in this section)' if n['trained_here'] else ''}")
    if "pixel_auroc" in s:
        w = s["wall_s"]
        lines += ["", ("| pixel AUROC | image AUROC | pixel AUPRO | images (good) | wall end to end s (training + maps "
                       "+ evaluation) |"), "|---|---|---|---|---|",
                  (f"| {s['pixel_auroc']:.3f} | {s['image_auroc']:.3f} | {s['pixel_aupro']:.3f} | {s['n_images']} "
                   f"({s['n_good']}) | {w['end_to_end']:.0f} ({w['nerf_training']:.0f} + {w['maps']:.0f} + "
                   f"{w['evaluation']:.0f}) |"), "",
                  (f"backbone {s['backbone']}; maps found before this run: {s['maps_found_before']}; pose unsure: "
                   f"{', '.join(s['pose_unsure']) or 'none'}")]
        lines += [cost_line(s.get("query_cost")) or "per query: not recorded"]
        lines += ["", "| defect | images | image AUROC | pixel AUROC | pixel AUPRO |", "|---|---|---|---|---|"]
        for name, d in s["per_defect"].items():
            lines.append(f"| {name} | {d['n_images']} | {_num(d['image_auroc'])} | {_num(d['pixel_auroc'])} | "
                         f"{_num(d['pixel_aupro'])} |")
    if s.get("decomposition"):
        lines += ["", "Decomposition (which stage loses quality):", "", s["decomposition"]["table"].rstrip()]
    return lines


def _md_pose(s: dict) -> list[str]:
    lines = [f"source: {s.get('source', '-')}"]
    if s.get("stages"):
        lines += ["", "| stage | n | rot. median (deg) | trans. median (fraction) | < 2 deg | > 5 deg |",
                  "|---|---|---|---|---|---|"]
        for stage, t in s["stages"].items():
            if t.get("n"):
                lines.append(f"| {stage} | {t['n']} | {t['rot_median_deg']:.2f} | {t['trans_median_frac']:.4f} | "
                             f"{100 * t['share_under_2deg']:.0f} % | {100 * t['share_over_5deg']:.0f} % |")
        lines += ["", (f"seconds per query: {_num(s.get('seconds_per_query'))} (batches of {s.get('batch')}, "
                       f"{s['settings']['inerf_steps']} iNeRF steps x {s['settings']['inerf_rays']} rays, "
                       f"{s['settings']['inerf_topk_restarts']} starts)")]
    return lines


MARKDOWN = {"cuda_paths": _md_cuda_paths, "nerf": _md_nerf, "detection": _md_detection, "pose": _md_pose}


def _md_data(d: dict) -> list[str]:
    if "size" not in d:
        return []
    return [(f"class {d['class_dir']} ({d['size']}, {d['counts']}): "
             f"{'generated' if d['generated_now'] else 'found'} in {d['generation_s']:.1f} s ({d['workers']} workers)")]


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# GPU check{' (tiny CPU rehearsal)' if report['tiny'] else ''}, {report['started']}", "",
             f"machine: {m['device']}; python {m['python']}, torch {m['torch']}, CUDA {m['cuda']}, {m['cpus']} CPUs",
             (f"command: `{report['command']}`; budget {report['budget_s']:.0f} s, "
              f"used {report.get('seconds', 0):.0f} s; config {report['config']}"), "",
             "| section | status | seconds | limit s | note |", "|---|---|---|---|---|"]
    for name in ("data", *SECTIONS):
        s = report["data"] if name == "data" else report["sections"].get(name, {})
        note = s.get("error") or "; ".join(s.get("cut") or []) or s.get("reason", "")
        if s.get("from_earlier_run"):
            note = f"from the run of {s['from_earlier_run']}" + (f"; {note}" if note else "")
        lines.append(f"| {name} | {s.get('status', '-')} | {_num(s.get('seconds'), 0)} | {_num(s.get('limit_s'), 0)} "
                     f"| {note} |")
    lines += ["", "## data", "", *_md_data(report["data"])]
    for name in SECTIONS:
        s = report["sections"].get(name, {})
        lines += ["", f"## {name}", ""]
        if s.get("status", "not run") == "not run":
            lines.append(f"not run ({s.get('reason', 'not in --sections')})")
            continue
        try:
            lines += MARKDOWN[name](s)
        except (KeyError, TypeError, ValueError) as err:   # a partial section: its JSON says what it has
            lines.append(f"(figures incomplete: {error_line(err)}; see {REPORT_JSON})")
        if s.get("warnings"):
            lines += ["", "warnings: " + " | ".join(s["warnings"])]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, report: dict) -> None:
    """gpu_report.json and gpu_report.md, each written atomically."""
    write_json(out_dir / REPORT_JSON, report)
    text = markdown(report)
    atomic_write(out_dir / REPORT_MD, lambda path: path.write_text(text))


def earlier_sections(out_dir: Path, tiny: bool) -> dict:
    """The sections of the report already in `out_dir` (each marked with the time of its run), or {} (also when
    that report was of the other size: the rehearsal and the device check are never merged)."""
    path = out_dir / REPORT_JSON
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if earlier.get("tiny") != tiny:
        return {}
    return {name: {**s, "from_earlier_run": s.get("from_earlier_run") or s.get("started", earlier.get("started"))}
            for name, s in earlier.get("sections", {}).items() if name in SECTIONS and s.get("status") != "not run"}


# --------------------------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/gpu_check/report"),
                   help="folder of gpu_report.json and gpu_report.md (on the device: $OUT)")
    p.add_argument("--work_dir", type=Path, default=None,
                   help="data, checkpoints and maps (default outputs/gpu_check/work, --tiny: .../work_tiny)")
    p.add_argument("--tiny", action="store_true", help="the CPU rehearsal: a 32x32 class, budgets of seconds")
    p.add_argument("--config", default=None, help=f"the class's config (default {CONFIGS[False]}, --tiny: "
                                                  f"{CONFIGS[True]}); further config options follow as flags")
    p.add_argument("--budget_s", type=float, default=None,
                   help=f"seconds for everything (default {DEFAULTS[False]['budget_s']:g}, --tiny "
                        f"{DEFAULTS[True]['budget_s']:g})")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run, of {','.join(SECTIONS)} (the others keep what the report "
                        "in --out has)")
    p.add_argument("--nerf_budgets", type=float, nargs="+", default=None,
                   help=f"seconds of training after which each NeRF variant is measured, increasing (default "
                        f"{DEFAULTS[False]['nerf_budgets']}, --tiny {DEFAULTS[True]['nerf_budgets']})")
    p.add_argument("--variants", default="",
                   help="comma-separated NeRF variants of the nerf section, e.g. mlp/grid,triplane/grid (default: "
                        "every field, plain and grid)")
    p.add_argument("--sweep_rays", type=int, nargs="*", default=None,
                   help=f"rays per step of the nerf section's sweep, the config's field with the grid (default "
                        f"{DEFAULTS[False]['sweep_rays']}, --tiny {DEFAULTS[True]['sweep_rays']}; none: no sweep)")
    p.add_argument("--sweep_budget_s", type=float, default=None,
                   help=f"seconds of training of each sweep run (default {DEFAULTS[False]['sweep_budget_s']:g}, "
                        f"--tiny {DEFAULTS[True]['sweep_budget_s']:g})")
    p.add_argument("--resume_steps", type=int, nargs=2, default=None, metavar=("N", "M"),
                   help=f"steps before and after the resume (default {DEFAULTS[False]['resume_steps']}, --tiny "
                        f"{DEFAULTS[True]['resume_steps']})")
    p.add_argument("--inerf_steps", type=int, default=None, dest="inerf_steps",
                   help="iNeRF steps of the cuda_paths check (the pose and detection sections use the config's)")
    args, rest = p.parse_known_args(argv)
    for key, value in DEFAULTS[args.tiny].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.config = args.config or CONFIGS[args.tiny]
    args.work_dir = args.work_dir or Path("outputs/gpu_check") / ("work_tiny" if args.tiny else "work")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; the sections are {', '.join(SECTIONS)}")
    if any(b <= a for a, b in itertools.pairwise([0.0, *args.nerf_budgets])):
        p.error(f"--nerf_budgets must be positive and increasing, got {args.nerf_budgets}")
    if any(r < 1 for r in args.sweep_rays) or args.sweep_budget_s <= 0:
        p.error(f"--sweep_rays must be >= 1 and --sweep_budget_s > 0, got {args.sweep_rays}, {args.sweep_budget_s}")
    return args, rest


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(argv)
    work = args.work_dir.resolve()
    cfg = parse_config(["--config", args.config, *rest], description="gpu_check")
    cfg = dataclasses.replace(cfg, run=cfg.run.replace(data_root=str(work / "synthetic"), ckpt_root=str(work / "ckpts"),
                                                       output_root=str(work / "outputs")))
    device = resolve_device(cfg.run.device)
    seed_everything(cfg.run.seed)
    check = Check(cfg, device, args, work)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    report = {"tiny": args.tiny, "started": now(), "command": f"python -m benchmarks.gpu_check {argv_text}".strip(),
              "machine": machine(device), "config": args.config, "budget_s": args.budget_s, "work_dir": str(work),
              "sections_run": args.sections, "data": {}, "sections": {}}
    earlier = earlier_sections(args.out, args.tiny)
    for name in SECTIONS:
        if name not in args.sections:
            report["sections"][name] = earlier.get(name, {"status": "not run", "reason": "not in --sections"})
    clock = Limit(args.budget_s)
    try:
        report["data"] = run_step("data", data_step, check, min(DATA_SHARE * args.budget_s, clock.left()))
        report["seconds"] = clock.used()
        write_report(args.out, report)
        todo = [name for name in SECTIONS if name in args.sections]
        for i, name in enumerate(todo):
            share = SHARES[name] / sum(SHARES[n] for n in todo[i:])
            report["sections"][name] = run_step(name, SECTION_FUNCTIONS[name], check, max(clock.left(), 0.0) * share)
            report["seconds"] = clock.used()
            write_report(args.out, report)
    except KeyboardInterrupt:
        report["interrupted"] = True
        write_report(args.out, report)
        raise
    print(markdown(report))
    print(f"[gpu_check] wrote {args.out / REPORT_JSON} and {args.out / REPORT_MD}")
    return 1 if any(report["sections"][n].get("status") == "failed" for n in args.sections) else 0


if __name__ == "__main__":
    sys.exit(main())
