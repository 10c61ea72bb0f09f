"""The photometric polish of the pipeline's poses (inerf.photometric) against the class's training photographs:
the ones the reprojected reference warps (the trainer's training split), with the NeRF depth the reference maker
renders for them once per run."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from inerf.estimate import PoseEstimate
from inerf.options import InerfOptions
from inerf.photometric import AlignmentPoints, alignment_points, photometric_polish
from omniposead.reference import ReferenceMaker, nearest_views


@dataclass
class PosePolisher:
    reference: ReferenceMaker
    opts: InerfOptions
    _points: dict[int, AlignmentPoints] = field(default_factory=dict)

    def _targets(self, index: int) -> AlignmentPoints:
        if index not in self._points:
            self._points[index] = alignment_points(self.reference.source(index), self.reference.views.intrinsics,
                                                   self.opts.pose_polish_points)
        return self._points[index]

    def __call__(self, poses: list[PoseEstimate], images: np.ndarray) -> list[PoseEstimate]:
        """`poses` of the queries `images` [B,H,W,3] with each refined pose polished (and its loss recorded)."""
        maker, opts = self.reference, self.opts
        polished = []
        for pose, image in zip(poses, images, strict=True):
            start = np.asarray(pose.refined_pose, dtype=np.float64)
            chosen = nearest_views(start, maker.candidates, maker.views.poses, opts.pose_polish_views)
            query = torch.as_tensor(image, dtype=torch.float32, device=maker.device)
            c2w, before, after = photometric_polish(
                query, torch.as_tensor(start, dtype=torch.float32, device=maker.device),
                [self._targets(i) for i in chosen], maker.views.intrinsics, opts.pose_polish_steps,
                opts.pose_polish_lr, keep=opts.pose_polish_keep)
            polished.append(dataclasses.replace(pose, refined_pose=c2w.cpu().numpy().astype(np.float32),
                                                polish_loss=(before, after)))
        return polished
