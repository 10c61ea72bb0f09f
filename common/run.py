"""What a run works on and where it writes: the dataset, the class, the checkpoint and output roots."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from common.errors import ConfigError
from common.options import Options, option, require

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def is_folder_name(name: str) -> bool:
    """Whether `name` is one plain folder name, so that <root>/<name> stays inside <root>."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and not Path(name).is_absolute() and ":" not in name


@dataclass(frozen=True)
class RunOptions(Options):
    GROUP: ClassVar[str] = "data and paths"
    # The settings images are loaded with: saved at the top level of run.json and reused by the evaluation.
    LOADING_FIELDS: ClassVar[tuple[str, ...]] = ("half_res", "downscale", "white_bkgd")

    data_root: str = option("data/synthetic",
                            "dataset folder holding one sub-folder per class (MAD: data/LEGO-3D)")
    class_name: str = option("demo", "class sub-folder of data_root, e.g. 01Gorilla ('all': every class; 'a,b': those)")
    # Paths and the device string are cosmetic: the run identity names the checkpoint by its content and the
    # device by its kind (omniposead.run_identity).
    ckpt_root: str = option("ckpts", "checkpoints land in <ckpt_root>/<dataset>/<class>/", cosmetic=True)
    output_root: str = option("outputs", "anomaly maps and metrics land in <output_root>/<dataset>/<class>/",
                              cosmetic=True)
    half_res: bool = option(False, "load images at half resolution (MAD-Sim 800x800 -> 400x400); "
                                   "the same as downscale = 2")
    downscale: int = option(1, "load images at 1/downscale resolution: area resampling of the images, "
                               "masks keep every defect pixel, intrinsics scaled (e.g. 4: 400x400 -> 100x100)")
    white_bkgd: bool = option(True, "composite RGBA images on white and render with a white background; "
                                    "false for photos on real backgrounds (renders composite on black)")
    allow_empty_masks: bool = option(False, "accept defect images whose ground-truth mask is all zero (their "
                                            "pixels then count as normal); by default such a mask is an error")
    seed: int = option(0, "seed for sampling, initialisation and data order")
    train_views: float = option(1.0, "train on a subset of the training views: a fraction in (0, 1] or a count > 1, "
                                     "chosen by farthest-point sampling on the camera centres from a view drawn by "
                                     "the seed (mad.view_subset); NeRF, retrieval, iNeRF, pose calibration and "
                                     "residual fit all use the subset, whose checkpoints live apart "
                                     "(<class>_views<value>)")
    device: str = option("auto", "'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:1', ...", cosmetic=True)

    def validated(self) -> RunOptions:
        require(self.downscale >= 1, f"downscale must be >= 1, got {self.downscale}")
        require(not (self.half_res and self.downscale not in (1, 2)),
                f"half_res (= downscale 2) contradicts downscale = {self.downscale}; set only one of them")
        require(self.train_views > 0 and (self.train_views <= 1 or float(self.train_views).is_integer()),
                f"train_views must be a fraction in (0, 1] or a whole count > 1, got {self.train_views}")
        for name in self.class_name.split(","):
            require(is_folder_name(name.strip()),
                    f"class_name must name folders inside data_root (no path separator, '.', '..' or absolute "
                    f"path), got {self.class_name!r}")
        require(DEVICE_PATTERN.fullmatch(self.device) is not None,
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        return self

    def loading_settings(self) -> dict:
        """{field: value} of LOADING_FIELDS."""
        return {name: getattr(self, name) for name in self.LOADING_FIELDS}

    @property
    def image_downscale(self) -> int:
        """The factor images are loaded at: 2 with half_res, else downscale."""
        return 2 if self.half_res else self.downscale

    @property
    def dataset_name(self) -> str:
        """The dataset tag used in checkpoint and output paths: the data_root folder's name."""
        name = Path(self.data_root).resolve().name
        if not name:
            raise ConfigError(f"data_root {self.data_root!r} has no folder name")
        return name

    @property
    def class_dir(self) -> Path:
        return Path(self.data_root) / self.class_name

    @property
    def views_tag(self) -> str:
        """'' with all training views; '_views<train_views>' (e.g. '_views0.5', '_views12') for a subset."""
        return "" if self.train_views == 1 else f"_views{self.train_views:g}"

    @property
    def ckpt_dir(self) -> Path:
        """<ckpt_root>/<dataset>/<class>, or <class>_views<train_views> for a subset of the views, so that a
        NeRF (and its retrieval, residual and calibration caches) of a subset never mixes with the full one."""
        return Path(self.ckpt_root) / self.dataset_name / (self.class_name + self.views_tag)

    @property
    def output_dir(self) -> Path:
        return Path(self.output_root) / self.dataset_name / self.class_name

    @property
    def dataset_output_dir(self) -> Path:
        """<output_root>/<dataset>: where all-class tables land."""
        return Path(self.output_root) / self.dataset_name

    def for_class(self, class_name: str) -> RunOptions:
        return self.replace(class_name=class_name)
