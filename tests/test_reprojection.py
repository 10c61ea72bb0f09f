"""The reprojected reference (nerf.reprojection, omniposead.reference): closed-form warps of a plane between two
cameras, the z-buffer test, the nearest views, and on a trained NeRF: a training view's reference is the view."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.camera import Intrinsics
from nerf.reprojection import (
    SourceView,
    background_on_rim,
    backproject,
    project,
    reprojected_reference,
    surface_depth,
    view_spread,
)
from omniposead.reference import nearest_views

H, W = 24, 32
K = Intrinsics.centred(30.0, W, H)


def camera_at(x: float, y: float, z: float) -> torch.Tensor:
    """A camera at (x, y, z) looking down -z (world axes = camera axes)."""
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([x, y, z])
    return c2w


def plane_image(c2w: torch.Tensor) -> torch.Tensor:
    """What `c2w` sees of the plane z = 0 painted with colour (0.5 + 0.2 X, 0.5 - 0.1 Y, 0.3): linear in X and Y,
    so bilinear sampling reproduces it exactly."""
    points = backproject(torch.full((H, W), float(c2w[2, 3])), c2w, K)
    return torch.stack((0.5 + 0.2 * points[..., 0], 0.5 - 0.1 * points[..., 1], torch.full((H, W), 0.3)), -1)


def test_projection_inverts_backprojection():
    c2w = camera_at(0.3, -0.2, 4.0)
    c2w[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])   # rolled 90 degrees
    depth = 3.0 + torch.rand(H, W)
    grid, z = project(backproject(depth, c2w, K), c2w, K, H, W)
    cols = (torch.arange(W) + 0.5) / W * 2 - 1
    rows = (torch.arange(H) + 0.5) / H * 2 - 1
    assert torch.allclose(z, depth, atol=1e-5)
    assert torch.allclose(grid[..., 0], cols[None].expand(H, W), atol=1e-5)
    assert torch.allclose(grid[..., 1], rows[:, None].expand(H, W), atol=1e-5)


def test_a_plane_seen_from_a_shifted_camera_is_warped_exactly():
    target, source = camera_at(0.0, 0.0, 4.0), camera_at(0.4, 0.1, 4.0)
    depth = torch.full((H, W), 4.0)
    nerf = torch.zeros(H, W, 3)                                   # a NeRF colour that would show if used
    view = SourceView(plane_image(source), torch.full((H, W), 4.0), source)
    reference, from_views = reprojected_reference(nerf, depth, target, [view], K, tolerance=0.01)
    truth = plane_image(target)
    # the shifted camera sees all but the strip its image does not cover (0.4 / 4 * 30 = 3 columns, 0.75 rows)
    inner = (slice(2, H - 2), slice(4, W - 4))
    assert from_views[inner].all()
    assert torch.allclose(reference[inner], truth[inner], atol=1e-5)
    assert not from_views[:, :2].any() and (reference[:, :2] == 0).all()     # outside its image: the NeRF's


def test_a_source_depth_smaller_than_its_image_warps_the_same():
    """reference_depth_downscale: the source's z-buffer at half size is looked up in the same normalised
    coordinates, so the plane warps as with the full-size depth, and a half-size blocker still blocks."""
    target, source = camera_at(0.0, 0.0, 4.0), camera_at(0.4, 0.1, 4.0)
    depth, nerf = torch.full((H, W), 4.0), torch.zeros(H, W, 3)
    full = reprojected_reference(nerf, depth, target, [SourceView(plane_image(source), torch.full((H, W), 4.0),
                                                                  source)], K, tolerance=0.01)
    half = reprojected_reference(nerf, depth, target, [SourceView(plane_image(source),
                                                                  torch.full((H // 2, W // 2), 4.0), source)],
                                 K, tolerance=0.01)
    assert torch.equal(full[1], half[1]) and torch.allclose(full[0], half[0], atol=1e-6)
    blocker = torch.full((H // 2, W // 2), 4.0)
    blocker[:, : W // 4] = 2.0                                    # the source's left half sees something nearer
    _, seen = reprojected_reference(nerf, depth, target, [SourceView(plane_image(source), blocker, source)],
                                            K, tolerance=0.01)
    grid, _ = project(backproject(depth, target, K), source, K, H, W)
    assert not seen[grid[..., 0] < -0.05].any() and seen[(grid[..., 0] > 0.05) & (grid.abs() < 0.9).all(-1)].all()


def test_an_occluded_point_keeps_the_nerf_colour_and_the_next_view_fills_it():
    target, near, far = camera_at(0.0, 0.0, 4.0), camera_at(0.0, 0.0, 4.0), camera_at(0.2, 0.0, 4.0)
    depth = torch.full((H, W), 4.0)
    nerf = torch.zeros(H, W, 3)
    blocked = SourceView(torch.ones(H, W, 3), torch.full((H, W), 2.0), near)   # something 2 units nearer
    reference, from_views = reprojected_reference(nerf, depth, target, [blocked], K, tolerance=0.01)
    assert not from_views.any() and (reference == 0).all()
    clear = SourceView(plane_image(far), torch.full((H, W), 4.0), far)
    reference, from_views = reprojected_reference(nerf, depth, target, [blocked, clear], K, tolerance=0.01)
    assert from_views[:, 2:].all() and not from_views[:, 0].any()   # 0.2 / 4 * 30 = 1.5 columns it cannot see
    assert torch.allclose(reference[:, 2:W - 1], plane_image(target)[:, 2:W - 1], atol=1e-5)


def test_view_spread_is_how_far_the_photographs_disagree():
    """Two exact warps of the same plane agree (spread 0, count 2); where one of them caught a highlight of +0.2 in
    each channel, each colour is 0.1 per channel from their mean: spread 0.3. A view that something nearer blocks
    does not count, and a point only one view sees has spread 0."""
    camera = camera_at(0.0, 0.0, 4.0)
    depth, plane = torch.full((H, W), 4.0), plane_image(camera)
    highlight = (slice(4, 11), slice(4, 11))
    shiny = plane.clone()
    shiny[highlight] += 0.2
    points = backproject(depth, camera, K)
    blocked = SourceView(torch.zeros(H, W, 3), torch.full((H, W), 2.0), camera)
    views = [SourceView(plane, depth, camera), SourceView(shiny, depth, camera), blocked]
    spread, count = view_spread(points, views, K, tolerance=0.01)
    assert (count == 2).all()
    expected = torch.zeros(H, W)
    expected[highlight] = 0.3
    assert torch.allclose(spread, expected, atol=1e-5)
    spread, count = view_spread(points, [views[1], blocked], K, tolerance=0.01)
    assert (count == 1).all() and (spread == 0).all()


def test_matching_the_query_takes_the_view_that_explains_it_but_keeps_what_no_view_shows():
    """reference_match = query: where one anomaly-free view shows what the query shows (a highlight), that view's
    colour is taken and the difference vanishes; a stain that no view shows stays whole in query - reference.
    Matching the NeRF's colour instead passes over the highlight."""
    camera = camera_at(0.0, 0.0, 4.0)                              # every view at the target: an exact warp
    depth, plane = torch.full((H, W), 4.0), plane_image(camera)
    highlight, stain = (slice(4, 11), slice(4, 11)), (slice(14, 19), slice(20, 27))
    shiny = plane.clone()
    shiny[highlight] += 0.2
    views = [SourceView(shiny, depth, camera), SourceView(plane, depth, camera)]
    query = shiny.clone()
    query[stain] -= 0.3
    by_nerf, _ = reprojected_reference(plane, depth, camera, views, K, tolerance=0.01)
    by_query, _ = reprojected_reference(plane, depth, camera, views, K, tolerance=0.01, match=query)
    assert torch.allclose(by_nerf, plane, atol=1e-6)
    assert torch.allclose(by_query[highlight], shiny[highlight], atol=1e-6)
    assert torch.allclose((query - by_query)[stain], torch.full((5, 7, 3), -0.3), atol=1e-6)
    untouched = torch.ones(H, W, dtype=torch.bool)
    untouched[highlight] = untouched[stain] = False
    assert torch.allclose(by_query[untouched], plane[untouched], atol=1e-6)
    # compared over 5 x 5 boxes, the highlight's inner pixels still come from the view that shows it
    windowed, _ = reprojected_reference(plane, depth, camera, views, K, tolerance=0.01, match=query, window=5)
    inner = (slice(6, 9), slice(6, 9))
    assert torch.allclose(windowed[inner], shiny[inner], atol=1e-6)
    assert torch.allclose((query - windowed)[stain], torch.full((5, 7, 3), -0.3), atol=1e-6)


