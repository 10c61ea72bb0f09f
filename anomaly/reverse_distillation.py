"""Reverse distillation (Deng & Li, CVPR 2022), OmniAD's base model (arXiv 2406.18012), as a baseline beside the
pipeline: our own small PyTorch implementation on the frozen backbone that ships (anomalib's ReverseDistillation
builds its decoder for ResNet encoders, and no ImageNet ResNet weights ship on PyPI).

Teacher: the frozen backbone's stages `rd_stages` (default 2, 3, 4 of the Lite2: strides 4, 8, 16, like the
paper's ResNet layers 1-3). One-class bottleneck (OCBE): each stage brought to the deepest one's stride by strided
convolutions, concatenated, fused and squeezed a stride further into one compact embedding. Student: a decoder
that mirrors the teacher, upsampling the embedding back through every compared stage; trained so that each of its
maps points the teacher's way (loss: the mean over positions of 1 - cosine similarity across channels, summed
over the stages). On an anomaly the teacher's features are new and the student, which only learned to reproduce
normal ones from the bottleneck, disagrees there:

    map(u) = smooth( sum_k upsample(1 - cos(teacher_k(u), student_k(u))) ),   image score = max of the map.

`rd_attention` adds OmniAD's attention: a non-local self-attention block (every position attends to every other,
residual) on the embedding and on the decoder's first map, widening the student's receptive field.

Training is seeded and resumable: the state (weights, optimiser, step, RNG) is saved atomically every
`rd_save_every` steps and at the end, under a fingerprint of what the student is trained on and with; a saved
state that matches resumes exactly, another one is replaced. Loading never runs code (weights_only).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomaly.scorer import gaussian_blur, image_scores
from common.io import save_torch
from common.options import Options, option, require
from common.progress import progress_bar

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DistillationOptions(Options):
    GROUP: ClassVar[str] = "reverse distillation baseline (benchmarks.bench_baselines)"

    rd_stages: tuple[int, ...] = option((2, 3, 4), "backbone stages (1..5) the student reconstructs")
    rd_size: int = option(128, "images are resized to this square for the student (training and test)")
    rd_steps: int = option(400, "training steps (batches)")
    rd_batch: int = option(8, "images per training step")
    rd_lr: float = option(5e-3, "Adam learning rate (the paper's 0.005, betas 0.5 / 0.999)")
    rd_embedding: int = option(128, "channels of the one-class bottleneck embedding")
    rd_attention: bool = option(False, "OmniAD's attention: a non-local self-attention block on the embedding and "
                                       "on the decoder's first map")
    rd_nerf_views: int = option(0, "OmniAD's NeRF augmentation: renders of the class's NeRF at this many new poses "
                                   "between and around the training views join the training set (0 = off)")
    rd_aligned: bool = option(False, "OmniAD's aligned augmentation: the NeRF's anomaly-free renders at the poses "
                                     "the pipeline estimated for the test queries join the training set")
    rd_sigma: float = option(4.0, "Gaussian smoothing of the map, in pixels of the image")
    rd_save_every: int = option(100, "steps between resumable checkpoints")

    def validated(self) -> DistillationOptions:
        require(bool(self.rd_stages) and all(1 <= s <= 5 for s in self.rd_stages)
                and list(self.rd_stages) == sorted(set(self.rd_stages)),
                f"rd_stages must be increasing stages in 1..5, got {list(self.rd_stages)}")
        stride = 2 ** (max(self.rd_stages) + 1)                    # the bottleneck's
        require(self.rd_size >= stride and self.rd_size % stride == 0,
                f"rd_size must be a multiple of {stride} (the bottleneck's stride), got {self.rd_size}")
        require(self.rd_nerf_views >= 0, f"rd_nerf_views must be >= 0, got {self.rd_nerf_views}")
        require(self.rd_steps >= 1 and self.rd_batch >= 1 and self.rd_save_every >= 1,
                "rd_steps, rd_batch and rd_save_every must be >= 1")
        require(self.rd_lr > 0 and self.rd_embedding >= 8 and self.rd_sigma >= 0,
                "rd_lr must be > 0, rd_embedding >= 8 and rd_sigma >= 0")
        return self


def cosine_distance_maps(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per stage, 1 - cosine similarity across channels [B,h_k,w_k] of teacher and student maps [B,C_k,h_k,w_k]."""
    return [1.0 - F.cosine_similarity(t.float(), s.float(), dim=1, eps=1e-8)
            for t, s in zip(teacher, student, strict=True)]


def distillation_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor]) -> torch.Tensor:
    """The training loss: the sum over stages of the mean cosine distance."""
    return sum(d.mean() for d in cosine_distance_maps(teacher, student))


def distillation_map(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], size: tuple[int, int],
                     sigma: float) -> torch.Tensor:
    """The anomaly map [B,*size]: the stages' cosine distances upsampled (bilinear), summed, smoothed."""
    total = None
    for distance in cosine_distance_maps(teacher, student):
        up = F.interpolate(distance[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        total = up if total is None else total + up
    return gaussian_blur(total, sigma)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1))


