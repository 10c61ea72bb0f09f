"""All training rays of a set of posed views, kept implicitly on the device and sampled per step."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from common.camera import Intrinsics
from nerf.rays import camera_directions, rays_from_poses


@dataclass
class RayBank:
    """Images, poses and one shared camera-frame direction grid; a ray is (view, row, column)."""
    images: Tensor      # [N, H, W, 3]
    poses: Tensor       # [N, 4, 4]
    dirs: Tensor        # [H, W, 3] camera frame

    @classmethod
    def build(cls, images: np.ndarray, poses: np.ndarray, intrinsics: Intrinsics,
              device: torch.device) -> RayBank:
        images_t = torch.as_tensor(images, dtype=torch.float32, device=device)
        poses_t = torch.as_tensor(poses, dtype=torch.float32, device=device)
        dirs = camera_directions(images_t.shape[1], images_t.shape[2], intrinsics, device=device)
        return cls(images_t, poses_t, dirs)

    def sample(self, n_rays: int, generator: torch.Generator,
               precrop_frac: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """n_rays random (rays_o, rays_d, target rgb), drawn uniformly over views and pixels
        (over the central `precrop_frac` of each image when given)."""
        n, h, w = self.images.shape[:3]
        device = self.images.device
        view = torch.randint(n, (n_rays,), device=device, generator=generator)
        if precrop_frac is None:
            j = torch.randint(h, (n_rays,), device=device, generator=generator)
            i = torch.randint(w, (n_rays,), device=device, generator=generator)
        else:
            dh, dw = max(int(h // 2 * precrop_frac), 1), max(int(w // 2 * precrop_frac), 1)
            j = h // 2 - dh + torch.randint(2 * dh, (n_rays,), device=device, generator=generator)
            i = w // 2 - dw + torch.randint(2 * dw, (n_rays,), device=device, generator=generator)
        rays_o, rays_d = rays_from_poses(self.poses[view], self.dirs[j, i])
        return rays_o, rays_d, self.images[view, j, i]