def test_a_shifted_block_match_undoes_a_misregistered_warp_but_keeps_a_stain():
    """reference_match_shift: a warp one column off (the NeRF's depth misplaces it) leaves a difference on every
    pixel; trying the view moved by up to one pixel finds the move that explains the query exactly, while a stain
    that no move of the view shows still differs by about its whole colour."""
    camera = camera_at(0.0, 0.0, 4.0)
    depth, plane = torch.full((H, W), 4.0), plane_image(camera)
    off = plane.clone()
    off[:, 1:] = plane[:, :-1]                                     # the view's content one column to the right
    stain = (slice(10, 15), slice(12, 19))
    query = plane.clone()
    query[stain] -= 0.3
    views = [SourceView(off, depth, camera)]
    near_stain = torch.zeros(H, W, dtype=torch.bool)
    near_stain[8:17, 10:21] = True
    clear = ~near_stain
    clear[:, :3] = clear[:, W - 3:] = False                        # the moved view's edge columns
    unmoved, _ = reprojected_reference(plane, depth, camera, views, K, 0.01, match=query, window=5)
    moved, from_views = reprojected_reference(plane, depth, camera, views, K, 0.01, match=query, window=5, shift=1)
    assert (query - unmoved)[clear].abs().amax() > 0.02
    assert torch.allclose(moved[clear], query[clear], atol=1e-5) and from_views.all()
    assert ((query - moved)[stain].abs().sum(-1) > 0.75).all()


