"""Reverse distillation (anomaly.reverse_distillation) and its training set (omniposead.distillation_views): the
map's closed forms, the attention block, a loss that falls on a tiny class, an exact resume, and what each
augmentation switch adds."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from anomaly.reverse_distillation import (
    DistillationOptions,
    NonLocal,
    ReverseDistillation,
    distillation_loss,
    distillation_map,
)
from common.errors import ConfigError
from features.backbone import random_backbone_for_tests
from mad.loader import load_train_views
from omniposead.distillation_views import distillation_images, novel_poses

TINY = DistillationOptions(rd_stages=(2, 3), rd_size=32, rd_steps=30, rd_batch=4, rd_embedding=16, rd_sigma=0.0)


@pytest.fixture(scope="module")
def backbone():
    return random_backbone_for_tests("cpu")


def test_the_map_is_zero_where_the_student_points_the_teachers_way_and_counts_the_stages_where_it_is_orthogonal():
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 6, 8, 8, generator=g), torch.randn(2, 10, 4, 4, generator=g)]
    scaled = [t * 3.0 for t in teacher]                            # the same direction: cosine 1
    assert distillation_map(teacher, scaled, (16, 16), 0.0).abs().max() < 1e-6
    assert distillation_map(teacher, scaled, (16, 16), 2.0).abs().max() < 1e-6
    assert distillation_loss(teacher, scaled).abs() < 1e-6
    first = torch.zeros(2, 4, 8, 8)
    first[:, 0] = 1.0
    second = torch.zeros(2, 4, 8, 8)
    second[:, 1] = 2.0                                             # orthogonal: cosine 0, distance 1 per stage
    opposite = -first[:, :, :4, :4]                                # opposite: cosine -1, distance 2
    amap = distillation_map([first, first[:, :, :4, :4]], [second, opposite], (16, 16), 0.0)
    assert torch.allclose(amap, torch.full((2, 16, 16), 3.0))
    assert distillation_loss([first], [second]) == pytest.approx(1.0)


def test_the_attention_block_starts_as_the_identity_and_then_sees_the_whole_map():
    torch.manual_seed(0)
    block = NonLocal(8)
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(block(x), x)
    torch.nn.init.normal_(block.out.weight)
    y = x.clone()
    y[:, :, 0, 0] += 1.0                                           # one corner changes ...
    change = (block(y) - block(x))[0].abs().sum(0)
    assert change[5, 5] > 0                                        # ... and the far corner's output moves


def test_bad_options_are_one_clear_error():
    with pytest.raises(ConfigError, match="rd_size must be a multiple of 16"):
        DistillationOptions(rd_stages=(2, 3), rd_size=40).validated()
    with pytest.raises(ConfigError, match="rd_stages"):
        DistillationOptions(rd_stages=(3, 2)).validated()


def test_the_distillation_loss_falls_on_a_tiny_class(backbone, tiny_class_dir):
    views = load_train_views(tiny_class_dir)
    student = ReverseDistillation(backbone, TINY, seed=0).fit(views.images)
    first, last = np.mean(student.losses[:3]), np.mean(student.losses[-3:])
    assert len(student.losses) == TINY.rd_steps and last < 0.7 * first
    maps, scores = student.predict(views.images[:3])
    assert maps.shape == (3, *views.images.shape[1:3]) and np.allclose(scores, maps.reshape(3, -1).max(1))


def test_an_interrupted_training_resumes_exactly(backbone, tiny_class_dir, tmp_path, monkeypatch):
    views = load_train_views(tiny_class_dir)
    opts = dataclasses.replace(TINY, rd_steps=8, rd_save_every=3, rd_attention=True)
    whole = ReverseDistillation(backbone, opts, seed=1).fit(views.images)
    path = tmp_path / "rd.pt"
    interrupted = ReverseDistillation(backbone, opts, seed=1)
    real, calls = interrupted.teacher, []

    def failing(images):
        calls.append(1)
        if len(calls) == 5:                                        # during step 5: the checkpoint holds step 3
            raise KeyboardInterrupt
        return real(images)

    monkeypatch.setattr(interrupted, "teacher", failing)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(views.images, path, "fp")
    resumed = ReverseDistillation(backbone, opts, seed=1).fit(views.images, path, "fp")
    assert resumed.step == 8 and resumed.losses == whole.losses
    for a, b in zip(resumed.student.state_dict().values(), whole.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = ReverseDistillation(backbone, opts, seed=1).fit(views.images[:4], path, "another fingerprint")
    assert other.losses != whole.losses                            # another training set starts afresh


def test_novel_poses_lie_between_and_around_the_training_cameras_and_look_at_the_object():
    angles = np.radians(np.arange(0, 360, 30))
    poses = np.tile(np.eye(4), (len(angles), 1, 1))
    for i, a in enumerate(angles):                                 # cameras on a circle of radius 4 at height 1
        centre = np.array([4 * np.cos(a), 4 * np.sin(a), 1.0])
        back = centre / np.linalg.norm(centre)                     # the camera looks down -z: z points back
        right = np.cross([0, 0, 1.0], back)
        right /= np.linalg.norm(right)
        poses[i, :3, :3] = np.stack([right, np.cross(back, right), back], 1)
        poses[i, :3, 3] = centre
    novel = novel_poses(poses, 40, seed=0)
    assert np.array_equal(novel, novel_poses(poses, 40, seed=0))
    for pose in novel:
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9)
        direction = pose[:3, 3] / np.linalg.norm(pose[:3, 3])
        assert np.allclose(pose[:3, 2], direction, atol=1e-9)      # still looking at the origin
        assert np.linalg.norm(pose[:3, 3]) == pytest.approx(np.sqrt(17.0))
    heights = novel[:, 2, 3]
    assert np.allclose(heights, 1.0) and len({round(float(np.arctan2(p[1, 3], p[0, 3])), 3) for p in novel}) > 30


def test_each_augmentation_switch_adds_what_it_says():
    train = np.zeros((5, 4, 4, 3), dtype=np.float32)
    angles = np.radians([0, 60, 120, 180, 240])
    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[:, :3, 3] = np.stack([4 * np.cos(angles), 4 * np.sin(angles), np.zeros(5)], 1)
    rendered = []

    def render(pose):
        rendered.append(pose)
        return np.full((4, 4, 3), 0.5, dtype=np.float32)

    estimated = np.tile(np.eye(4), (3, 1, 1))
    images, counts = distillation_images(DistillationOptions(), train, poses, render, estimated, seed=0)
    assert counts == {"training views": 5} and len(images) == 5 and not rendered
    images, counts = distillation_images(DistillationOptions(rd_nerf_views=7), train, poses, render, None, seed=0)
    assert counts == {"training views": 5, "NeRF views": 7} and len(images) == 12 and (images[5:] == 0.5).all()
    rendered.clear()
    images, counts = distillation_images(DistillationOptions(rd_aligned=True), train, poses, render, estimated, 0)
    assert counts == {"training views": 5, "aligned renders": 3} and np.array_equal(np.stack(rendered), estimated)
    with pytest.raises(ValueError, match="estimated"):
        distillation_images(DistillationOptions(rd_aligned=True), train, poses, render, None, 0)
