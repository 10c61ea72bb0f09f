"""Train a class's NeRF: `python -m nerf.train --config configs/<dataset>/<class>.txt [--flag value ...]`.

Random rays across all training views each step, Adam with exponential decay, MSE on coarse + fine.
Every `i_weights` steps (and at the end, and on Ctrl-C) the full training state is written atomically;
a rerun resumes from it exactly (same step, weights, optimizer and random stream). Stops at `n_iters` or
after `max_train_minutes` of accumulated wall clock. Every `holdout_every`-th view is held out and its
PSNR is compared with the mean-colour baseline (a constant image of the mean training colour).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from common.config import parse_config
from common.errors import ConfigError, exit_on_user_error
from common.io import write_json
from common.runtime import resolve_device, synchronize
from nerf.checkpoint import check_arch, checkpoint_path, load_renderer, read_checkpoint, save_checkpoint
from nerf.rays import camera_directions, rays_from_poses
from nerf.renderer import NeRFRenderer, arch_from_config

LOG_NAME = "train_log.json"


# ----------------------------------------------------------------------------- small pure helpers

def psnr_from_mse(mse: float | Tensor) -> float | Tensor:
    """PSNR in dB of images in [0, 1]."""
    if torch.is_tensor(mse):
        return -10.0 * torch.log10(mse.clamp_min(1e-10))
    return -10.0 * math.log10(max(float(mse), 1e-10))


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


def mean_colour_psnr(train_images: Tensor, val_images: Tensor) -> float:
    """Mean PSNR of predicting every held-out pixel as the mean training colour."""
    mean = train_images.reshape(-1, 3).double().mean(dim=0)
    mse = ((val_images.double() - mean) ** 2).mean(dim=(1, 2, 3))
    return float(np.mean([psnr_from_mse(float(m)) for m in mse]))


@torch.no_grad()
def heldout_psnr(renderer: NeRFRenderer, poses: Tensor, images: Tensor, focal: float,
                 chunk: int | None = None) -> float:
    """Mean PSNR of full renders of `poses [V, 4, 4]` against `images [V, H, W, 3]`."""
    was_training = renderer.training
    renderer.eval()
    values = []
    for pose, image in zip(poses, images):
        pred = renderer.render_image(pose, image.shape[0], image.shape[1], focal, chunk=chunk)
        values.append(psnr_from_mse(float(((pred - image) ** 2).mean())))
    renderer.train(was_training)
    return float(np.mean(values))


@dataclass
class RayBank:
    """All training rays, kept implicitly on the device: images, poses and one shared direction grid."""
    images: Tensor      # [N, H, W, 3]
    poses: Tensor       # [N, 4, 4]
    dirs: Tensor        # [H, W, 3] camera frame

    @classmethod
    def build(cls, images: np.ndarray, poses: np.ndarray, focal: float, device: torch.device) -> "RayBank":
        images_t = torch.as_tensor(images, dtype=torch.float32, device=device)
        poses_t = torch.as_tensor(poses, dtype=torch.float32, device=device)
        dirs = camera_directions(images_t.shape[1], images_t.shape[2], focal, device=device)
        return cls(images_t, poses_t, dirs)

    def sample(self, n_rays: int, generator: torch.Generator,
               precrop_frac: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """n_rays random (rays_o, rays_d, target rgb), drawn uniformly over views and pixels
        (over the central `precrop_frac` of each image when given)."""
        n, h, w = self.images.shape[:3]
        device = self.images.device
        view = torch.randint(n, (n_rays,), device=device, generator=generator)
        if precrop_frac is None:
            j = torch.randint(h, (n_rays,), device=device, generator=generator)
            i = torch.randint(w, (n_rays,), device=device, generator=generator)
        else:
            dh, dw = max(int(h // 2 * precrop_frac), 1), max(int(w // 2 * precrop_frac), 1)
            j = h // 2 - dh + torch.randint(2 * dh, (n_rays,), device=device, generator=generator)
            i = w // 2 - dw + torch.randint(2 * dw, (n_rays,), device=device, generator=generator)
        rays_o, rays_d = rays_from_poses(self.poses[view], self.dirs[j, i])
        return rays_o, rays_d, self.images[view, j, i]


def _budget_s(cfg: argparse.Namespace) -> float:
    return cfg.max_train_minutes * 60.0 if cfg.max_train_minutes > 0 else math.inf


def _is_done(step: int, elapsed: float, cfg: argparse.Namespace) -> bool:
    return step >= cfg.n_iters or elapsed >= _budget_s(cfg)


def build_renderer(cfg: argparse.Namespace, device: torch.device) -> NeRFRenderer:
    """Fresh renderer, initialised from cfg.seed on the CPU (same weights on any device), global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        renderer = NeRFRenderer.from_config(cfg)
    return renderer.to(device)