def test_the_nerf_colour_competes_where_every_warp_is_wrong():
    """reference_match_nerf: where the only view's warp shows something else (a part the NeRF's depth put in the
    wrong place), the NeRF's colour is the closer and is taken; elsewhere the view's."""
    camera = camera_at(0.0, 0.0, 4.0)
    depth, plane = torch.full((H, W), 4.0), plane_image(camera)
    wrong = plane.clone()
    wrong[4:10, 4:10] = torch.tensor([0.0, 0.0, 1.0])
    nerf = plane + 0.05                                            # a NeRF a little off everywhere
    views = [SourceView(wrong, depth, camera)]
    reference, from_views = reprojected_reference(nerf, depth, camera, views, K, 0.01, match=plane,
                                                  nerf_competes=True)
    assert torch.allclose(reference[4:10, 4:10], nerf[4:10, 4:10]) and not from_views[4:10, 4:10].any()
    assert torch.allclose(reference[12:, 12:], plane[12:, 12:]) and from_views[12:, 12:].all()


def test_fill_views_colour_only_what_the_nearest_views_cannot_see():
    """reference_fill_views: a next-nearest view fills the pixels that the nearest one does not see (here: where
    something nearer blocks it), and leaves the pixels the nearest view sees alone, even where it would match the
    query better there (more candidates everywhere would explain away defects too)."""
    camera = camera_at(0.0, 0.0, 4.0)
    depth, plane = torch.full((H, W), 4.0), plane_image(camera)
    blocked_depth = torch.full((H, W), 4.0)
    blocked_depth[:, :10] = 2.0                                   # the nearest view sees columns 10.. only
    nearest = SourceView(plane, blocked_depth, camera)
    stained = plane.clone()
    stained[:, 20:] -= 0.3                                       # the query's stain, over columns 20..
    nerf = torch.zeros(H, W, 3)
    fill = SourceView(stained, depth, camera)                     # a fill view that happens to show the stain
    without, seen = reprojected_reference(nerf, depth, camera, [nearest], K, 0.01, match=stained)
    assert (without[:, :10] == 0).all() and not seen[:, :10].any()
    filled, seen = reprojected_reference(nerf, depth, camera, [nearest], K, 0.01, match=stained, fill_views=[fill])
    assert seen.all() and torch.allclose(filled[:, :10], stained[:, :10])
    assert torch.allclose(filled[:, 10:], plane[:, 10:])         # the stain still differs: no fill there


