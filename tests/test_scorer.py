"""Feature-difference anomaly maps: zero for identical pairs, peaked at a local change, pooled image scores."""
import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomaly.options import ScoreOptions
from anomaly.scorer import anomaly_map, feature_distance, gaussian_blur, gaussian_kernel1d, image_scores
from common.errors import ConfigError
from features.backbone import random_backbone_for_tests

SIZE = 64


@pytest.fixture(scope="module")
def backbone():
    return random_backbone_for_tests("cpu")


def _smooth_image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)


def _painted(image: torch.Tensor, delta: float, top=36, left=12, size=8) -> torch.Tensor:
    out = image.clone()
    out[:, :, top:top + size, left:left + size] = (out[:, :, top:top + size, left:left + size] + delta).clamp(0, 1)
    return out


def test_identical_pair_gives_a_zero_map(backbone):
    x = torch.cat([_smooth_image(0), _smooth_image(1)])
    for sigma in (0.0, 4.0):
        amap = anomaly_map(backbone, x, x.clone(), sigma=sigma)
        assert amap.shape == (2, SIZE, SIZE) and amap.dtype == torch.float32
        assert float(amap.abs().max()) < 1e-5


class PooledBackbone(torch.nn.Module):
    """A local 5-stage stand-in (strides 2..32): every stage responds only near a change."""

    def forward(self, x):
        return [F.avg_pool2d(x, 2 ** k) for k in range(1, 6)]


@pytest.mark.parametrize("which", ["random_shallow", "pooled_all_stages"])
def test_map_peaks_at_a_local_change(backbone, which):
    # The random tiny net's stages 4-5 are 4x4 / 2x2 maps at 64 px whose random weights spread a
    # change over the whole image; localisation is checked on its shallow stages, and on all five
    # stages of a local stand-in backbone.
    net, stages = (backbone, [1, 2, 3]) if which == "random_shallow" else (PooledBackbone(), [1, 2, 3, 4, 5])
    ref = _smooth_image(0)
    query = _painted(ref, 0.8)  # square rows 36..43, cols 12..19
    amap = anomaly_map(net, query, ref, stages=stages, sigma=2.0)[0]
    row, col = divmod(int(amap.argmax()), SIZE)
    assert 36 - 4 <= row <= 43 + 4 and 12 - 4 <= col <= 19 + 4
    far = amap[:16, 40:].max()  # a corner far from the square
    assert float(amap.max()) > 2 * float(far)


def test_image_score_grows_with_the_change(backbone):
    ref = _smooth_image(2).repeat(4, 1, 1, 1)
    query = torch.cat([_painted(ref[:1], d) for d in (0.0, 0.15, 0.4, 0.8)])
    scores = image_scores(anomaly_map(backbone, query, ref, sigma=4.0), pool=8)
    assert float(scores[0]) < 1e-5
    assert torch.all(scores[1:] > scores[:-1])


def test_one_batched_backbone_call_of_2b():
    calls = []

    class Recording(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return [F.avg_pool2d(x, 2 ** k) for k in range(1, 6)]

    q, r = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    anomaly_map(Recording(), q, r, sigma=0.0)
    assert calls == [6]


def test_resized_difference_equals_difference_of_resized_concatenation():
    """The scorer differences at native resolution; bilinear resizing is linear, so this equals the
    paper's resize -> concatenate -> L2 formula."""
    g = torch.Generator().manual_seed(0)
    fq = [torch.rand(2, 5, 8, 8, generator=g), torch.rand(2, 70, 4, 4, generator=g)]
    fr = [torch.rand(2, 5, 8, 8, generator=g), torch.rand(2, 70, 4, 4, generator=g)]
    q_img, r_img = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    up = lambda t: F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=False)  # noqa: E731
    cq = torch.cat([up(t) for t in fq] + [q_img], dim=1)
    cr = torch.cat([up(t) for t in fr] + [r_img], dim=1)
    expected = (cq - cr).norm(dim=1)
    got = feature_distance(fq, fr, (16, 16), rgb=(q_img, r_img))
    assert torch.allclose(got, expected, atol=1e-5)
    # weights scale squared distances: weight 4 on a term == features scaled by 2
    cq_w = torch.cat([up(fq[0]) * 2, up(fq[1])], dim=1)
    cr_w = torch.cat([up(fr[0]) * 2, up(fr[1])], dim=1)
    assert torch.allclose(feature_distance(fq, fr, (16, 16), weights=[4.0, 1.0]), (cq_w - cr_w).norm(dim=1), atol=1e-5)


def test_rgb_only_is_the_pixel_colour_distance(backbone):
    q, r = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    amap = anomaly_map(backbone, q, r, stages=[], include_rgb=True, sigma=0.0)
    assert torch.allclose(amap, (q - r).norm(dim=1), atol=1e-6)


def test_options_from_config_and_validation(backbone):
    cfg = argparse.Namespace(score_stages=[1, 3], score_include_rgb=False, score_stage_weights=[],
                             score_sigma=0.0, image_score_pool=32)
    assert ScoreOptions.from_config(cfg) == ScoreOptions(score_stages=(1, 3), score_include_rgb=False,
                                                         score_sigma=0.0)
    q = torch.rand(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="score_stages"):
        anomaly_map(backbone, q, q, stages=[0, 6])
    with pytest.raises(ConfigError, match="score_stage_weights"):
        anomaly_map(backbone, q, q, stages=[1, 2], stage_weights=[1.0])
    with pytest.raises(ConfigError, match="score_sigma"):
        anomaly_map(backbone, q, q, sigma=-1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        anomaly_map(backbone, q, torch.rand(1, 3, 16, 16))


def test_smoothing_keeps_mass_and_is_off_for_sigma_zero():
    maps = torch.zeros(1, 41, 41)
    maps[0, 20, 20] = 1.0
    assert gaussian_blur(maps, 0.0) is maps
    blurred = gaussian_blur(maps, 2.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5
    assert float(blurred.max()) < 0.1 and int(blurred.argmax()) == 20 * 41 + 20
    # kernel has 2*round(4*sigma)+1 taps: support of an impulse is rows/cols 12..28
    support = (blurred[0] > 0).nonzero()
    assert support.min() == 12 and support.max() == 28
    k = gaussian_kernel1d(2.0, 8)
    assert k.numel() == 17 and abs(float(k.sum()) - 1.0) < 1e-6
    # random field: smoothing keeps the total roughly (reflect padding)
    field = torch.rand(2, 48, 48)
    assert abs(float(gaussian_blur(field, 4.0).sum() / field.sum()) - 1.0) < 0.02
    # maps smaller than the kernel still work (radius clipped)
    assert gaussian_blur(torch.rand(1, 5, 7), 4.0).shape == (1, 5, 7)


def test_image_scores_pool_and_max():
    maps = torch.zeros(2, 10, 12)
    maps[0, 2, 3] = 8.0
    maps[1] = 3.0
    assert torch.allclose(image_scores(maps, 1), torch.tensor([8.0, 3.0]))
    assert torch.allclose(image_scores(maps, 2), torch.tensor([2.0, 3.0]))       # 8 spread over a 2x2 window
    assert torch.allclose(image_scores(maps, 100), torch.tensor([8.0 / 120, 3.0]))  # kernel clipped to 10x12
    as_np = image_scores(maps.numpy(), 2)
    assert isinstance(as_np, np.ndarray) and np.allclose(as_np, [2.0, 3.0])
    with pytest.raises(ConfigError):
        image_scores(maps, 0)