def _check_config(cfg: argparse.Namespace) -> None:
    for name in ("N_rand", "n_iters", "N_samples"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lrate <= 0 or cfg.lrate_decay <= 0:
        raise ConfigError(f"lrate and lrate_decay must be > 0, got {cfg.lrate} and {cfg.lrate_decay}")
    if not 0 < cfg.precrop_frac <= 1:
        raise ConfigError(f"precrop_frac must be in (0, 1], got {cfg.precrop_frac}")


# ----------------------------------------------------------------------------- training

def train(cfg: argparse.Namespace, device: torch.device | str | None = None, progress: bool = True) -> dict:
    """Train (or resume) the NeRF of cfg.class_name; returns {step, val_psnr, baseline_psnr, seconds,
    rays_per_s, finished, checkpoint}. A checkpoint that is already done under cfg returns at once."""
    from data.mad import load_train_views, resolve_class_dir

    _check_config(cfg)
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    views = load_train_views(resolve_class_dir(cfg.data_root, cfg.class_name), cfg.half_res, cfg.white_bkgd)
    train_idx, val_idx = split_views(len(views.images), cfg.holdout_every)
    if not train_idx:
        raise ConfigError(f"holdout_every={cfg.holdout_every} leaves no training view out of {len(views.images)}")
    bank = RayBank.build(views.images[train_idx], views.poses[train_idx], views.focal, device)
    val_images = torch.as_tensor(views.images[val_idx], dtype=torch.float32, device=device)
    val_poses = torch.as_tensor(views.poses[val_idx], dtype=torch.float32, device=device)
    baseline = mean_colour_psnr(bank.images, val_images) if val_idx else None

    path = checkpoint_path(cfg)
    renderer = build_renderer(cfg, device)
    optimizer = torch.optim.Adam(renderer.parameters(), lr=cfg.lrate, betas=(0.9, 0.999),
                                 fused=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    step, elapsed, val_history, rays_per_s = 0, 0.0, [], None
    if path.is_file():
        state = read_checkpoint(path, device)
        check_arch(path, state["arch"], cfg)
        renderer.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"]["generator"].cpu())
        step, elapsed = state["step"], state["elapsed_s"]
        val_history, rays_per_s = state["val_history"], state.get("rays_per_s")

    def summary(finished: bool) -> dict:
        return {"step": step, "val_psnr": val_history[-1]["psnr"] if val_history else None,
                "baseline_psnr": baseline, "seconds": elapsed, "rays_per_s": rays_per_s,
                "finished": finished, "checkpoint": str(path)}

    def save(finished: bool) -> None:
        save_checkpoint(path, {
            "step": step, "model": renderer.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()},
            "elapsed_s": elapsed, "arch": arch_from_config(cfg), "finished": finished,
            "val_history": val_history, "rays_per_s": rays_per_s, "baseline_psnr": baseline,
            "data": {"n_train": len(train_idx), "n_heldout": len(val_idx), "height": views.height,
                     "width": views.width, "focal": views.focal},
        })
        write_json(path.parent / LOG_NAME, {**summary(finished), "val_history": val_history,
                                             "n_rand": cfg.N_rand, "device": str(device)})

    def validate() -> None:
        if val_idx and (not val_history or val_history[-1]["step"] != step):
            value = heldout_psnr(renderer, val_poses, val_images, views.focal)
            val_history.append({"step": step, "psnr": value})
            if progress:
                tqdm.write(f"[{cfg.class_name}] step {step}: held-out PSNR {value:.2f} dB "
                           f"(mean-colour baseline {baseline:.2f} dB)")

    if _is_done(step, elapsed, cfg):
        return summary(True)

    renderer.train()
    has_fine = renderer.fine is not None
    perturb = cfg.perturb > 0
    session_start = time.perf_counter()
    elapsed_at_start = elapsed
    overhead = 0.0                    # seconds spent validating / checkpointing (not training)
    rays_done = 0
    bar = tqdm(total=cfg.n_iters, initial=step, disable=not progress, desc=f"NeRF {cfg.class_name}",
               dynamic_ncols=True)
    try:
        while step < cfg.n_iters:
            elapsed = elapsed_at_start + time.perf_counter() - session_start
            if elapsed >= _budget_s(cfg):
                break
            lr = learning_rate(step, cfg.lrate, cfg.lrate_decay)
            for group in optimizer.param_groups:
                group["lr"] = lr
            crop = cfg.precrop_frac if step < cfg.precrop_iters else None
            rays_o, rays_d, target = bank.sample(cfg.N_rand, generator, crop)
            out = renderer.render_rays(rays_o, rays_d, perturb=perturb, raw_noise_std=cfg.raw_noise_std,
                                       generator=generator)
            mse = torch.mean((out["rgb"] - target) ** 2)
            loss = mse + torch.mean((out["rgb_coarse"] - target) ** 2) if has_fine else mse
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            rays_done += cfg.N_rand
            bar.update(1)
            if step % cfg.i_print == 0:   # the only per-interval host sync
                bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{float(psnr_from_mse(mse.detach())):.2f}",
                                lr=f"{lr:.1e}")
            if (cfg.i_val > 0 and step % cfg.i_val == 0) or (cfg.i_weights > 0 and step % cfg.i_weights == 0):
                synchronize(device)
                t0 = time.perf_counter()
                train_s = t0 - session_start - overhead
                rays_per_s = rays_done / max(train_s, 1e-9)
                elapsed = elapsed_at_start + t0 - session_start
                if cfg.i_val > 0 and step % cfg.i_val == 0:
                    validate()
                if cfg.i_weights > 0 and step % cfg.i_weights == 0:
                    save(_is_done(step, elapsed, cfg))
                overhead += time.perf_counter() - t0
    except KeyboardInterrupt:
        bar.close()
        elapsed = elapsed_at_start + time.perf_counter() - session_start
        save(False)
        raise
    bar.close()
    synchronize(device)
    now = time.perf_counter()
    if rays_done:
        rays_per_s = rays_done / max(now - session_start - overhead, 1e-9)
    elapsed = elapsed_at_start + now - session_start
    validate()
    elapsed = elapsed_at_start + time.perf_counter() - session_start
    finished = step >= cfg.n_iters or elapsed >= _budget_s(cfg)
    save(finished)
    return summary(finished)


def ensure_trained(cfg: argparse.Namespace, device: torch.device | str) -> NeRFRenderer:
    """The class's renderer (eval, frozen), training or resuming first unless a finished checkpoint exists."""
    path = checkpoint_path(cfg)
    finished = path.is_file() and bool(read_checkpoint(path, "cpu").get("finished"))
    if not finished:
        train(cfg, device)
    return load_renderer(cfg, device)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict:
    cfg = parse_config(argv, description="Train the anomaly-free NeRF of one class")
    result = train(cfg)
    val = result["val_psnr"]
    base = result["baseline_psnr"]
    line = f"{cfg.class_name}: step {result['step']}, {result['seconds']:.0f} s"
    if val is not None:
        line += f", held-out PSNR {val:.2f} dB vs mean-colour baseline {base:.2f} dB ({val - base:+.2f} dB)"
    if result["rays_per_s"]:
        line += f", {result['rays_per_s']:.0f} rays/s"
    print(line + f" -> {result['checkpoint']}")
    return result


if __name__ == "__main__":
    main()
