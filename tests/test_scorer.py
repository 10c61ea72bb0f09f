"""Feature-difference anomaly maps: zero for identical pairs, peaked at a local change, pooled image scores."""
import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomaly.options import ScoreOptions
from anomaly.scorer import (
    anomaly_map,
    feature_distance,
    gaussian_blur,
    gaussian_kernel1d,
    image_scores,
    protocol_size,
    unseen_trust,
)
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
    diffs = [a - b for a, b in zip(fq, fr, strict=True)]
    got = feature_distance([*diffs, q_img - r_img], (16, 16))
    assert torch.allclose(got, expected, atol=1e-5)
    # weights scale squared distances: weight 4 on a term == features scaled by 2
    cq_w = torch.cat([up(fq[0]) * 2, up(fq[1])], dim=1)
    cr_w = torch.cat([up(fr[0]) * 2, up(fr[1])], dim=1)
    assert torch.allclose(feature_distance(diffs, (16, 16), weights=[4.0, 1.0]), (cq_w - cr_w).norm(dim=1), atol=1e-5)


@pytest.mark.parametrize("size", [(16, 16), (37, 53), (5, 3), (400, 300)])
def test_the_resized_norm_is_the_norm_of_the_resized_volume(size):
    """feature_distance never makes the resized [B,C,H,W] volume; it must equal the norm of that volume for up-
    and downsizing, odd sizes and a term already at the map's size, with more channels than one chunk."""
    g = torch.Generator().manual_seed(1)
    diffs = [torch.randn(2, 70, 6, 9, generator=g), torch.randn(2, 4, 1, 1, generator=g),
             torch.randn(2, 3, *size, generator=g), torch.randn(2, 5, 41, 11, generator=g)]
    volume = torch.cat([F.interpolate(d, size=size, mode="bilinear", align_corners=False) for d in diffs], dim=1)
    expected = volume.norm(dim=1)
    got = feature_distance(diffs, size)
    assert got.shape == (2, *size)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_rgb_only_is_the_pixel_colour_distance(backbone):
    q, r = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    amap = anomaly_map(backbone, q, r, stages=[], include_rgb=True, sigma=0.0)
    assert torch.allclose(amap, (q - r).norm(dim=1), atol=1e-6)


def test_options_from_config_and_validation(backbone):
    cfg = argparse.Namespace(score_protocol="paper", score_normalization="none", residual_fallback_views=8,
                             residual_views=0, reference="nerf", reference_views=3, reference_tolerance=0.01,
                             reference_depth_downscale=1, reference_match="nerf", reference_match_window=1,
                             reference_match_shift=0, reference_fill_views=0, reference_match_nerf=False,
                             reference_silhouette_band=0, reference_background_band=0,
                             reference_unseen_power=0.0, reference_depth_search=0, reference_depth_step=0.0025,
                             reference_spread_limit=0.0,
                             score_stages=[1, 3], score_include_rgb=False,
                             score_stage_weights=[], score_relight_sigma=0.0, score_colour_gain=False, score_sigma=0.0,
                             image_score_pool=32)
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
    # maps smaller than the kernel are mirrored repeatedly, as scipy does
    assert gaussian_blur(torch.rand(1, 5, 7), 4.0).shape == (1, 5, 7)


@pytest.mark.parametrize("shape, sigma", [((2, 40, 50), 4.0), ((1, 5, 7), 4.0), ((1, 96, 96), 1.5), ((3, 3, 2), 0.7)])
def test_blur_equals_scipy_gaussian_filter_reflect(shape, sigma):
    """The authors' script smooths with scipy.ndimage.gaussian_filter(sigma=4): mode='reflect', truncate=4."""
    from scipy.ndimage import gaussian_filter

    maps = np.random.default_rng(0).random(shape).astype(np.float32)
    expected = np.stack([gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in maps])
    got = gaussian_blur(torch.from_numpy(maps), sigma).numpy()
    assert np.allclose(got, expected, atol=1e-6, rtol=1e-5)


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


class SignFlipBackbone(torch.nn.Module):
    """Five stages of [B,1,1,2]: (mean of the red channel) * (+1, -1). Squaring before resizing gives a
    constant map; resizing before squaring does not (it crosses zero between the two cells)."""

    def forward(self, x):
        red = x[:, :1].mean(dim=(2, 3), keepdim=True)
        return [red * torch.tensor([1.0, -1.0]).view(1, 1, 1, 2)] * 5


