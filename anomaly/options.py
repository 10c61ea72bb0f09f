"""Options of the feature-difference scorer and the evaluation."""
from __future__ import annotations

from common.config import str2bool


def add_args(parser) -> None:
    g = parser.add_argument_group("anomaly scoring and evaluation")
    g.add_argument("--score_stages", type=int, nargs="*", default=[1, 2, 3, 4, 5],
                   help="backbone stages (1..5) whose features are compared")
    g.add_argument("--score_include_rgb", type=str2bool, default=True, help="append the RGB image to the features")
    g.add_argument("--score_stage_weights", type=float, nargs="*", default=[],
                   help="optional weight per compared stage (empty = all 1, the paper's plain formula)")
    g.add_argument("--score_sigma", type=float, default=4.0, help="Gaussian smoothing of the map in pixels (0 = off)")
    g.add_argument("--image_score_pool", type=int, default=32,
                   help="average-pool kernel before the max that gives the image score")
    g.add_argument("--aupro_fpr", type=float, default=0.3, help="integration limit of pixel AUPRO")
    g.add_argument("--n_qualitative", type=int, default=6, help="images shown in the qualitative figure sheet")
    g.add_argument("--save_overlays", type=str2bool, default=True, help="write a heat-map overlay PNG per image")
    g.add_argument("--eval_max_pixels", type=int, default=100_000_000,
                   help="pixel AUROC / AUPRO use a deterministic random subset of about this many pixels when "
                        "the test set has more (0 = always all pixels)")
    g.add_argument("--qual_threshold", type=float, default=None,
                   help="score threshold of the predicted masks in qualitative.png (default: the pixel "
                        "threshold with the best F1 over the test set)")
    g.add_argument("--heatmap_vmin", type=float, default=None,
                   help="lower end of the fixed per-class heat-map colour scale (default: min over the "
                        "good test images' maps)")
    g.add_argument("--heatmap_vmax", type=float, default=None,
                   help="upper end of the fixed per-class heat-map colour scale (default: max over the "
                        "good test images' maps)")
