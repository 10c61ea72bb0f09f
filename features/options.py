"""Options of the frozen ImageNet backbone shared by retrieval and scoring."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.options import Options, option


@dataclass(frozen=True)
class BackboneOptions(Options):
    GROUP: ClassVar[str] = "frozen feature backbone"

    backbone: str = option("tf_efficientnet_b4.aa_in1k",
                           "timm model name with its weights tag (paper: EfficientNet-B4 with the AutoAugment "
                           "ImageNet weights, tf_efficientnet_b4.aa_in1k; an untagged name takes timm's default tag)")
    backbone_weights: str = option("", "path to a state dict for --backbone, tried first: timm key names or "
                                       "efficientnet_pytorch ones (the paper's efficientnet-b4-6ed6700e.pth)")
    backbone_fallback: bool = option(True, "when --backbone has no weights offline, use the bundled ImageNet "
                                           "EfficientNet-Lite2 (with a warning)")
    allow_random_backbone: bool = option(False, "explicitly accept random backbone weights (tests only; "
                                                "never silent)")
