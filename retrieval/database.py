"""Coarse pose by retrieval: a descriptor database over the training views.

Descriptor (the paper's phi: R^{HxWx3} -> R^64, read as): resize the image to a
``retrieval_size`` square, run the shared frozen backbone, global-average-pool each of its five
stage maps, concatenate, standardise with the training-set statistics, project with a PCA fitted
on the training set to ``desc_dim`` dimensions, L2-normalise. The query's nearest training view
(squared L2 distance) gives the coarse pose.

The database is cached in ``<ckpt_dir>/retrieval.pt`` with a fingerprint of everything it
depends on (training images, backbone description and weights, desc_dim, retrieval_size) and
rebuilt whenever the fingerprint changes.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.io import save_torch
from features.backbone import backbone_signature
from retrieval.options import RetrievalOptions

CACHE_NAME = "retrieval.pt"
FORMAT_VERSION = 1


def pooled_features(backbone, images, size: int, device, batch_size: int = 32) -> torch.Tensor:
    """[N,H,W,3] images in [0,1] (numpy or tensor) -> [N, sum(channels)] float32 on the CPU."""
    device = torch.device(device)
    n = len(images)
    out = []
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        x = torch.as_tensor(np.asarray(chunk, dtype=np.float32) if not torch.is_tensor(chunk) else chunk)
        x = x.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            maps = backbone(x.clamp(0.0, 1.0))
        out.append(torch.cat([m.float().mean(dim=(2, 3)) for m in maps], dim=1).cpu())
    return torch.cat(out, dim=0)


class DescriptorDatabase:
    """Descriptors of the training views + the projection that makes them; `query` finds neighbours."""

    def __init__(self, backbone, device, *, descriptors, feat_mean, feat_std, components, pca_mean,
                 retrieval_size: int, fingerprint: str = "", notes: list[str] | None = None, batch_size: int = 32):
        self.backbone = backbone
        self.device = torch.device(device)
        self.descriptors = descriptors.float().to(self.device)      # [N, D], unit rows
        self.feat_mean = feat_mean.float().to(self.device)          # [C]
        self.feat_std = feat_std.float().to(self.device)            # [C]
        self.components = components.float().to(self.device)        # [D, C]
        self.pca_mean = pca_mean.float().to(self.device)            # [C]
        self.retrieval_size = int(retrieval_size)
        self.fingerprint = fingerprint
        self.notes = list(notes or [])
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.descriptors.shape[0]

    @property
    def desc_dim(self) -> int:
        return self.descriptors.shape[1]

    @classmethod
    def build(cls, backbone, images, desc_dim: int, retrieval_size: int, device, fingerprint: str = "",
              batch_size: int = 32) -> DescriptorDatabase:
        from sklearn.decomposition import PCA

        feats = pooled_features(backbone, images, retrieval_size, device, batch_size).double()
        n, c = feats.shape
        notes = []
        dim = min(int(desc_dim), max(n - 1, 1), c)
        if dim != int(desc_dim):
            notes.append(f"retrieval descriptor dimension clamped from {desc_dim} to {dim} "
                         f"({n} training views, {c} pooled channels; PCA needs at most n-1 components)")
            warnings.warn(notes[-1], stacklevel=2)
        mean = feats.mean(0)
        std = feats.std(0, unbiased=False).clamp_min(1e-6)
        z = ((feats - mean) / std).numpy()
        pca = PCA(n_components=dim, svd_solver="full").fit(z)
        db = cls(backbone, device, descriptors=torch.zeros(0, dim), feat_mean=mean, feat_std=std,
                 components=torch.from_numpy(pca.components_.copy()), pca_mean=torch.from_numpy(pca.mean_.copy()),
                 retrieval_size=retrieval_size, fingerprint=fingerprint, notes=notes, batch_size=batch_size)
        db.descriptors = db._project(feats.float().to(db.device))
        return db

    def _project(self, feats: torch.Tensor) -> torch.Tensor:
        z = (feats - self.feat_mean) / self.feat_std
        d = (z - self.pca_mean) @ self.components.T
        return F.normalize(d, dim=1)

    def describe(self, images) -> torch.Tensor:
        """[B,H,W,3] images in [0,1] -> unit descriptors [B, D] on the database device."""
        feats = pooled_features(self.backbone, images, self.retrieval_size, self.device, self.batch_size)
        return self._project(feats.to(self.device))

    def query(self, images, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Nearest training views: (indices [B,k] int64, squared L2 distances [B,k] float32), ascending."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        k = max(1, min(int(k), len(self)))
        q = self.describe(images)
        d2 = ((q * q).sum(1, keepdim=True) + (self.descriptors ** 2).sum(1)[None, :]
              - 2.0 * q @ self.descriptors.T).clamp_min(0.0)
        dist, idx = torch.sort(d2, dim=1, stable=True)
        return idx[:, :k].cpu().numpy().astype(np.int64), dist[:, :k].cpu().numpy().astype(np.float32)

    def state(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "descriptors": self.descriptors.cpu(),
            "feat_mean": self.feat_mean.cpu(),
            "feat_std": self.feat_std.cpu(),
            "components": self.components.cpu(),
            "pca_mean": self.pca_mean.cpu(),
            "retrieval_size": self.retrieval_size,
            "notes": self.notes,
        }

    @classmethod
    def from_state(cls, state: dict, backbone, device, batch_size: int = 32) -> DescriptorDatabase:
        return cls(backbone, device, descriptors=state["descriptors"], feat_mean=state["feat_mean"],
                   feat_std=state["feat_std"], components=state["components"], pca_mean=state["pca_mean"],
                   retrieval_size=state["retrieval_size"], fingerprint=state["fingerprint"],
                   notes=state.get("notes"), batch_size=batch_size)


class WithoutViews:
    """A database whose queries never return the training views `excluded`: views of the class scored as if
    they were queries (the threshold's held-out views) must not find themselves."""

    def __init__(self, database: DescriptorDatabase, excluded):
        self.database, self.excluded = database, np.asarray(sorted({int(i) for i in excluded}), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.database) - len(self.excluded)

    def query(self, images, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """As DescriptorDatabase.query, the excluded views left out (indices still into the whole database)."""
        k = max(1, min(int(k), len(self)))
        idx, dist = self.database.query(images, k + len(self.excluded))
        keep = ~np.isin(idx, self.excluded)
        rows = [np.flatnonzero(row)[:k] for row in keep]
        return (np.stack([i[r] for i, r in zip(idx, rows, strict=True)]),
                np.stack([d[r] for d, r in zip(dist, rows, strict=True)]))


def database_fingerprint(train_views, backbone, desc_dim: int, retrieval_size: int) -> str:
    """Hash of the training images (mad.loader.TrainViews.image_digest), backbone (description + weights),
    desc_dim and retrieval_size."""
    h = hashlib.sha256()
    h.update(f"v{FORMAT_VERSION}|{int(desc_dim)}|{int(retrieval_size)}|".encode())
    h.update(backbone_signature(backbone).encode())
    h.update(train_views.image_digest.encode())
    return h.hexdigest()


def load_or_build_database(opts: RetrievalOptions, backbone, train_views, device, path: Path) -> DescriptorDatabase:
    """The database cached at `path` when its fingerprint matches, else a freshly built (and saved) one."""
    fingerprint = database_fingerprint(train_views, backbone, opts.desc_dim, opts.retrieval_size)
    path = Path(path)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - an unreadable cache is rebuilt
            warnings.warn(f"{path}: unreadable retrieval cache ({err}); rebuilding", stacklevel=2)
            state = None
        if state and state.get("format_version") == FORMAT_VERSION and state.get("fingerprint") == fingerprint:
            return DescriptorDatabase.from_state(state, backbone, device, opts.retrieval_batch)
    db = DescriptorDatabase.build(backbone, train_views.images, opts.desc_dim, opts.retrieval_size, device,
                                  fingerprint, opts.retrieval_batch)
    save_torch(path, db.state())
    return db
