"""Train a class's NeRF: random rays across all training views each step, Adam with exponential decay,
MSE on coarse + fine.

`NeRFTrainer` reads the class's checkpoint once when it is built and resumes from it exactly (same
step, weights, optimizer and random stream). `run()` trains until `n_iters` (then the checkpoint is
`finished`) or until this run's `max_train_minutes` budget is spent (then it is marked `stop_reason =
"budget"` and the next run continues it). The full training state is written atomically, always at a
step boundary: every `i_weights` steps, every `save_every_minutes` of training, at the end, and on
Ctrl-C (SIGINT is deferred to the end of the current step, so the saved state is consistent and the
resume bit-exact). A SIGKILL loses at most the steps since the last save; the resume is exact from there.
Every `holdout_every`-th view is held out and its PSNR is compared with the mean-colour baseline
(a constant image of the mean training colour).
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError, Interrupted
from common.io import remove_stale_temps, write_json
from common.progress import progress_bar, progress_write
from common.runtime import synchronize
from nerf.checkpoint import (
    LOG_NAME,
    check_arch,
    check_views,
    frozen_renderer,
    read_checkpoint,
    save_checkpoint,
    weights_digest,
)
from nerf.options import NeRFOptions, TrainOptions
from nerf.psnr import heldout_psnr, mean_colour_psnr, psnr_from_mse
from nerf.ray_bank import RayBank
from nerf.renderer import NeRFRenderer


def learning_rate(step: int, lrate: float, lrate_decay: float) -> float:
    """lrate * 0.1^(step / (lrate_decay * 1000)) (nerf-pytorch's schedule)."""
    return lrate * 0.1 ** (step / (lrate_decay * 1000.0))


def split_views(n_views: int, holdout_every: int) -> tuple[list[int], list[int]]:
    """(train, held-out) view indices: every `holdout_every`-th view (0, k, 2k, ...) is held out."""
    if holdout_every <= 0:
        return list(range(n_views)), []
    held = [i for i in range(n_views) if i % holdout_every == 0]
    train = [i for i in range(n_views) if i % holdout_every != 0]
    return train, held


def evenly_chosen(indices: list[int], count: int) -> list[int]:
    """At most `count` of `indices`, evenly spaced from the first to the last (all of them when count <= 0)."""
    if count <= 0 or len(indices) <= count:
        return list(indices)
    return [int(indices[int(i)]) for i in np.linspace(0, len(indices) - 1, count).round()]


def heldout_view_indices(n_views: int, holdout_every: int, fallback_views: int) -> tuple[list[int], bool]:
    """(training views to measure the NeRF on: the held-out split, whether they are instead `fallback_views`
    evenly spaced views it was trained on, because there is no split)."""
    _, held = split_views(n_views, holdout_every)
    if held:
        return held, False
    return evenly_chosen(list(range(n_views)), max(1, int(fallback_views))), True


def build_renderer(opts: NeRFOptions, white_bkgd: bool, seed: int, device: torch.device) -> NeRFRenderer:
    """Fresh renderer, initialised from `seed` on the CPU (same weights on any device), global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        renderer = NeRFRenderer(opts, white_bkgd)
    return renderer.to(device)


@dataclass
class TrainSummary:
    step: int
    val_psnr: float | None
    baseline_psnr: float | None
    seconds: float
    rays_per_s: float | None
    finished: bool
    checkpoint: str
    stop_reason: str = ""       # "n_iters", "budget" or "interrupted"
    samples_per_ray: float | None = None    # mean MLP evaluations per training ray in the last session

    def line(self, label: str) -> str:
        """One line for the terminal: steps, time, held-out PSNR against the baseline, speed."""
        text = f"{label}: step {self.step}, {self.seconds:.0f} s"
        if self.val_psnr is not None:
            text += (f", held-out PSNR {self.val_psnr:.2f} dB vs mean-colour baseline {self.baseline_psnr:.2f} dB "
                     f"({self.val_psnr - self.baseline_psnr:+.2f} dB)")
        if self.rays_per_s:
            text += f", {self.rays_per_s:.0f} rays/s"
        if self.samples_per_ray:
            text += f", {self.samples_per_ray:.1f} samples/ray"
        if self.stop_reason == "budget":
            text += " (stopped by the time budget: rerun to continue)"
        return text + f" -> {self.checkpoint}"


class NeRFTrainer:
    """The training state of one class's NeRF: renderer, optimizer, random stream, history.

    views: the class's training views (mad.loader.TrainViews: images, poses, intrinsics).
    checkpoint: where the state is saved and resumed from; it is read here unless the caller passes the
    `state` it has already read.
    """

    def __init__(self, views, nerf: NeRFOptions, train: TrainOptions, *, checkpoint: Path, white_bkgd: bool,
                 seed: int, device: torch.device, label: str = "", progress: bool = True,
                 state: dict | None = None):
        self.opts, self.nerf_opts = train, nerf
        self.path, self.device, self.label, self.progress = Path(checkpoint), torch.device(device), label, progress
        self.intrinsics = views.intrinsics
        self.data_info = {"height": int(views.height), "width": int(views.width),
                          **{k: float(v) for k, v in views.intrinsics.as_dict().items()}}
        train_idx, val_idx = split_views(len(views.images), train.holdout_every)
        if not train_idx:
            raise ConfigError(f"holdout_every={train.holdout_every} leaves no training view out of "
                              f"{len(views.images)}")
        self.data_info.update(n_train=len(train_idx), n_heldout=len(val_idx), views=views.fingerprint)
        self.bank = RayBank.build(views.images[train_idx], views.poses[train_idx], views.intrinsics, self.device)
        shown = evenly_chosen(val_idx, train.val_views)      # the PSNR's views (a full render each)
        self.val_images = torch.as_tensor(views.images[shown], dtype=torch.float32, device=self.device)
        self.val_poses = torch.as_tensor(views.poses[shown], dtype=torch.float32, device=self.device)
        self.baseline = mean_colour_psnr(self.bank.images, self.val_images) if val_idx else None

        self.renderer = build_renderer(nerf, white_bkgd, seed, self.device)
        self.optimizer = torch.optim.Adam(self.renderer.param_groups(train.lrate), lr=train.lrate,
                                          betas=(0.9, 0.999), fused=self.device.type == "cuda")
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step, self.elapsed, self.val_history, self.rays_per_s = 0, 0.0, [], None
        self.finished, self.stop_reason, self.samples_per_ray = False, "", None
        remove_stale_temps(self.path.parent)
        if state is None and self.path.is_file():
            state = read_checkpoint(self.path, self.device)
        if state is not None:
            self._restore(state, views)

    # ------------------------------------------------------------------------- state

    def _restore(self, state: dict, views) -> None:
        check_arch(self.path, state["arch"], self.nerf_opts)
        check_views(self.path, state, views)
        self.renderer.load_state_dict(state["model"])
        base_lrs = [group["base_lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, base_lr in zip(self.optimizer.param_groups, base_lrs, strict=True):   # from the options (older
            group["base_lr"] = base_lr                                       # checkpoints lack it)
        self.generator.set_state(state["rng"]["generator"].cpu())
        if self.renderer.grid is not None and state.get("occupancy") is not None:
            self.renderer.grid.load_state(state["occupancy"], str(self.path))
        self.step, self.elapsed = state["step"], state["elapsed_s"]
        self.val_history, self.rays_per_s = state["val_history"], state.get("rays_per_s")
        self.stop_reason = state.get("stop_reason", "")
        self.finished = self.step >= self.opts.n_iters

    def summary(self) -> TrainSummary:
        return TrainSummary(step=self.step, val_psnr=self.val_history[-1]["psnr"] if self.val_history else None,
                            baseline_psnr=self.baseline, seconds=self.elapsed, rays_per_s=self.rays_per_s,
                            finished=self.finished, checkpoint=str(self.path), stop_reason=self.stop_reason,
                            samples_per_ray=self.samples_per_ray)

    def _grid_state(self) -> dict | None:
        return self.renderer.grid.state() if self.renderer.grid is not None else None

    def checkpoint_state(self) -> dict:
        """Everything an exact resume needs, as tensors and plain values only (nerf.checkpoint reads it
        back with weights_only=True)."""
        return {
            "step": self.step, "model": self.renderer.state_dict(), "optimizer": self.optimizer.state_dict(),
            "rng": {"generator": self.generator.get_state(), "torch_cpu": torch.get_rng_state()},
            "elapsed_s": float(self.elapsed), "arch": self.nerf_opts.architecture(), "finished": self.finished,
            "stop_reason": self.stop_reason,
            "val_history": self.val_history, "rays_per_s": self.rays_per_s, "baseline_psnr": self.baseline,
            "data": self.data_info, "occupancy": self._grid_state(), "train": self.opts.identity(),
        }

    def weights_digest(self) -> str:
        """The content hash of the current model (nerf.checkpoint.weights_digest): equal to the saved one's."""
        return weights_digest(self.renderer.state_dict(), self._grid_state())

    def save(self) -> None:
        save_checkpoint(self.path, self.checkpoint_state())
        write_json(self.path.parent / LOG_NAME, {**asdict(self.summary()), "val_history": self.val_history,
                                                  "n_rand": self.opts.N_rand, "device": str(self.device)})

    def frozen_renderer(self) -> NeRFRenderer:
        """The trained renderer, frozen for pose estimation and reference rendering."""
        return frozen_renderer(self.renderer)

    # ------------------------------------------------------------------------- training

    def _grid_update_due(self) -> bool:
        """Whether the occupancy grid is updated before this step (after the warm-up, every N steps)."""
        opts = self.opts
        return (self.renderer.grid is not None and self.step >= opts.occupancy_warmup
                and (self.step - opts.occupancy_warmup) % opts.occupancy_update_every == 0)

    def validate(self) -> None:
        """Held-out PSNR at the current step (once per step)."""
        if len(self.val_images) and (not self.val_history or self.val_history[-1]["step"] != self.step):
            value = heldout_psnr(self.renderer, self.val_poses, self.val_images, self.intrinsics)
            self.val_history.append({"step": self.step, "psnr": value})
            if self.progress:
                progress_write(f"[{self.label}] step {self.step}: held-out PSNR {value:.2f} dB "
                               f"(mean-colour baseline {self.baseline:.2f} dB)")

    def run(self) -> TrainSummary:
        """Train (or resume) until n_iters or this run's time budget; returns the summary. A finished
        state returns at once. Ctrl-C saves at the end of the current step and raises Interrupted."""
        opts = self.opts
        if self.step >= opts.n_iters:
            self.finished, self.stop_reason = True, "n_iters"
            return self.summary()
        session = self._start_session()
        bar = progress_bar(total=opts.n_iters, initial=self.step, disable=not self.progress, desc=f"NeRF {self.label}",
                           dynamic_ncols=True)
        with _deferred_sigint() as interrupted:
            while self.step < opts.n_iters and not self._should_stop(session, interrupted()):
                loss, mse, lr = self._train_step(session)
                bar.update(1)
                if self.step % opts.i_print == 0:   # the only per-interval host sync
                    bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{float(psnr_from_mse(mse.detach())):.2f}",
                                    lr=f"{lr:.1e}")
                self._validate_and_save_if_due(session)
            bar.close()
            self._end_session(session)
        if self.stop_reason == "interrupted":
            raise Interrupted(f"NeRF training of {self.label or self.path.parent.name} stopped at step "
                              f"{self.step}/{opts.n_iters}; the checkpoint {self.path} holds it; rerun the same "
                              "command to resume exactly from there")
        return self.summary()

    def _start_session(self) -> _Session:
        """Training mode and a fresh clock for this run() call."""
        self.renderer.train()
        self.stop_reason = ""
        return _Session(budget_s=_seconds(self.opts.max_train_minutes),
                        save_every_s=_seconds(self.opts.save_every_minutes), elapsed_at_start=self.elapsed,
                        samples=torch.zeros((), device=self.device))

    def _should_stop(self, session: _Session, interrupted: bool) -> bool:
        """Before a step: update the elapsed time; stop (with its reason) on Ctrl-C or a spent budget."""
        now = time.perf_counter()
        self.elapsed = session.elapsed(now)
        if interrupted:
            self.stop_reason = "interrupted"
        elif now - session.start >= session.budget_s:
            self.stop_reason = "budget"
        return bool(self.stop_reason)

    def _train_step(self, session: _Session) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimiser step on a random ray batch: (loss, fine MSE, learning rate), kept on the device."""
        opts, renderer = self.opts, self.renderer
        lr = learning_rate(self.step, opts.lrate, opts.lrate_decay)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, group["base_lr"], opts.lrate_decay)
        if self._grid_update_due():
            renderer.update_grid(decay=opts.occupancy_decay, generator=self.generator)
        crop = opts.precrop_frac if self.step < opts.precrop_iters else None
        rays_o, rays_d, target = self.bank.sample(opts.N_rand, self.generator, crop)
        out = renderer.render_rays(rays_o, rays_d, perturb=self.nerf_opts.perturb > 0,
                                   raw_noise_std=self.nerf_opts.raw_noise_std, generator=self.generator)
        session.samples += out["samples"].sum()
        mse = torch.mean((out["rgb"] - target) ** 2)
        loss = mse + torch.mean((out["rgb_coarse"] - target) ** 2) if renderer.fine is not None else mse
        loss = loss + renderer.regularization()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        session.rays += opts.N_rand
        return loss, mse, lr

    def _validate_and_save_if_due(self, session: _Session) -> None:
        """Held-out PSNR every i_val steps; checkpoint every i_weights steps or save_every_minutes. Their time
        is not training time (rays/s)."""
        opts = self.opts
        val_due = opts.i_val > 0 and self.step % opts.i_val == 0
        save_due = (opts.i_weights > 0 and self.step % opts.i_weights == 0) or \
            time.perf_counter() - session.last_save >= session.save_every_s
        if not (val_due or save_due):
            return
        synchronize(self.device)
        t0 = time.perf_counter()
        self.rays_per_s, self.elapsed = session.rays_per_s(t0), session.elapsed(t0)
        if val_due:
            self.validate()
        if save_due:
            self.finished = self.step >= opts.n_iters
            self.save()
            session.last_save = time.perf_counter()
        session.overhead += time.perf_counter() - t0

    def _end_session(self, session: _Session) -> None:
        """Final speed figures, held-out PSNR (unless interrupted), stop reason, and the last save."""
        synchronize(self.device)
        now = time.perf_counter()
        if session.rays:
            self.rays_per_s = session.rays_per_s(now)
            self.samples_per_ray = float(session.samples) / session.rays
        self.elapsed = session.elapsed(now)
        if self.stop_reason != "interrupted":
            self.validate()
            self.elapsed = session.elapsed(time.perf_counter())
        self.finished = self.step >= self.opts.n_iters
        self.stop_reason = "n_iters" if self.finished else self.stop_reason
        self.save()


@dataclass
class _Session:
    """The clock and counters of one run() call; `overhead`: seconds spent validating and checkpointing."""
    budget_s: float
    save_every_s: float
    elapsed_at_start: float
    samples: torch.Tensor                   # MLP evaluations, summed on the device (no per-step sync)
    start: float = field(default_factory=time.perf_counter)
    last_save: float = field(default=0.0)
    overhead: float = 0.0
    rays: int = 0

    def __post_init__(self):
        self.last_save = self.start

    def elapsed(self, now: float) -> float:
        """Training seconds of the checkpoint so far: earlier runs plus this one."""
        return self.elapsed_at_start + now - self.start

    def rays_per_s(self, now: float) -> float:
        return self.rays / max(now - self.start - self.overhead, 1e-9)


def _seconds(minutes: float) -> float:
    """A minutes option in seconds; 0 means no limit (infinity)."""
    return minutes * 60.0 if minutes > 0 else math.inf


@contextlib.contextmanager
def _deferred_sigint():
    """Within the block, a first Ctrl-C only sets a flag (checked between steps); a second one interrupts
    at once. SIGTERM (what `kill` and a scheduler send) does the same, unless someone else already handles it
    (submitit in a SLURM job: its own handlers decide). Yields the flag reader. Outside the main thread signals
    cannot be handled: no-op."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    signals = [signal.SIGINT] + ([signal.SIGTERM] if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else [])
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield flag.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
