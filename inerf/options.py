"""Options of the iNeRF pose refinement."""
from __future__ import annotations


def add_args(parser) -> None:
    g = parser.add_argument_group("iNeRF pose refinement")
    g.add_argument("--inerf_steps", type=int, default=300, help="optimisation steps per query (paper: 300)")
    g.add_argument("--inerf_rays", type=int, default=3072, help="rays sampled per query per step (paper: 3072)")
    g.add_argument("--inerf_lr", type=float, default=0.01, help="Adam learning rate on the twist")
    g.add_argument("--inerf_lr_decay_every", type=int, default=100,
                   help="learning rate is multiplied by inerf_lr_decay every this many steps (lr * 0.8^(k/100))")
    g.add_argument("--inerf_lr_decay", type=float, default=0.8, help="see inerf_lr_decay_every")
    g.add_argument("--inerf_sampling", default="interest_regions",
                   choices=["random", "interest_points", "interest_regions"],
                   help="where rays are drawn from in the query image")
    g.add_argument("--kernel_size", type=int, default=5, help="dilation kernel for interest_regions")
    g.add_argument("--dil_iter", type=int, default=3, help="dilation iterations for interest_regions")
    g.add_argument("--inerf_batch", type=int, default=16, help="query images refined together (one twist each)")
    g.add_argument("--inerf_topk_restarts", type=int, default=1,
                   help="refine from the top-k retrieved poses and keep the lowest loss (1 = paper)")
    g.add_argument("--inerf_detector", default="sift", choices=["sift", "orb"],
                   help="keypoint detector for interest_points / interest_regions sampling (iNeRF: SIFT)")
    g.add_argument("--inerf_min_keypoints", type=int, default=8,
                   help="fewer keypoints than this in a query -> sample its rays uniformly (random)")
    g.add_argument("--inerf_chunk", type=int, default=16384,
                   help="max rays per render call during refinement: the batch's queries are split into near-equal "
                        "groups, gradients accumulated (0 = all in one call). Bounds activation memory: the "
                        "default 8x256 NeRF keeps roughly 0.5-1 MB per ray for backward")