def test_a_silhouette_band_takes_the_photographs_where_the_nerf_draws_the_object_short():
    """reference_silhouette_band: the NeRF (here and in the training view) sees the plane from column 10 on, the
    photographs from column 8 on. With a band of 2 the two columns it misses take the photograph's colour, where the
    query shows the plane; the background farther out, and a band pixel where the query is background, keep the
    NeRF's white; without a band the two columns are white."""
    camera = camera_at(0.0, 0.0, 4.0)
    plane, white = plane_image(camera), torch.ones(H, W, 3)
    nerf_depth = torch.full((H, W), 4.0)
    nerf_depth[:, :10] = 0.0
    photo = torch.where((torch.arange(W) >= 8)[None, :, None], plane, white)
    nerf = torch.where((torch.arange(W) >= 10)[None, :, None], plane, white)
    views = [SourceView(photo, nerf_depth, camera)]
    query = photo.clone()
    query[:12, 8:10] = 1.0                                        # here the query shows the background after all
    short, _ = reprojected_reference(nerf, nerf_depth, camera, views, K, 0.01, match=query)
    banded, from_views = reprojected_reference(nerf, nerf_depth, camera, views, K, 0.01, match=query, band=2)
    assert (short[:, 8:10] == 1).all()
    assert torch.allclose(banded[12:, 8:10], plane[12:, 8:10], atol=1e-5) and from_views[12:, 8:10].all()
    assert (banded[:12, 8:10] == 1).all() and not from_views[:12, 8:10].any()
    assert (banded[:, :8] == 1).all() and torch.allclose(banded[:, 10:], plane[:, 10:], atol=1e-5)


def test_the_background_wins_on_the_rim_where_the_nerf_draws_the_outline_too_wide():
    """reference_background_band: the photographs show the plane from column 12 on, the NeRF from column 10 on, with
    a dark fringe of its blur on columns 10-11 that no view sees (the view's own z-buffer starts at 12). With a band
    of 3 the white background wins on the fringe where the query is white, but not on column 12, where the query
    shows the plane, nor on a fringe pixel where the query is dark (a defect there stays a difference); without
    the band the fringe keeps the NeRF's dark guess."""
    camera = camera_at(0.0, 0.0, 4.0)
    plane, white = plane_image(camera), torch.ones(H, W, 3)
    nerf_depth, view_depth = torch.full((H, W), 4.0), torch.full((H, W), 4.0)
    nerf_depth[:, :10], view_depth[:, :12] = 0.0, 0.0
    photo = torch.where((torch.arange(W) >= 12)[None, :, None], plane, white)
    nerf = torch.where((torch.arange(W) >= 12)[None, :, None], plane, torch.full((H, W, 3), 0.1))
    nerf[:, :10] = 1.0
    query = photo.clone()
    query[:4, 10:12] = 0.05                                       # a dark mark on the fringe
    views = [SourceView(photo, view_depth, camera)]
    plain, seen = reprojected_reference(nerf, nerf_depth, camera, views, K, 0.01, match=query)
    assert torch.allclose(plain[:, 10:12], torch.tensor(0.1)) and not seen[:, 10:12].any()
    banded, taken = background_on_rim(plain, nerf_depth, query, 3, 1.0)
    assert (banded[4:, 10:12] == 1).all() and taken[4:, 10:12].all()
    assert torch.allclose(banded[:4, 10:12], torch.tensor(0.1)) and not taken[:4, 10:12].any()
    assert torch.allclose(banded[:, 12:], plane[:, 12:], atol=1e-5) and not taken[:, 12:].any()
    assert torch.equal(banded[:, :10], plain[:, :10])
    narrow, _ = background_on_rim(plain, nerf_depth, query, 1, 1.0)   # column 11 is 2 pixels in: out of a band of 1
    assert (narrow[4:, 10] == 1).all() and torch.allclose(narrow[:, 11], torch.tensor(0.1))


def test_the_background_keeps_the_nerf_colour():
    depth, acc = torch.full((H, W), 4.0), torch.ones(H, W)
    acc[:, :10] = 0.1
    surface = surface_depth(depth * acc, acc)
    assert (surface[:, :10] == 0).all() and torch.allclose(surface[:, 10:], depth[:, 10:])
    view = SourceView(torch.ones(H, W, 3), depth, camera_at(0, 0, 4))
    reference, _ = reprojected_reference(torch.zeros(H, W, 3), surface, camera_at(0, 0, 4), [view], K, 0.01)
    assert (reference[:, :10] == 0).all() and (reference[:, 10:] == 1).all()


