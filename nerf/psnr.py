"""Image fidelity in PSNR: of a renderer on held-out views, and of the mean-colour baseline."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from common.camera import Intrinsics


def psnr_from_mse(mse: float | Tensor) -> float | Tensor:
    """PSNR in dB of images in [0, 1]."""
    if torch.is_tensor(mse):
        return -10.0 * torch.log10(mse.clamp_min(1e-10))
    return -10.0 * math.log10(max(float(mse), 1e-10))


def mean_colour_psnr(train_images: Tensor, val_images: Tensor) -> float:
    """Mean PSNR of predicting every held-out pixel as the mean training colour."""
    mean = train_images.reshape(-1, 3).double().mean(dim=0)
    mse = ((val_images.double() - mean) ** 2).mean(dim=(1, 2, 3))
    return float(np.mean([psnr_from_mse(float(m)) for m in mse]))


@torch.no_grad()
def heldout_psnr(renderer, poses: Tensor, images: Tensor, intrinsics: Intrinsics, chunk: int | None = None) -> float:
    """Mean PSNR of full renders of `poses [V, 4, 4]` against `images [V, H, W, 3]`."""
    was_training = renderer.training
    renderer.eval()
    values = []
    for pose, image in zip(poses, images, strict=True):
        pred = renderer.render_image(pose, image.shape[0], image.shape[1], intrinsics, chunk=chunk)
        values.append(psnr_from_mse(float(((pred - image) ** 2).mean())))
    renderer.train(was_training)
    return float(np.mean(values))
