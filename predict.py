"""Judge new photos with a trained class: a verdict, a score, a defect mask and the pose's confidence per photo.

    python predict.py --config configs/synthetic/demo.txt photos/                 # a folder
    python predict.py --config configs/synthetic/demo.txt "batch/*.png" one.png   # patterns and files
    python predict.py --config ... photos/ --max_false_alarm 0.05                 # a stricter threshold
    python predict.py --config ... photos/ --validation_dir data/labelled_parts   # F1 on labelled images

The class must be trained (anomaly_nerf_lego.py or train_nerf.py with the same config): nothing is retrained
here. Photos are checked first (readable, the class's size and aspect). The class's threshold is saved with it
(ckpts/<dataset>/<class>/threshold.json): without labels, set on its held-out training views scored like queries
so that about --max_false_alarm of good photos are called defective; with --validation_dir (a folder laid out
like a MAD class), the best F1 there. Outputs, in --out (default <output_dir>/predict):

    predictions.csv, predictions.json     one row per photo: verdict, score (0.5 = the threshold), raw score,
                                          pose loss / the pose-unsure threshold, seconds, defect pixels (+ pose)
    photos/<name>_overlay.png, _mask.png  heat map on the photo (0 .. 1 of the score), binary defect mask
    photos/<name>_query.png, _ref.png     the photo, and the anomaly-free reference at its estimated pose
    photos/<name>.npy, .json              the map and its record (a rerun skips photos already made)

One line per photo is printed. The work itself is omniposead.predict; this file is its command line.
"""
from __future__ import annotations

import sys
from pathlib import Path

from common.errors import exit_on_user_error
from omniposead.config import OmniposeConfig, build_parser
from omniposead.predict import predict_photos


def build_predict_parser():
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", help="photo files, folders of photos or glob patterns (quoted)")
    parser.add_argument("--out", default=None, help="output folder (default: <output_dir>/predict)")
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    namespace = build_predict_parser().parse_args(argv)
    cfg = OmniposeConfig.from_namespace(namespace)
    out = Path(namespace.out) if namespace.out else cfg.run.output_dir / "predict"
    rows = predict_photos(cfg, namespace.photos, out)
    defective = sum(r["verdict"] == "defective" for r in rows)
    unsure = sum(r["pose_unsure"] for r in rows)
    print(f"[{cfg.run.class_name}] {len(rows)} photos: {defective} defective, {len(rows) - defective} good, "
          f"{unsure} with an unsure pose; {out / 'predictions.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
