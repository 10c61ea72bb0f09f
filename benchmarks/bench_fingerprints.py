"""What binding results to their inputs costs (issue 38): the seconds to hash a class's training views (the NeRF
checkpoint's fingerprint, hashed once per run) and every test image (one hash per map), beside the class's size.

    python -m benchmarks.bench_fingerprints --config configs/synthetic/demo.txt
    python -m benchmarks.bench_fingerprints --config configs/synthetic/demo.txt --synth_size 400 --synth_n_train 200

Any pipeline option may follow the config (the class is generated first when the config asks for it). The images
are loaded once, then hashed `--repeats` times (fresh objects: nothing cached); the median is printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from common.errors import exit_on_user_error
from mad.loader import load_test_set
from omniposead.config import parse_config
from omniposead.pipeline import class_train_views, prepare_class


def seconds(fn, repeats: int) -> float:
    """Median wall seconds of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="hash this many times; the median is printed")
    own, rest = parser.parse_known_args(argv)
    cfg = parse_config(rest)
    run = cfg.run
    class_dir = prepare_class(cfg)
    views = class_train_views(cfg, class_dir)
    test_set = load_test_set(class_dir, downscale=run.image_downscale, white_bkgd=run.white_bkgd,
                             allow_empty_masks=run.allow_empty_masks)
    train_s = seconds(lambda: dataclasses.replace(views).fingerprint, own.repeats)
    test_s = seconds(lambda: [dataclasses.replace(s).image_digest for s in test_set], own.repeats)
    megabytes = (views.images.nbytes + sum(s.image.nbytes for s in test_set)) / 2**20
    print(f"{run.class_name}: {len(views.images)} training views {views.width}x{views.height} hashed in "
          f"{train_s:.3f} s; {len(test_set)} test images in {test_s:.3f} s ({megabytes:.0f} MB in all)")


if __name__ == "__main__":
    main()
