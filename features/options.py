"""Options of the frozen ImageNet backbone shared by retrieval and scoring."""
from __future__ import annotations

from common.config import str2bool


def add_args(parser) -> None:
    g = parser.add_argument_group("frozen feature backbone")
    g.add_argument("--backbone", default="tf_efficientnet_b4",
                   help="timm model name (paper: EfficientNet-B4)")
    g.add_argument("--backbone_weights", default="",
                   help="path to a state dict for --backbone; tried first")
    g.add_argument("--backbone_fallback", type=str2bool, default=True,
                   help="when --backbone has no weights offline, use the bundled ImageNet EfficientNet-Lite2 (with a warning)")
    g.add_argument("--allow_random_backbone", type=str2bool, default=False,
                   help="explicitly accept random backbone weights (tests only; never silent)")
