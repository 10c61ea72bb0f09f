"""The anomaly-free reference a query is compared with, at a camera pose: the NeRF's render (the paper), or the
nearest training photographs warped to that pose with the NeRF's depth (nerf.reprojection; `reference =
reprojected`). One maker per class serves the pipeline, the residual model's fit and the decomposition, so all
three compare against the same kind of reference.

The warped views are the trainer's training split (never the held-out views the residual model is fitted on);
each one's NeRF depth is rendered once, when first needed (at 1/reference_depth_downscale of the size), and kept
for the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from anomaly.options import ScoreOptions
from mad.loader import TrainViews
from nerf.renderer import NeRFRenderer
from nerf.reprojection import (
    SourceView,
    background_on_rim,
    backproject,
    consistent_depth,
    reprojected_reference,
    surface_depth,
    view_spread,
)
from nerf.trainer import split_views


def nearest_views(c2w: np.ndarray, candidates: np.ndarray, poses: np.ndarray, count: int) -> list[int]:
    """The `count` views among `candidates` (indices into `poses` [N, 4, 4]) whose camera centres are closest in
    direction, seen from the object's centre (the world origin), to the camera `c2w`'s: nearest first."""
    centre = c2w[:3, 3] / max(float(np.linalg.norm(c2w[:3, 3])), 1e-9)
    others = poses[candidates, :3, 3]
    cosine = others @ centre / np.maximum(np.linalg.norm(others, axis=1), 1e-9)
    order = np.argsort(-cosine, kind="stable")[:count]
    return [int(candidates[i]) for i in order]


@dataclass
class ReferenceMaker:
    renderer: NeRFRenderer
    views: TrainViews
    score: ScoreOptions
    holdout_every: int
    device: torch.device
    _depths: dict[int, Tensor] = field(default_factory=dict)

    @property
    def candidates(self) -> np.ndarray:
        """The training views that may be warped: the trainer's training split."""
        return np.asarray(split_views(len(self.views.images), self.holdout_every)[0], dtype=np.int64)

    def source(self, index: int) -> SourceView:
        """Training view `index` with its NeRF depth (rendered once per run)."""
        if index not in self._depths:
            factor = self.score.reference_depth_downscale
            buffers = self.renderer.render_buffers(self._pose(self.views.poses[index]), self.views.height // factor,
                                                   self.views.width // factor, self.views.intrinsics.downscaled(factor))
            self._depths[index] = surface_depth(buffers["depth"], buffers["acc"])
        image = torch.as_tensor(self.views.images[index], dtype=torch.float32, device=self.device)
        return SourceView(image, self._depths[index], self._pose(self.views.poses[index]))

    def _pose(self, c2w) -> Tensor:
        return torch.as_tensor(_numpy(c2w), dtype=torch.float32, device=self.device)

    def __call__(self, c2w, query=None) -> Tensor:
        """The reference [H, W, 3] float32 in [0, 1] at camera-to-world `c2w` [4, 4]. `query` [H, W, 3] in [0, 1]
        (the image the reference is for) is needed with reference_match = query, and ignored otherwise."""
        return self.with_unseen(c2w, query)[0]

    def with_unseen(self, c2w, query=None) -> tuple[Tensor, Tensor | None]:
        """(reference, unseen): the reference as __call__ makes it and, for the reprojected one, the pixels [H, W]
        bool where the NeRF sees a surface that no warped training view sees (their colour is the NeRF's guess)
        or, with reference_spread_limit, where the views that see it disagree; None for the NeRF's render. With
        reference_background_band, the background colour competes on the surface's rim
        (nerf.reprojection.background_on_rim), for either reference; a pixel it wins is not unseen."""
        views, score = self.views, self.score
        needs_query = score.reference_background_band > 0 or (score.reference == "reprojected"
                                                                and score.reference_match == "query")
        if needs_query and query is None:
            raise ValueError("reference_match = query or reference_background_band > 0: the reference needs the "
                             "query image")
        query = None if query is None else torch.as_tensor(query, dtype=torch.float32, device=self.device)
        pose = self._pose(c2w)
        buffers = self.renderer.render_buffers(pose, views.height, views.width, views.intrinsics)
        depth = surface_depth(buffers["depth"], buffers["acc"])
        if score.reference == "nerf":
            reference, from_views = buffers["rgb"], None
        else:
            chosen = nearest_views(_numpy(c2w).astype(np.float64), self.candidates, views.poses,
                                   score.reference_views + score.reference_fill_views)
            main = [self.source(i) for i in chosen[:score.reference_views]]
            fill = chosen[score.reference_views:]
            if score.reference_depth_search > 0:
                depth = consistent_depth(depth, pose, main, views.intrinsics, score.reference_tolerance,
                                         score.reference_depth_search, score.reference_depth_step,
                                         score.reference_match_window)
            reference, from_views = reprojected_reference(
                buffers["rgb"], depth, pose, main, views.intrinsics,
                score.reference_tolerance, query if score.reference_match == "query" else None,
                score.reference_match_window, score.reference_match_shift, score.reference_match_nerf,
                (self.source(i) for i in fill), score.reference_silhouette_band)
            if score.reference_spread_limit > 0:
                spread, _ = view_spread(backproject(depth, pose, views.intrinsics), main,
                                        views.intrinsics, score.reference_tolerance)
                from_views = from_views & ~(spread > score.reference_spread_limit)
        if score.reference_background_band > 0:
            reference, taken = background_on_rim(reference, depth, query, score.reference_background_band,
                                                 self.renderer.background)
            from_views = None if from_views is None else from_views | taken
        return reference, None if from_views is None else (depth > 0) & ~from_views


def _numpy(c2w) -> np.ndarray:
    return c2w.detach().cpu().numpy() if torch.is_tensor(c2w) else np.asarray(c2w)
