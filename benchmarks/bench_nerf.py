"""NeRF speed and quality figures.

    python -m benchmarks.bench_nerf --config configs/synthetic/demo.txt --budget_minutes 5 [--device cuda]
    python -m benchmarks.bench_nerf --device cpu --batch 256 --render_size 32 --budget_minutes 0.5 \
        --config <cfg> --netwidth 64 ...          # any NeRF option overrides the config

Prints (1) training rays/s (forward + backward + Adam) at the given sample counts and batch on random
rays, (2) ms to render one render_size x render_size view, (3) held-out PSNR vs the mean-colour baseline
after training for --budget_minutes on --data_root/--class_name (checkpoints go to a temporary folder;
the held-out figure uses the config's own N_samples/N_importance, not --samples).
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import torch

from common.camera import Intrinsics
from common.errors import exit_on_user_error
from common.io import write_json
from common.runtime import resolve_device, synchronize
from nerf.options import NeRFOptions
from nerf.trainer import build_renderer
from omniposead.config import parse_config
from omniposead.pipeline import train_class


def random_rays(n: int, device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a radius-4 sphere towards the origin (the object region), unit-ish depth scale."""
    o = torch.nn.functional.normalize(torch.randn(n, 3, device=device, generator=generator), dim=-1) * 4.0
    d = -o / 4.0 + 0.1 * torch.randn(n, 3, device=device, generator=generator)
    return o, d


def train_rays_per_s(opts: NeRFOptions, lrate: float, device: torch.device, batch: int, steps: int,
                     warmup: int = 3) -> float:
    renderer = build_renderer(opts, True, 0, device).train()
    optimizer = torch.optim.Adam(renderer.param_groups(lrate), lr=lrate, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    target = torch.rand(batch, 3, device=device, generator=gen)
    t0 = 0.0
    for k in range(warmup + steps):
        if k == warmup:
            synchronize(device)
            t0 = time.perf_counter()
        rays_o, rays_d = random_rays(batch, device, gen)
        out = renderer.render_rays(rays_o, rays_d, perturb=True, generator=gen)
        loss = ((out["rgb"] - target) ** 2).mean()
        if renderer.fine is not None:
            loss = loss + ((out["rgb_coarse"] - target) ** 2).mean()
        loss = loss + renderer.regularization()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - t0)


def render_ms(opts: NeRFOptions, device: torch.device, size: int, repeats: int = 2) -> float:
    renderer = build_renderer(opts, True, 0, device).eval()
    c2w = torch.eye(4, device=device)
    c2w[2, 3] = 4.0
    focal = 0.5 * size / 0.36                       # ~40 degree field of view
    small = min(size, 32)
    renderer.render_image(c2w, small, small, Intrinsics.centred(focal, small, small))      # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        renderer.render_image(c2w, size, size, Intrinsics.centred(focal, size, size))
    synchronize(device)
    return 1000.0 * (time.perf_counter() - t0) / repeats


@exit_on_user_error
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", default="64+64", help="N_samples+N_importance for the throughput figure")
    p.add_argument("--batch", type=int, default=4096, help="rays per training step for the throughput figure")
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--render_size", type=int, default=400, help="rendered view size in pixels (square)")
    p.add_argument("--budget_minutes", type=float, default=5.0,
                   help="training wall clock for the held-out PSNR figure (0 = skip it)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args, rest = p.parse_known_args(argv)
    cfg = parse_config(rest, description="bench_nerf")
    device = resolve_device(cfg.run.device)
    n_s, _, n_i = args.samples.partition("+")
    speed_opts = cfg.nerf.replace(N_samples=int(n_s), N_importance=int(n_i or 0))
    nerf = cfg.nerf
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)")
    arch = f"{nerf.netdepth}x{nerf.netwidth}" + (f" + fine {nerf.netdepth_fine}x{nerf.netwidth_fine}"
                                                  if int(n_i or 0) else "") \
        + f", multires {nerf.multires}/{nerf.multires_views}"
    print(f"device: {name}; torch {torch.__version__}; amp={nerf.amp and device.type == 'cuda'}; MLP {arch}")
    result = {"device": name, "torch": torch.__version__, "arch": arch}

    rps = train_rays_per_s(speed_opts, cfg.train.lrate, device, args.batch, args.steps)
    print(f"training: {rps:,.0f} rays/s ({args.samples} samples, batch {args.batch}, {rps / args.batch:.1f} it/s)")
    ms = render_ms(speed_opts, device, args.render_size)
    print(f"render: {ms:,.0f} ms per {args.render_size}x{args.render_size} view ({args.samples} samples)")
    result.update(train_rays_per_s=rps, samples=args.samples, batch=args.batch, render_ms=ms,
                  render_size=args.render_size)

    if args.budget_minutes > 0:
        with tempfile.TemporaryDirectory() as tmp:
            run_cfg = dataclasses.replace(                       # the budget decides when to stop
                cfg, run=cfg.run.replace(ckpt_root=tmp),
                train=cfg.train.replace(max_train_minutes=args.budget_minutes, n_iters=10 ** 9))
            t0 = time.perf_counter()
            out = train_class(run_cfg, device, progress=True)
            wall = time.perf_counter() - t0
        print(f"quality: {cfg.run.class_name} after {out.seconds:.0f} s training ({out.step} steps, "
              f"{wall:.0f} s wall incl. loading/validation): held-out PSNR {out.val_psnr:.2f} dB vs "
              f"mean-colour baseline {out.baseline_psnr:.2f} dB ({out.val_psnr - out.baseline_psnr:+.2f} dB)"
              f", {out.rays_per_s:,.0f} rays/s")
        result.update(budget_minutes=args.budget_minutes, steps=out.step, val_psnr=out.val_psnr,
                      baseline_psnr=out.baseline_psnr, train_seconds=out.seconds, wall_seconds=wall,
                      train_loop_rays_per_s=out.rays_per_s)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