class NonLocal(nn.Module):
    """Self-attention over the positions of a map (a non-local block), added back to its input; it starts as the
    identity (the output projection is zero), so it can only widen what the plain student sees."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 2, 8)
        self.query, self.key, self.value = (nn.Conv2d(channels, inner, 1) for _ in range(3))
        self.out = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (f(x).flatten(2) for f in (self.query, self.key, self.value))      # [B, C', hw]
        attention = torch.softmax(q.transpose(1, 2) @ k / q.shape[1] ** 0.5, dim=-1)  # [B, hw, hw]
        return x + self.out((v @ attention.transpose(1, 2)).view(b, -1, h, w))


class Student(nn.Module):
    """The one-class bottleneck and the decoder for teacher maps of `channels` (shallow to deep, each at twice the
    previous stride)."""

    def __init__(self, channels: Sequence[int], embedding: int, attention: bool):
        super().__init__()
        n = len(channels)
        deepest = channels[-1]
        # OCBE: every stage to the deepest stride, fused, then one stride further
        self.align = nn.ModuleList(nn.Sequential(*[_conv(c if i == 0 else deepest, deepest, 2)
                                                   for i in range(n - 1 - k)]) if k < n - 1 else nn.Identity()
                                   for k, c in enumerate(channels))
        self.fuse = nn.Sequential(_conv(deepest * n, embedding, 2), _conv(embedding, embedding))
        self.embedding_attention = NonLocal(embedding) if attention else nn.Identity()
        ups, cin = [], embedding
        for c in reversed(channels):
            ups.append(_up(cin, c))
            cin = c
        self.ups = nn.ModuleList(ups)
        self.decoder_attention = NonLocal(channels[-1]) if attention else nn.Identity()

    def forward(self, teacher: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        aligned = [f(t) for f, t in zip(self.align, teacher, strict=True)]
        x = self.embedding_attention(self.fuse(torch.cat(aligned, dim=1)))
        out = []
        for k, up in enumerate(self.ups):
            x = up(x)
            if k == 0:
                x = self.decoder_attention(x)
            out.append(x)
        return out[::-1]                                           # shallow to deep, like the teacher


class ReverseDistillation:
    """A student for one frozen backbone; fit on anomaly-free images, then maps for queries."""

    def __init__(self, backbone, opts: DistillationOptions, device: torch.device | str = "cpu", seed: int = 0):
        self.backbone, self.opts, self.device, self.seed = backbone, opts.validated(), torch.device(device), seed
        channels = [backbone.channels[s - 1] for s in opts.rd_stages]
        torch.manual_seed(seed)
        self.student = Student(channels, opts.rd_embedding, opts.rd_attention).to(self.device)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=opts.rd_lr, betas=(0.5, 0.999))
        self.generator = torch.Generator().manual_seed(seed)
        self.step, self.losses, self.seconds = 0, [], 0.0

    def teacher(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's compared maps of images [B,3,H,W] in [0,1], resized to rd_size first."""
        size = self.opts.rd_size
        x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        features = self.backbone(x.to(self.device))
        return [features[s - 1] for s in self.opts.rd_stages]

    def state(self, fingerprint: str) -> dict:
        return {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "step": self.step,
                "student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "losses": list(self.losses), "seconds": self.seconds}

    def _restore(self, path: Path, fingerprint: str) -> bool:
        """Resume from `path` when it holds a state of this fingerprint; False otherwise."""
        if not path.is_file():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged or foreign file is replaced by a new training
            return False
        if not isinstance(state, dict) or state.get("fingerprint") != fingerprint \
                or state.get("format_version") != FORMAT_VERSION:
            return False
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step, self.losses, self.seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])
        return True

    def fit(self, images: np.ndarray, checkpoint: Path | None = None, fingerprint: str = "",
            progress: bool = False) -> ReverseDistillation:
        """Train on anomaly-free images [N,H,W,3] in [0,1] for rd_steps (batches drawn with the seeded generator);
        with `checkpoint`, resume from it and save to it (atomically) every rd_save_every steps and at the end."""
        if checkpoint is not None:
            self._restore(Path(checkpoint), fingerprint)
        data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        opts = self.opts
        self.student.train()
        bar = progress_bar(range(self.step, opts.rd_steps), desc="reverse distillation", unit="step",
                           disable=not progress)
        for _ in bar:
            started = time.perf_counter()
            batch = data[torch.randint(len(data), (min(opts.rd_batch, len(data)),), generator=self.generator)]
            teacher = self.teacher(batch)
            loss = distillation_loss(teacher, self.student(teacher))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.losses.append(float(loss.detach()))
            self.seconds += time.perf_counter() - started
            if checkpoint is not None and (self.step % opts.rd_save_every == 0 or self.step == opts.rd_steps):
                save_torch(checkpoint, self.state(fingerprint))
        self.student.eval()
        return self

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(maps [N,H,W] at the images' size, image scores [N]: the maps' maxima) of images [N,H,W,3] in [0,1]."""
        self.student.eval()
        maps = []
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch], dtype=np.float32))
            x = x.permute(0, 3, 1, 2).to(self.device)
            teacher = self.teacher(x)
            maps.append(distillation_map(teacher, self.student(teacher), tuple(x.shape[-2:]),
                                         self.opts.rd_sigma).cpu().numpy())
        out = np.concatenate(maps)
        return out, image_scores(out, 1)
