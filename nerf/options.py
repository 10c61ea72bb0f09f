"""NeRF model, sampling and training options (names follow nerf-pytorch where they exist)."""
from __future__ import annotations

from common.config import str2bool


def add_args(parser) -> None:
    g = parser.add_argument_group("NeRF model and rendering")
    g.add_argument("--netdepth", type=int, default=8, help="layers in the coarse MLP")
    g.add_argument("--netwidth", type=int, default=256, help="channels per layer in the coarse MLP")
    g.add_argument("--netdepth_fine", type=int, default=8, help="layers in the fine MLP")
    g.add_argument("--netwidth_fine", type=int, default=256, help="channels per layer in the fine MLP")
    g.add_argument("--skips", type=int, nargs="*", default=[4],
                   help="0-based layer indices after which the encoded input is concatenated (4 = skip at layer 5)")
    g.add_argument("--multires", type=int, default=10, help="positional-encoding frequencies for xyz")
    g.add_argument("--multires_views", type=int, default=4, help="positional-encoding frequencies for view directions")
    g.add_argument("--use_viewdirs", type=str2bool, default=True, help="view-dependent colour branch")
    g.add_argument("--density_bias_init", type=float, default=0.1,
                   help="initial bias of the density output; > 0 keeps the ReLU density from starting dead "
                        "(zero everywhere, no gradient), which small MLPs otherwise often do")
    g.add_argument("--N_samples", type=int, default=64, help="coarse samples per ray")
    g.add_argument("--N_importance", type=int, default=64, help="extra fine samples per ray (0 = coarse only)")
    g.add_argument("--perturb", type=float, default=1.0, help="1 = stratified jitter while training, 0 = fixed")
    g.add_argument("--raw_noise_std", type=float, default=0.0, help="noise added to density while training")
    g.add_argument("--near", type=float, default=2.0, help="near bound along each ray (MAD-Sim / synthetic: 2)")
    g.add_argument("--far", type=float, default=6.0, help="far bound along each ray (MAD-Sim / synthetic: 6)")
    g.add_argument("--chunk", type=int, default=32768, help="rays rendered per forward pass when rendering images")
    g.add_argument("--amp", type=str2bool, default=True, help="bf16 autocast + TF32 matmuls on CUDA (ignored on CPU)")

    t = parser.add_argument_group("NeRF training")
    t.add_argument("--N_rand", type=int, default=4096, help="rays per training batch")
    t.add_argument("--lrate", type=float, default=5e-4, help="Adam learning rate")
    t.add_argument("--lrate_decay", type=float, default=250,
                   help="learning rate decays by 10x every lrate_decay*1000 steps")
    t.add_argument("--n_iters", type=int, default=200000, help="training iterations")
    t.add_argument("--max_train_minutes", type=float, default=0.0,
                   help="stop training after this wall-clock budget (0 = no limit)")
    t.add_argument("--precrop_iters", type=int, default=0, help="sample rays from the image centre for this many steps")
    t.add_argument("--precrop_frac", type=float, default=0.5, help="fraction of the image used by precrop")
    t.add_argument("--holdout_every", type=int, default=8,
                   help="every k-th training view is held out for validation PSNR (0 = none)")
    t.add_argument("--i_print", type=int, default=100, help="update the progress bar every N steps")
    t.add_argument("--i_val", type=int, default=5000, help="held-out PSNR every N steps")
    t.add_argument("--i_weights", type=int, default=10000, help="checkpoint every N steps")