def test_official_protocol_against_a_hand_computed_fixture():
    # constant images a, b of 300x400: the script resizes to 224 x int(224 * 400 / 300) = 224 x 298
    a, b = torch.tensor([0.8, 0.5, 0.2]), torch.tensor([0.6, 0.5, 0.4])
    query, reference = a.view(1, 3, 1, 1).expand(1, 3, 300, 400), b.view(1, 3, 1, 1).expand(1, 3, 300, 400)
    opts = ScoreOptions(score_protocol="official", score_stages=(5,), score_sigma=1.0, image_score_pool=7)
    amap = anomaly_map(SignFlipBackbone(), query, reference, opts)
    # stages 1-4 only (the stage settings are the script's, not score_stages): 4 * (0.8 - 0.6)^2 = 0.16;
    # RGB on ImageNet-normalised values: (0.2 / 0.229)^2 + 0 + (0.2 / 0.225)^2; no square root
    expected = 4 * 0.2 ** 2 + (0.2 / 0.229) ** 2 + (0.2 / 0.225) ** 2
    assert amap.shape == (1, 224, 298)
    assert torch.allclose(amap, torch.full_like(amap, expected), rtol=1e-5)
    assert protocol_size(opts, 400, 300) == (298, 224) and protocol_size(ScoreOptions(), 300, 400) == (300, 400)


def test_official_test_set_steps_min_max_nearest_masks_and_plain_max():
    from evaluation.class_evaluation import ScoredSet

    maps = [np.array([[1.0, 3.0, 2.0], [1.0, 1.0, 1.0]], np.float32), np.full((2, 3), 5.0, np.float32)]
    mask = np.zeros((4, 6), bool)
    mask[1, 3] = True   # PIL nearest from 4x6 to 2x3 samples rows 1, 3 and columns 1, 3, 5
    mask[0, 0] = True   # not sampled
    scored = ScoredSet.from_maps(maps, [mask, np.zeros((4, 6), bool)], "official", image_score_pool=2)
    assert scored.minmax == (1.0, 5.0) and scored.pool == 1
    assert np.allclose(scored.maps[0], [[0.0, 0.5, 0.25], [0.0, 0.0, 0.0]]) and np.allclose(scored.maps[1], 1.0)
    assert np.allclose(scored.scores, [0.5, 1.0])
    assert scored.masks[0].tolist() == [[False, True, False], [False, False, False]]
    paper = ScoredSet.from_maps(maps, [mask, mask], "paper", image_score_pool=2)
    assert paper.minmax is None and np.allclose(paper.scores, [1.75, 5.0]) and paper.masks[0] is mask


def test_residual_normalisation_gives_each_term_unit_energy_on_the_fitted_residual():
    from anomaly.residual import ResidualModel

    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 20.0, 3.0]).view(1, 3, 1, 1)
    offset = torch.tensor([1.0, -2.0, 0.0]).view(1, 3, 1, 1)
    stage = torch.randn(4, 3, 8, 8, generator=g) * scale + offset   # a stage with very unequal channels
    rgb = torch.randn(4, 3, 16, 16, generator=g) * 0.01             # the tiny RGB residual of [0,1] images
    model = ResidualModel.fit([[stage[:2], rgb[:2]], [stage[2:], rgb[2:]]])   # two batches of views
    assert torch.allclose(model.mean[0], stage.transpose(0, 1).reshape(3, -1).mean(1), atol=1e-5)
    assert torch.allclose(model.std[0], stage.transpose(0, 1).reshape(3, -1).std(1, unbiased=False), rtol=1e-4)
    z_stage, z_rgb = model.normalise([stage, rgb])
    for z in (z_stage, z_rgb):  # mean over pixels of sum_c z^2 == 1 on the data it was fitted on
        assert abs(float(z.square().sum(1).mean()) - 1.0) < 1e-4
    # the RGB term now counts as much as the stage: a 0.1 colour change is 10 normal residuals
    z_change = model.normalise([stage[:1] * 0 + offset, torch.full((1, 3, 16, 16), 0.1)])[1]
    assert float(z_change.square().sum(1).mean()) > 30
    with pytest.raises(ValueError, match="other scorer options"):
        model.normalise([stage])


