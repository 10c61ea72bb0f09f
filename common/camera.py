"""Pinhole camera intrinsics shared by the reader, the rays, the renderer and iNeRF.

Pixel (row j, column i) has its centre at (i + 0.5, j + 0.5) in pixel units; the principal point
(cx, cy) is in the same units, so a centred camera has cx = W/2, cy = H/2. The camera-frame ray through
the pixel centre (OpenGL camera: looks down -z, y up) is ((i + 0.5 - cx)/fx, -(j + 0.5 - cy)/fy, -1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    fx: float      # focal length in pixels, horizontal
    fy: float      # focal length in pixels, vertical
    cx: float      # principal point, pixels from the left image edge
    cy: float      # principal point, pixels from the top image edge

    @classmethod
    def centred(cls, focal: float, width: int, height: int) -> Intrinsics:
        """Square pixels, principal point at the image centre (the Blender / NeRF-synthetic camera)."""
        return cls(float(focal), float(focal), 0.5 * width, 0.5 * height)

    def downscaled(self, factor: int) -> Intrinsics:
        """The same camera on an image resampled by 1/factor (each factor x factor block -> one pixel)."""
        return Intrinsics(self.fx / factor, self.fy / factor, self.cx / factor, self.cy / factor)

    def matrix(self) -> np.ndarray:
        """3x3 K of the OpenCV-oriented camera (x right, y down, z forward) in pixel coordinates where
        pixel i's centre is i + 0.5 (COLMAP's convention; OpenCV's own puts it at i)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def as_dict(self) -> dict[str, float]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}
