"""Coarse-pose retrieval database: exact self-retrieval, ordering, caching and fingerprint rebuilds."""
import copy
import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from common.camera import Intrinsics
from common.run import RunOptions
from features.backbone import random_backbone_for_tests
from mad.loader import TrainViews
from retrieval import database as dbmod
from retrieval.database import CACHE_NAME, DescriptorDatabase, load_or_build_database
from retrieval.options import RetrievalOptions

N, SIZE = 10, 64


@pytest.fixture(scope="module")
def backbone():
    return random_backbone_for_tests("cpu")


def make_views(n=N, size=48, seed=0):
    """Distinct white-background images with coloured rectangles (stand-ins for training views)."""
    rng = np.random.default_rng(seed)
    images = np.ones((n, size, size, 3), np.float32)
    for img in images:
        for _ in range(6):
            r, c = rng.integers(0, size - 12, size=2)
            img[r:r + rng.integers(6, 16), c:c + rng.integers(6, 16)] = rng.random(3)
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n)
    return TrainViews(images=images, poses=poses, intrinsics=Intrinsics.centred(50.0, size, size), height=size,
                      width=size, paths=[Path(f"train/good/{i}.png") for i in range(n)])


def make_cfg(tmp_path, class_name="demo", **kw):
    """(retrieval options, cache path of the class) as the pipeline derives them."""
    run = RunOptions(ckpt_root=str(tmp_path / "ckpts"), data_root=str(tmp_path / "data" / "synthetic"),
                     class_name=class_name)
    opts = RetrievalOptions(**{"desc_dim": 64, "retrieval_size": SIZE, "retrieval_topk": 1, "retrieval_batch": 4,
                               **kw})
    return opts, run.ckpt_dir / CACHE_NAME


def build(cfg, backbone, views):
    opts, path = cfg
    return load_or_build_database(opts, backbone, views, "cpu", path)


def test_training_image_retrieves_itself(tmp_path, backbone):
    views = make_views()
    cfg = make_cfg(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        db = build(cfg, backbone, views)
    # desc_dim 64 is clamped to n_train - 1 with a note
    assert db.desc_dim == N - 1 and any("clamped" in str(w.message) for w in caught) and db.notes
    idx, dist = db.query(views.images, k=3)
    assert idx.shape == (N, 3) and dist.shape == (N, 3)
    np.testing.assert_array_equal(idx[:, 0], np.arange(N))
    assert np.all(dist[:, 0] < 1e-5)
    assert np.all(np.diff(dist, axis=1) >= 0)            # ascending
    assert np.all(dist[:, 1] > 1e-3)                      # other views are really further away
    np.testing.assert_allclose(np.linalg.norm(db.descriptors.numpy(), axis=1), 1.0, atol=1e-5)
    # a single [H,W,3] image and k larger than the database are accepted
    one_idx, _one_dist = db.query(views.images[4], k=100)
    assert one_idx.shape == (1, N) and one_idx[0, 0] == 4
    # images at another resolution are resized to retrieval_size first
    big = np.repeat(np.repeat(views.images[:3], 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(db.query(big)[0][:, 0], [0, 1, 2])


def test_cache_reused_and_rebuilt_on_fingerprint_change(tmp_path, backbone, monkeypatch):
    views = make_views()
    cfg = make_cfg(tmp_path, desc_dim=4)
    builds = []
    real_build = DescriptorDatabase.build.__func__

    def counting_build(cls, *args, **kwargs):
        builds.append(1)
        return real_build(cls, *args, **kwargs)

    monkeypatch.setattr(DescriptorDatabase, "build", classmethod(counting_build))
    first = build(cfg, backbone, views)
    path = cfg[1]
    assert path == tmp_path / "ckpts" / "synthetic" / "demo" / "retrieval.pt" and path.is_file()
    assert len(builds) == 1

    again = build(cfg, backbone, views)
    assert len(builds) == 1                              # reused
    assert again.fingerprint == first.fingerprint
    torch.testing.assert_close(again.descriptors, first.descriptors)
    np.testing.assert_array_equal(again.query(views.images[:3])[0], first.query(views.images[:3])[0])

    build(make_cfg(tmp_path, desc_dim=3), backbone, views)
    assert len(builds) == 2                              # desc_dim changed
    build(make_cfg(tmp_path, desc_dim=3, retrieval_size=32), backbone, views)
    assert len(builds) == 3                              # retrieval_size changed
    changed = make_views()
    changed.images[2, :4, :4] = 0.0
    build(make_cfg(tmp_path, desc_dim=3, retrieval_size=32), backbone, changed)
    assert len(builds) == 4                              # a training image changed
    other = copy.deepcopy(backbone)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    build(make_cfg(tmp_path, desc_dim=3, retrieval_size=32), other, changed)
    assert len(builds) == 5                              # backbone weights changed
    build(make_cfg(tmp_path, desc_dim=3, retrieval_size=32), other, changed)
    assert len(builds) == 5

    path.write_bytes(b"not a torch file")                # corrupt cache -> rebuilt with a warning
    with pytest.warns(UserWarning, match="unreadable"):
        build(make_cfg(tmp_path, desc_dim=3, retrieval_size=32), other, changed)
    assert len(builds) == 6


def test_fingerprint_depends_on_inputs(backbone):
    views = make_views(n=4)
    fp = dbmod.database_fingerprint(views, backbone, 64, 224)
    assert fp == dbmod.database_fingerprint(dataclasses.replace(views, images=views.images.copy()), backbone, 64, 224)
    assert fp != dbmod.database_fingerprint(views, backbone, 32, 224)
    assert fp != dbmod.database_fingerprint(views, backbone, 64, 128)
    assert fp != dbmod.database_fingerprint(dataclasses.replace(views, images=views.images[:3]), backbone, 64, 224)
    brighter = views.images.copy()
    brighter[0, 0, 0, 0] = 0.5                            # one value of one pixel
    assert fp != dbmod.database_fingerprint(dataclasses.replace(views, images=brighter), backbone, 64, 224)


def test_on_generated_class(tiny_class_dir, tmp_path, backbone):
    from mad.loader import load_train_views

    views = load_train_views(tiny_class_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        db = build(make_cfg(tmp_path, "tiny", retrieval_size=32), backbone, views)
    assert make_cfg(tmp_path, "tiny")[1].is_file()
    idx, dist = db.query(views.images, k=1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(len(views.images)))
    assert np.all(dist < 1e-5)