def test_the_residual_cache_keeps_the_models_fitted_last_and_reads_a_one_model_file(tmp_path):
    """Two settings used in turn on one class find their own fit in the one file; a fifth fit drops the oldest; a
    refit under the same fingerprint replaces its model; a file of one model (older versions) still loads."""
    from anomaly.residual import RESIDUAL_SLOTS, ResidualModel, load_residual_model, stored_states
    from common.io import save_torch

    def model(k: int) -> ResidualModel:
        return ResidualModel([torch.full((3,), float(k))], [torch.ones(3)], fingerprint=f"fp{k}")

    path = tmp_path / "residual.pt"
    assert load_residual_model(path, "fp0") is None
    for k in range(RESIDUAL_SLOTS + 1):
        model(k).save(path)
    assert load_residual_model(path, "fp0") is None                          # the oldest of five dropped
    for k in range(1, RESIDUAL_SLOTS + 1):
        assert float(load_residual_model(path, f"fp{k}").mean[0][0]) == k
    refit = model(2)
    refit.mean = [torch.full((3,), 7.0)]
    refit.save(path)
    assert [s["fingerprint"] for s in stored_states(path)] == ["fp2", "fp4", "fp3", "fp1"]
    assert float(load_residual_model(path, "fp2").mean[0][0]) == 7.0
    save_torch(path, model(9).state())                                          # one model, as version 1 wrote
    assert float(load_residual_model(path, "fp9").mean[0][0]) == 9 and load_residual_model(path, "fp2") is None
    path.write_bytes(b"not a checkpoint")
    assert load_residual_model(path, "fp9") is None


def test_residual_views_are_the_trainers_heldout_split_or_a_flagged_fallback():
    from nerf.trainer import heldout_view_indices

    assert heldout_view_indices(20, 8, fallback_views=5) == ([0, 8, 16], False)  # nerf.trainer.split_views
    assert heldout_view_indices(20, 0, fallback_views=5) == ([0, 5, 10, 14, 19], True)
    assert heldout_view_indices(3, 0, fallback_views=8) == ([0, 1, 2], True)


def test_a_cap_on_views_keeps_the_first_the_last_and_even_spacing():
    from nerf.trainer import evenly_chosen

    held = list(range(0, 200, 8))                                     # 25 held-out views of 200
    assert evenly_chosen(held, 4) == [0, 64, 128, 192]
    assert evenly_chosen(held, 0) == held and evenly_chosen(held, 30) == held
    assert evenly_chosen([3, 9], 1) == [3]


def test_the_reprojected_references_every_option_is_in_the_scorer_record():
    """The record that saved maps and the residual model's fingerprint carry: every reference_* option for the
    reprojected reference (so a new one cannot be forgotten), nothing for the NeRF's render but the background
    band, which changes it too."""
    from anomaly.options import ScoreOptions

    assert ScoreOptions().reference_record() == {}
    assert ScoreOptions(reference_background_band=1).reference_record() == {"reference_background_band": 1}
    record = ScoreOptions(reference="reprojected", reference_depth_downscale=2).scorer_record()
    assert record["reference_depth_downscale"] == 2 and record["reference_views"] == 3
    assert ScoreOptions(reference="reprojected").reference_record() != \
        ScoreOptions(reference="reprojected", reference_depth_downscale=2).reference_record()


def test_the_map_is_weighed_down_where_no_training_view_sees_the_surface(backbone):
    """reference_unseen_power: the trust is 1 far from unseen pixels, 0 inside a wide unseen block, (1 - the
    Gaussian share)^power between; the map is the plain map times it, and unchanged with power 0 or no mask."""
    unseen = torch.zeros(1, 40, 40, dtype=torch.bool)
    unseen[0, 10:30, 2:22] = True
    trust = unseen_trust(unseen, 2.0, 1.0)
    assert trust[0, 20, 12] < 1e-3 and trust[0, 20, 38] > 1 - 1e-3 and trust[0, 2, 35] > 1 - 1e-3
    assert 0.4 < trust[0, 20, 22] < 0.6                                 # the block's edge: half of the share
    assert torch.allclose(unseen_trust(unseen, 2.0, 2.0), trust ** 2)
    q, r = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40)
    opts = ScoreOptions(score_stages=(1,), score_sigma=1.0, reference="reprojected", reference_unseen_power=2.0)
    plain = anomaly_map(backbone, q, r, opts)
    weighed = anomaly_map(backbone, q, r, opts, unseen=unseen)
    assert torch.allclose(weighed, plain * unseen_trust(unseen, 1.0, 2.0), atol=1e-6)
    assert weighed[0, 20, 12] < 1e-2 * plain[0, 20, 12] and torch.allclose(weighed[0, :, 35:], plain[0, :, 35:])
    off = ScoreOptions(score_stages=(1,), score_sigma=1.0, reference="reprojected")
    assert torch.equal(anomaly_map(backbone, q, r, off, unseen=unseen), anomaly_map(backbone, q, r, off))


