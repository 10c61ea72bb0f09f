"""Fit (or reuse) the class's model of the NeRF's normal residual (anomaly.residual) on held-out TRAINING views.

The views are the trainer's held-out split (nerf.trainer.split_views with holdout_every): the NeRF never
trained on them, so its error there is the error it makes on a new view. With holdout_every = 0 there is
no such split: a few training views are used instead (evenly spaced, residual_fallback_views) and a
warning says that their error is optimistic. Test images never reach the fit.
"""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import torch

from anomaly.residual import RESIDUAL_NAME, ResidualModel, load_residual_model
from anomaly.scorer import term_differences
from common.fingerprint import digest
from common.progress import progress_bar
from features.backbone import backbone_signature
from mad.loader import TrainViews
from nerf.renderer import NeRFRenderer
from nerf.trainer import evenly_chosen, heldout_view_indices
from omniposead.config import OmniposeConfig
from omniposead.reference import ReferenceMaker


def residual_fingerprint(cfg: OmniposeConfig, renderer: NeRFRenderer, backbone, views: TrainViews,
                         indices: list[int]) -> str:
    """Hash of everything the fit depends on: the NeRF's weights and rendering options, the backbone, the
    compared terms of the protocol, and the chosen views (images and poses)."""
    score = cfg.score
    h = hashlib.sha256()
    h.update(json.dumps({"protocol": score.score_protocol, "stages": list(score.compared_stages()),
                         "rgb": score.compares_rgb(), "views": list(indices), "white_bkgd": cfg.run.white_bkgd,
                         **score.relight_record(),
                         "nerf": repr(cfg.nerf), "reference": score.reference_record()},
                        sort_keys=True).encode())
    h.update(digest(renderer.state_dict().items()).encode())
    h.update(backbone_signature(backbone).encode())
    h.update(np.ascontiguousarray(views.images[indices], dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(views.poses[indices], dtype=np.float32).tobytes())
    return h.hexdigest()


def load_or_fit_residual(cfg: OmniposeConfig, views: TrainViews, reference: ReferenceMaker, backbone,
                         device: torch.device, progress: bool = True) -> ResidualModel:
    """The class's residual model from ckpts/<dataset>/<class>/residual.pt when one stored there has the fingerprint
    of the NeRF and scorer options; otherwise fitted on the held-out training views and added there atomically."""
    indices, fallback = heldout_view_indices(len(views.images), cfg.train.holdout_every,
                                              cfg.score.residual_fallback_views)
    indices = evenly_chosen(indices, cfg.score.residual_views)
    if fallback:
        warnings.warn(f"holdout_every = 0: the residual model of {cfg.run.class_name} is fitted on {len(indices)} "
                      "views the NeRF was trained on; its error there is smaller than on new views, so normal "
                      "test images may score high. Set holdout_every > 0 and retrain for a fair model.",
                      stacklevel=2)
    fingerprint = residual_fingerprint(cfg, reference.renderer, backbone, views, indices)
    path = cfg.run.ckpt_dir / RESIDUAL_NAME
    model = load_residual_model(path, fingerprint)
    if model is not None:
        return model

    def batches():
        for i in progress_bar(indices, desc=f"{cfg.run.class_name} residual model", unit="view", disable=not progress):
            photo = torch.as_tensor(views.images[i], dtype=torch.float32, device=device)
            render = reference(views.poses[i], photo)
            yield term_differences(backbone, photo.permute(2, 0, 1)[None], render.permute(2, 0, 1)[None], cfg.score)

    notes = {"views": indices, "heldout": not fallback, "score_protocol": cfg.score.score_protocol}
    model = ResidualModel.fit(batches(), fingerprint, notes)
    model.save(path)
    return model