def test_nearest_views_are_ordered_by_the_direction_of_their_camera():
    angles = np.radians([0.0, 90.0, 10.0, 180.0, 45.0])
    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[:, :3, 3] = np.stack([4 * np.cos(angles), 4 * np.sin(angles), np.zeros(5)], 1)
    query = np.eye(4)
    query[:3, 3] = [8 * np.cos(np.radians(20)), 8 * np.sin(np.radians(20)), 0.0]   # farther away: same direction
    assert nearest_views(query, np.arange(5), poses, 3) == [2, 0, 4]
    assert nearest_views(query, np.array([1, 3, 4]), poses, 2) == [4, 1]


@pytest.mark.slow
def test_a_training_views_reprojected_reference_is_that_view_where_the_nerf_sees_a_surface(tmp_path):
    """On a trained NeRF, a training view's reference with one view warps that view (the nearest: itself) onto
    itself: every pixel the NeRF sees as solid is the photograph's own pixel, the rest the NeRF's render."""
    from mad.options import SynthOptions
    from mad.synth.generate import generate_class
    from omniposead.config import parse_config
    from omniposead.pipeline import class_train_views, train_class
    from omniposead.reference import ReferenceMaker
    from tests.test_pipeline import NERF_ARGS

    generate_class(tmp_path / "synthetic", "toy", SynthOptions(synth_seed=3, synth_size=32, synth_n_train=24,
                                                               synth_n_test_good=1, synth_n_test_defect=1,
                                                               synth_workers=1), progress=False)
    cfg = parse_config(["--data_root", str(tmp_path / "synthetic"), "--class_name", "toy", "--ckpt_root",
                        str(tmp_path / "ckpts"), *NERF_ARGS, "--n_iters", "200", "--reference", "reprojected",
                        "--reference_views", "1"])
    train_class(cfg, torch.device("cpu"), progress=False)
    from omniposead.pipeline import load_class

    assets = load_class(cfg, torch.device("cpu"), train=False, progress=False, poses=False)
    assert isinstance(assets.reference, ReferenceMaker)
    views = class_train_views(cfg, assets.class_dir)
    index = int(assets.reference.candidates[3])
    reference = assets.reference(views.poses[index])
    nerf = assets.renderer.render_buffers(torch.as_tensor(views.poses[index]), views.height, views.width,
                                          views.intrinsics)
    solid = surface_depth(nerf["depth"], nerf["acc"]) > 0
    photo = torch.as_tensor(views.images[index])
    assert solid.float().mean() > 0.1
    assert torch.allclose(reference[solid], photo[solid], atol=1e-5)
    assert torch.allclose(reference[~solid], nerf["rgb"][~solid], atol=1e-6)
    # matching the query among two views (itself and the next nearest) takes the photograph's own pixels; the
    # query is required then
    import dataclasses
    by_query = dataclasses.replace(assets.reference, score=dataclasses.replace(
        cfg.score, reference_views=2, reference_match="query", reference_match_window=3))
    reference, unseen = by_query.with_unseen(views.poses[index], photo)
    assert torch.allclose(reference[solid], photo[solid], atol=1e-5)
    assert not unseen.any()                                   # the view itself sees every solid pixel
    with pytest.raises(ValueError, match="query image"):
        by_query(views.poses[index])
    # reference_spread_limit: where the two photographs disagree, the pixel counts as unseen (the reference stays
    # the same); which pixels depends on the photographs only, never on the query
    strict = dataclasses.replace(by_query, score=dataclasses.replace(by_query.score, reference_spread_limit=0.05))
    same, disputed = strict.with_unseen(views.poses[index], photo)
    _, disputed_other = strict.with_unseen(views.poses[index], 1.0 - photo)
    assert torch.equal(same, reference) and disputed.any() and not (disputed & ~solid).any()
    assert torch.equal(disputed, disputed_other)
    lenient = dataclasses.replace(by_query, score=dataclasses.replace(by_query.score, reference_spread_limit=3.0))
    assert not lenient.with_unseen(views.poses[index], photo)[1].any()   # a spread never exceeds 3
    # the NeRF's render with the background band: the render where the query is not white or off the rim; on the
    # rim, white wherever the query is whiter than the render
    rim = dataclasses.replace(assets.reference, score=dataclasses.replace(cfg.score, reference="nerf",
                                                                          reference_background_band=2))
    banded, unseen = rim.with_unseen(views.poses[index], photo)
    whitened = (banded != nerf["rgb"]).any(-1)
    assert unseen is None and whitened.any() and (banded[whitened] == 1).all()
    closer = (1 - photo).abs().sum(-1) < (nerf["rgb"] - photo).abs().sum(-1)
    near_background = torch.nn.functional.max_pool2d((~solid).float()[None, None], 5, stride=1, padding=2)[0, 0] > 0
    assert torch.equal(whitened, closer & solid & near_background)
    with pytest.raises(ValueError, match="query image"):
        rim(views.poses[index])