def test_relighting_takes_out_a_shading_ramp_and_keeps_a_small_defect():
    """A reference lit by a ramp (0.7 to 1.3 across the image, as a flash's falloff or another exposure would
    light it) relit to the query comes within 3 % of the query's colours away from the borders; a dark blot
    much smaller than the blur keeps over 80 % of its contrast against the relit reference; a black backdrop
    stays black; sigma 0 leaves the reference as it is."""
    from anomaly.scorer import relit_reference

    size = 128
    query = F.interpolate(torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(3)) * 0.4 + 0.3,
                          size=(size, size), mode="bilinear", align_corners=False)
    query[:, :, :, :16] = 0.0                                              # a black backdrop strip
    ramp = torch.linspace(0.7, 1.3, size).view(1, 1, 1, size)
    reference = (query * ramp).clamp(0, 1)
    defect = query.clone()
    defect[:, :, 60:66, 70:76] *= 0.5                                      # a 6x6 dark blot
    relit = relit_reference(reference, query, 16.0)
    inner = (slice(None), slice(None), slice(32, 96), slice(40, 96))
    assert (relit - query)[inner].abs().max() < 0.03 < (reference - query)[inner].abs().max()
    assert relit[:, :, :, :12].abs().max() == 0
    blot = (slice(None), slice(None), slice(61, 65), slice(71, 75))
    contrast = (query - defect)[blot].mean()
    assert (relit_reference(reference, defect, 16.0) - defect)[blot].mean() > 0.8 * contrast
    assert torch.equal(relit_reference(reference, query, 0.0), reference)


def test_relighting_is_on_the_scorer_and_in_its_record(backbone):
    """score_relight_sigma reaches the comparison (a ramp-lit reference of the query scores far lower with it)
    and the record of every map (so maps made without it are made again); off, the record is as before."""
    query = _smooth_image(1)
    reference = (query * torch.linspace(0.6, 1.2, SIZE).view(1, 1, 1, SIZE)).clamp(0, 1)
    plain = anomaly_map(backbone, query, reference, ScoreOptions(score_sigma=0))
    relit = anomaly_map(backbone, query, reference, ScoreOptions(score_sigma=0, score_relight_sigma=8.0))
    assert relit.mean() < 0.5 * plain.mean()
    assert ScoreOptions(score_relight_sigma=8.0).scorer_record()["score_relight_sigma"] == 8.0
    assert "score_relight_sigma" not in ScoreOptions().scorer_record()
    with pytest.raises(ConfigError, match="score_relight_sigma must be >= 0"):
        ScoreOptions(score_relight_sigma=-1.0).validated()


def test_the_colour_gain_undoes_a_white_balance_and_keeps_a_small_defect():
    """A reference whose channels are 0.8 / 1.0 / 1.25 times the query's (another white balance) matched to the
    query is the query again; a 6x6 dark blot in the query moves the gains under 1 % and keeps its contrast; a
    black backdrop stays black. On the scorer, the gain lowers the map of the recoloured reference to a fraction,
    and the record says so (off, it is as before)."""
    from anomaly.scorer import colour_matched_reference

    size = 96
    query = F.interpolate(torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(4)) * 0.4 + 0.3,
                          size=(size, size), mode="bilinear", align_corners=False)
    query[:, :, :, :16] = 0.0
    balance = torch.tensor([0.8, 1.0, 1.25]).view(1, 3, 1, 1)
    reference = query * balance
    torch.testing.assert_close(colour_matched_reference(reference, query), query, atol=1e-5, rtol=0)
    defect = query.clone()
    defect[:, :, 40:46, 50:56] *= 0.5
    matched = colour_matched_reference(reference, defect)
    gains = (matched / reference.clamp_min(1e-6))[:, :, 10:20, 60:70].mean((-2, -1)) * balance.view(1, 3)
    assert ((gains - 1).abs() < 0.01).all()
    blot = (slice(None), slice(None), slice(41, 45), slice(51, 55))
    assert (matched - defect)[blot].mean() > 0.95 * (query - defect)[blot].mean()
    assert matched[:, :, :, :16].abs().max() == 0


def test_the_colour_gain_is_on_the_scorer_and_in_its_record(backbone):
    query = _smooth_image(2)
    reference = (query * torch.tensor([0.8, 1.0, 1.2]).view(1, 3, 1, 1)).clamp(0, 1)
    plain = anomaly_map(backbone, query, reference, ScoreOptions(score_sigma=0))
    matched = anomaly_map(backbone, query, reference, ScoreOptions(score_sigma=0, score_colour_gain=True))
    assert matched.mean() < 0.3 * plain.mean()
    assert ScoreOptions(score_colour_gain=True).scorer_record()["score_colour_gain"] is True
    assert "score_colour_gain" not in ScoreOptions().scorer_record()
