"""Fit a weights file to a timm EfficientNet: timm's own key names, or the efficientnet_pytorch
(lukemelas) names of the paper's checkpoint ``efficientnet-b4-6ed6700e.pth`` and of the bundled Lite2 file.

efficientnet_pytorch numbers its MBConv blocks flat (``_blocks.<k>``); timm nests them by stage
(``blocks.<stage>.<i>``). Both walk the blocks in the same order, so the k-th flat block is the k-th
(stage, i) pair of the timm model. Inside a block the layer names differ by block kind:

    efficientnet_pytorch     timm, inverted residual (expand != 1)    timm, depthwise-separable (expand 1)
    _expand_conv / _bn0      conv_pw / bn1                             (absent)
    _depthwise_conv / _bn1   conv_dw / bn2                             conv_dw / bn1
    _se_reduce / _se_expand  se.conv_reduce / se.conv_expand           se.conv_reduce / se.conv_expand
    _project_conv / _bn2     conv_pwl / bn3                            conv_pw / bn2

and outside the blocks: _conv_stem -> conv_stem, _bn0 -> bn1, _conv_head -> conv_head, _bn1 -> bn2,
_fc -> classifier. Every mapped tensor must have the model's shape; anything that does not fit is
refused with one line naming the file (ConfigError), never loaded half-way.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from common.errors import ConfigError

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                      "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                        "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")
_OPTIONAL = "num_batches_tracked"  # batch-norm counters: not used in eval mode, absent from some files


def is_efficientnet_pytorch(state: Mapping[str, torch.Tensor]) -> bool:
    """True for an efficientnet_pytorch (lukemelas) state dict."""
    return "_conv_stem.weight" in state


def timm_block_order(target: Mapping[str, torch.Tensor]) -> list[tuple[int, int]]:
    """The (stage, index) pairs of a timm EfficientNet's blocks, in forward order."""
    pairs = {(int(m.group(1)), int(m.group(2))) for m in map(_TIMM_BLOCK.match, target) if m}
    return sorted(pairs)


def efficientnet_pytorch_to_timm(source: Mapping[str, torch.Tensor],
                                 target: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename efficientnet_pytorch keys to the timm keys of `target` (a timm model's state dict).

    Returns (renamed tensors, source keys that have no timm counterpart).
    """
    blocks = timm_block_order(target)
    renamed, unknown = {}, []
    for key, tensor in source.items():
        name = _timm_name(key, blocks, target)
        if name is None:
            unknown.append(key)
        else:
            renamed[name] = tensor
    return renamed, unknown


def fit_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], where: str,
                   arch: str) -> dict[str, torch.Tensor]:
    """`source` as a complete state dict for the model whose state dict is `target`.

    Accepts timm key names or efficientnet_pytorch ones (mapped, see the module docstring). Batch-norm
    counters missing from the file are taken from `target`. ConfigError (one line, naming `where`) when
    a tensor is missing, left over or of another shape.
    """
    source = _unwrap(source)
    if source is None:
        raise ConfigError(f"{where}: not a state dict (expected a mapping of tensor names to tensors)")
    if is_efficientnet_pytorch(source):
        style = "efficientnet_pytorch"
        mapped, unknown = efficientnet_pytorch_to_timm(source, target)
    else:
        style = "timm"
        mapped = {k: v for k, v in source.items() if k in target}
        unknown = [k for k in source if k not in target]
    missing = [k for k in target if k not in mapped and not k.endswith(_OPTIONAL)]
    wrong = [f"{k} {tuple(mapped[k].shape)} vs {tuple(target[k].shape)}" for k in target
             if k in mapped and tuple(mapped[k].shape) != tuple(target[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the model's tensors missing (e.g. {missing[0]})")
    if unknown:
        problems.append(f"{len(unknown)} tensors the model does not have (e.g. {unknown[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of another shape (e.g. {wrong[0]})")
    if problems:
        raise ConfigError(f"{where}: does not fit {arch} ({style} key names): " + "; ".join(problems))
    return {k: (mapped[k] if k in mapped else target[k]) for k in target}


def _unwrap(state) -> dict[str, torch.Tensor] | None:
    """The tensor dict of a checkpoint: a plain state dict, or one under 'state_dict' / 'model';
    a 'module.' prefix (DataParallel) is dropped. None when it is not a dict of tensors."""
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def _timm_name(key: str, blocks: list[tuple[int, int]], target: Mapping[str, torch.Tensor]) -> str | None:
    match = _BLOCK_KEY.match(key)
    if match is None:
        layer, _, param = key.partition(".")
        return f"{_TOP_LEVEL[layer]}.{param}" if layer in _TOP_LEVEL and param else None
    k, layer, param = int(match.group(1)), match.group(2), match.group(3)
    if k >= len(blocks):
        return None
    stage, index = blocks[k]
    prefix = f"blocks.{stage}.{index}"
    names = _INVERTED_RESIDUAL if f"{prefix}.conv_pwl.weight" in target else _DEPTHWISE_SEPARABLE
    return f"{prefix}.{names[layer]}.{param}" if layer in names else None