def test_the_unseen_pixels_saved_with_a_result_read_back_exactly(tmp_path):
    """The pipeline saves the reprojected reference's unseen pixels beside its reference (<name>_unseen.png); the
    decomposition's pipeline row reads both back, the mask exactly; without them every one, unseen is None."""
    from anomaly.results import save_result
    from omniposead.decomposition import pipeline_references

    rng = np.random.default_rng(0)
    record = {"image_score": 1.0, "label": 0, "defect_type": "good", "backbone": "b"}
    masks = [rng.random((H, W)) < 0.3 for _ in range(2)]
    references = [rng.random((H, W, 3)).astype(np.float32) for _ in range(2)]
    for i, (mask, reference) in enumerate(zip(masks, references, strict=True)):
        save_result(tmp_path, f"good/{i}", np.zeros((H, W)), record, reference=reference, unseen=mask)
    read = pipeline_references(tmp_path, ["good/0", "good/1"], white_bkgd=True)
    assert read.unseen.dtype == bool and np.array_equal(read.unseen, np.stack(masks))
    assert np.allclose(read.images, np.stack(references), atol=0.5 / 255 + 1e-6)
    save_result(tmp_path, "good/2", np.zeros((H, W)), record, reference=references[0])
    assert pipeline_references(tmp_path, ["good/0", "good/2"], white_bkgd=True).unseen is None


def striped_plane(c2w: torch.Tensor) -> torch.Tensor:
    """What `c2w` (looking down -z from height 4) sees of the plane z = 0 painted with fine stripes: a warp with the
    wrong depth misplaces them."""
    points = backproject(torch.full((H, W), float(c2w[2, 3])), c2w, K)
    return torch.stack((0.5 + 0.4 * torch.sin(4.0 * points[..., 0]), 0.5 + 0.4 * torch.cos(3.0 * points[..., 1]),
                        torch.full((H, W), 0.3)), -1)


def test_the_depth_at_which_the_photographs_agree_replaces_a_wrong_nerf_depth():
    """reference_depth_search: the target's depth is 5 % too far; two views from either side then show the stripes
    shifted opposite ways, and the depth at which their warps agree is the plane's. Only the photographs are
    compared: the query plays no part."""
    from nerf.reprojection import consistent_depth

    target = camera_at(0.0, 0.0, 4.0)
    views = [SourceView(striped_plane(c), torch.full((H, W), 4.0), c)
             for c in (camera_at(1.0, 0.0, 4.0), camera_at(-1.0, 0.2, 4.0))]
    wrong = torch.full((H, W), 4.0 / 0.95)                       # 4 steps of 1.25 % away from the plane's 4.0
    wrong[:, :3] = 0.0                                            # background stays background
    refined = consistent_depth(wrong, target, views, K, tolerance=0.06, steps=6, step=0.0125, window=3)
    inner = (slice(3, H - 3), slice(10, W - 10))
    assert torch.allclose(refined[inner], torch.full_like(refined[inner], 4.0), atol=1e-4)
    assert (refined[:, :3] == 0).all()
    reference, _ = reprojected_reference(torch.zeros(H, W, 3), refined, target, views, K, tolerance=0.06)
    misplaced, _ = reprojected_reference(torch.zeros(H, W, 3), wrong, target, views, K, tolerance=0.06)
    truth = striped_plane(target)
    assert (reference[inner] - truth[inner]).abs().mean() < 0.3 * (misplaced[inner] - truth[inner]).abs().mean()
    # where the photographs have no texture, every depth agrees equally: the NeRF's is kept
    flat = [SourceView(torch.full((H, W, 3), 0.5), v.depth, v.c2w) for v in views]
    assert torch.equal(consistent_depth(wrong, target, flat, K, tolerance=0.06, steps=6, step=0.0125), wrong)
