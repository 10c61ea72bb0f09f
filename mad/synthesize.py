"""Synthetic MAD-format generator: a LEGO-like brick object rendered by analytic ray casting.

    python -m mad.synthesize --out data/synthetic --class_name demo --seed 0
    python -m mad.synthesize --config configs/synthetic/demo.txt      # the class a config describes

Flags are the config keys (--data_root, --class_name, --synth_seed, --synth_size, ...); the short
names --out, --seed, --size, --n_train, ... are aliases. The code lives in mad/synth/ (scene, cameras,
render, defects, generate); this module is the command line.

writes, in exactly the MAD layout (see mad/loader.py),
```
<out>/<class>/transforms.json                   train frames only ("train/good/<i>.png", c2w)
<out>/<class>/train/good/<i>.png                RGB on white
<out>/<class>/test/good/<i>.png
<out>/<class>/test/{Burrs,Missing,Stains}/<i>.png
<out>/<class>/ground_truth/{Burrs,Missing,Stains}/<i>_mask.png   uint8 0/255
<out>/<class>/test_poses.json                   true c2w of every test image (only for pose-accuracy checks)
<out>/<class>/synth_stats.json                  counts, options, defect-mask area statistics
```
Scene: coloured axis-aligned boxes ("bricks" with studs), stacked irregularly from the seed and scaled
into the unit sphere. Shading: Lambert from two fixed world-space directional lights + ambient, no
specular (view independent), on a pure white background, anti-aliased by supersampling (s x s
sub-pixel samples placed symmetrically around each pixel centre). `--detail` (mad.synth.detail) adds fine
structure like MAD's toys: small parts and seams (extra boxes), printed high-contrast marks, and a
view-dependent Blinn-Phong highlight.

Cameras (Blender / NeRF-synthetic convention): on a sphere of radius `radius` (default 4) looking at the
origin with world up = +z, no roll; elevation in [elev_min, elev_max] (default [-30, 80] degrees),
azimuth in [0, 360). Training views lie on a Fibonacci spiral over that band (uniform in area), test
views at independent random poses. The object lies inside the unit sphere, so near=2 / far=6 contain it.
Pixel (row j, column i) casts d = ((i + 0.5 - W/2)/f, -(j + 0.5 - H/2)/f, -1) in the camera frame,
rays_d = R @ d, rays_o = c2w[:3, 3], exactly as nerf/rays.py.

Defects (each defect image: its own random pose and its own random defect instance):
* Stains  - a coloured blob decal on a brick face that is visible from that pose;
* Burrs   - a few small darker boxes protruding from a visible brick face;
* Missing - one top-level brick (and its studs) removed, never the largest one or a base brick.
The mask is pixel exact: pixels whose final uint8 colour differs by more than `mask_tolerance`
(default 1/255) between the defect render and the normal render at the same pose. Views whose mask has
fewer than max(1, min_mask_frac * H * W) pixels are rejected and a new pose is drawn.

Determinism: every image uses its own RNG derived from (seed, split, index), so the same seed and
options give byte-identical files whatever the number of workers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import configargparse

from common.errors import exit_on_user_error
from common.run import RunOptions
from mad.options import SynthOptions, short_aliases
from mad.synth.generate import generate_class


def build_parser() -> configargparse.ArgumentParser:
    parser = configargparse.ArgumentParser(
        prog="python -m mad.synthesize",
        description="Generate a synthetic LEGO-like class in the MAD layout (train/good with poses, "
                    "test/{good,Burrs,Missing,Stains}, ground_truth masks, test_poses.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        config_file_parser_class=configargparse.DefaultConfigFileParser,
        ignore_unknown_config_file_keys=True)
    parser.add_argument("--config", is_config_file=True,
                        help="a pipeline config (.txt): its data_root, class_name and synth_* keys are used")
    RunOptions.add_args(parser, only=("data_root", "class_name"), aliases={"data_root": ["out"]})
    SynthOptions.add_args(parser, aliases=short_aliases())
    parser.add_argument("--overwrite", action="store_true", help="replace an existing class folder")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    opts = SynthOptions.from_config(args)
    start = time.perf_counter()
    path = generate_class(args.data_root, args.class_name, opts, overwrite=args.overwrite,
                          progress=not args.no_progress)
    seconds = time.perf_counter() - start
    stats = json.loads((path / "synth_stats.json").read_text())
    counts = ", ".join(f"{k} {v}" for k, v in stats["counts"].items())
    print(f"wrote {path} in {seconds:.1f} s: {counts}")
    for d, a in stats["mask_area_percent"].items():
        print(f"  {d:8s} mask area % of image: min {a['min']:.3f}  median {a['median']:.3f}  "
              f"max {a['max']:.3f}  (rejected views: {stats['rejected_views'][d]})")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
