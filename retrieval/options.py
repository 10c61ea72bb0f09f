"""Options of the coarse-pose retrieval database."""
from __future__ import annotations


def add_args(parser) -> None:
    g = parser.add_argument_group("coarse pose retrieval")
    g.add_argument("--desc_dim", type=int, default=64, help="descriptor dimension after PCA (paper: 64)")
    g.add_argument("--retrieval_size", type=int, default=224,
                   help="images are resized to this square size before computing descriptors")
    g.add_argument("--retrieval_topk", type=int, default=1, help="nearest training views returned per query")
    g.add_argument("--retrieval_batch", type=int, default=32, help="images per backbone forward pass when computing descriptors")
