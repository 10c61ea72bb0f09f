"""Occupancy grid (nerf/occupancy.py) and grid-skipping rendering, against closed forms and plain sampling."""
import math

import pytest
import torch
from torch import nn

from common.camera import Intrinsics
from common.errors import PadError
from nerf.occupancy import OccupancyGrid, binarize, cell_index, cell_points, density_threshold
from nerf.options import NeRFOptions
from nerf.rays import image_rays, ray_box_interval
from nerf.renderer import NeRFRenderer

BALL_RADIUS, BALL_DENSITY = 0.5, 20.0


class BallField(nn.Module):
    """A known density field: a ball of radius 0.5 (density 20) at the origin, coloured by position; raw
    density -1 elsewhere (zero after the ReLU). Same interface as nerf.field.NeRFField."""

    use_viewdirs = True

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))      # unused: gives the renderer a device (render_image)

    def density(self, pts):
        return torch.where(pts.norm(dim=-1) < BALL_RADIUS, BALL_DENSITY, -1.0)

    def forward(self, pts, viewdirs=None):
        rgb = 0.5 + 0.4 * torch.tanh(pts + 0.1 * viewdirs[..., None, :])
        return rgb, self.density(pts)


def ball_renderer(grid: bool, n_importance: int = 0, resolution: int = 16, samples: int = 48,
                  early_stop: float = 0.0, render_samples: int = 0, march: int = 0,
                  render_early_stop: float = 0.0) -> NeRFRenderer:
    opts = NeRFOptions(render_early_stop=render_early_stop,
                       netdepth=1, netwidth=4, netdepth_fine=1, netwidth_fine=4, skips=(), multires=1,
                       multires_views=1, N_samples=samples, N_importance=n_importance, occupancy_grid=grid,
                       occupancy_resolution=resolution, occupancy_bound=1.0, occupancy_early_stop=early_stop,
                       render_samples=render_samples, occupancy_samples=march)
    renderer = NeRFRenderer(opts)
    renderer.coarse = BallField()
    if renderer.fine is not None:
        renderer.fine = BallField()
    return renderer.eval()


def ball_cells(resolution: int, bound: float = 1.0) -> torch.Tensor:
    """[res^3] bool: the cells whose box intersects the ball (closed form: distance from the origin to the box)."""
    edges = torch.linspace(-bound, bound, resolution + 1)
    lo, hi = edges[:-1], edges[1:]
    nearest = torch.where(hi < 0, hi, torch.where(lo > 0, lo, torch.zeros_like(lo)))    # per-axis closest coordinate
    d2 = nearest[:, None, None] ** 2 + nearest[None, :, None] ** 2 + nearest[None, None, :] ** 2
    return (d2 < BALL_RADIUS ** 2).reshape(-1)


def set_occupied(renderer: NeRFRenderer, occupied: torch.Tensor) -> None:
    """Give the renderer's grid a known occupancy and make it active (as after an update)."""
    renderer.grid.occupied.copy_(occupied)
    renderer.grid.updates = 1


def camera_rays(size: int = 12):
    c2w = torch.eye(4)
    c2w[2, 3] = 4.0
    return image_rays(c2w, size, size, Intrinsics.centred(size / 0.5, size, size))   # field of view ~ +-1 at the origin


def test_cell_index_and_points_closed_form():
    flat, inside = cell_index(torch.tensor([[-1.0, -1.0, -1.0], [0.99, -0.99, 0.01], [0.0, 0.0, 1.2]]), 1.0, 4)
    # cell width 0.5: (-1,-1,-1) -> (0,0,0); (0.99,-0.99,0.01) -> (3,0,2) -> 3*16 + 0*4 + 2 = 50
    assert flat[:2].tolist() == [0, 50] and inside.tolist() == [True, True, False]
    centres = cell_points(torch.tensor([0, 50]), torch.full((2, 3), 0.5), 1.0, 4)
    torch.testing.assert_close(centres, torch.tensor([[-0.75, -0.75, -0.75], [0.75, -0.75, 0.25]]))
    back, _ = cell_index(centres, 1.0, 4)
    assert back.tolist() == [0, 50]


def test_threshold_and_binarize():
    assert math.isclose(1 - math.exp(-density_threshold(0.01, 0.1) * 0.1), 0.01)
    values = torch.tensor([0.0, 0.5, 2.0, 10.0])
    assert binarize(values, 1.0).tolist() == [False, False, True, True]     # threshold 1 < mean 4.17
    assert binarize(values * 0.01, 1.0).tolist() == [False, False, False, True]   # young field: mean 0.042 rules
    assert not binarize(torch.zeros(5), 1.0).any()


def test_empty_grid_renders_background_without_evaluating():
    renderer = ball_renderer(grid=True, n_importance=8)
    set_occupied(renderer, torch.zeros(16 ** 3, dtype=torch.bool))
    rays_o, rays_d = camera_rays()
    out = renderer.render_rays(rays_o, rays_d)
    torch.testing.assert_close(out["rgb"], torch.ones_like(out["rgb"]))
    assert (out["acc"] == 0).all() and (out["samples"] == 0).all()


@pytest.mark.parametrize("n_importance", [0, 16])
def test_grid_of_the_object_renders_like_plain_sampling(n_importance):
    plain = ball_renderer(grid=False, n_importance=n_importance)
    skipping = ball_renderer(grid=True, n_importance=n_importance)
    set_occupied(skipping, ball_cells(16))
    rays_o, rays_d = camera_rays()
    ref, out = plain.render_rays(rays_o, rays_d), skipping.render_rays(rays_o, rays_d)
    assert ref["acc"].max() > 0.99 and ref["acc"].min() < 0.01          # the ball is in view, and so is empty space
    for key in ("rgb", "rgb_coarse", "depth", "acc"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-5)
    assert out["samples"].mean() < 0.3 * ref["samples"].mean()       # most samples skipped
    # early termination (while gradients are on) drops the samples behind the ball's front (transmittance
    # < 1e-4): fewer evaluations, the same image up to that transmittance; none without gradients (that is
    # render_early_stop's, off here)
    terminating = ball_renderer(grid=True, n_importance=n_importance, early_stop=1e-4)
    set_occupied(terminating, ball_cells(16))
    ert = terminating.render_rays(rays_o, rays_d)
    torch.testing.assert_close(ert["rgb"], ref["rgb"], rtol=0, atol=2e-4)
    assert ert["samples"].sum() < 0.9 * out["samples"].sum()
    with torch.no_grad():
        assert torch.equal(terminating.render_rays(rays_o, rays_d)["samples"], out["samples"])
    # a grid rebuilt from the density alone (a few points per cell) may miss slivers of boundary cells:
    # nearly the same image, differences only at the silhouette
    skipping.fill_grid()
    diff = (skipping.render_rays(rays_o, rays_d)["rgb"] - ref["rgb"]).abs().amax(dim=-1)
    assert diff.mean() < 0.01 and (diff < 1e-5).float().mean() > 0.9


@pytest.mark.parametrize("n_importance", [0, 16])
def test_a_dense_grid_never_evaluates_more_samples_than_plain_sampling(n_importance):
    """Every cell occupied (a young field that is dense everywhere: the vanilla MLP on the H200 after 25 s) and a
    march 4x finer than N_samples: the march would evaluate about twice plain sampling's coarse samples (half of its
    depths lie in the grid's cube), so the renderer marches plain NeRF's depths instead: never more samples than
    plain sampling, and the same image. A sparse grid (the ball's cells) keeps the finer march."""
    rays_o, rays_d = camera_rays()
    plain = ball_renderer(grid=False, n_importance=n_importance, samples=12)
    dense = ball_renderer(grid=True, n_importance=n_importance, samples=12, march=48)
    set_occupied(dense, torch.ones(16 ** 3, dtype=torch.bool))
    ref, out = plain.render_rays(rays_o, rays_d), dense.render_rays(rays_o, rays_d)
    assert out["samples"].sum() <= ref["samples"].sum()
    for key in ("rgb", "depth", "acc"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-5)
    sparse = ball_renderer(grid=True, n_importance=n_importance, samples=12, march=48)
    set_occupied(sparse, ball_cells(16))
    fine_plain = ball_renderer(grid=False, n_importance=n_importance, samples=48).render_rays(rays_o, rays_d)
    torch.testing.assert_close(sparse.render_rays(rays_o, rays_d)["rgb_coarse"], fine_plain["rgb_coarse"],
                               rtol=1e-5, atol=1e-5)


def test_update_marks_the_blob_occupied_and_empty_space_free():
    renderer = ball_renderer(grid=True, resolution=16)
    grid = renderer.grid
    rays_o, rays_d = camera_rays()
    plain = ball_renderer(grid=False).render_rays(rays_o, rays_d)
    before = renderer.render_rays(rays_o, rays_d)                        # before any update: plain sampling
    assert not grid.active and torch.equal(before["rgb"], plain["rgb"]) and (before["samples"] == 48).all()
    renderer.update_grid(decay=0.95, generator=torch.Generator().manual_seed(0))
    centres = cell_points(torch.arange(grid.n_cells), torch.full((grid.n_cells, 3), 0.5), 1.0, 16).norm(dim=-1)
    half_diagonal = math.sqrt(3) * (2.0 / 16) / 2
    # one random point per cell: cells wholly inside the ball are occupied, cells wholly outside are free
    assert grid.occupied[centres < BALL_RADIUS - half_diagonal].all()
    assert not grid.occupied[centres > BALL_RADIUS + half_diagonal].any()
    # later updates keep the blob (decaying max) and leave empty space free
    values = grid.values.clone()
    for _ in range(3):
        renderer.update_grid(decay=0.95, generator=torch.Generator().manual_seed(1))
    assert grid.occupied[centres < BALL_RADIUS - half_diagonal].all()
    assert not grid.occupied[centres > BALL_RADIUS + half_diagonal].any()
    assert (grid.values >= 0.95 ** 3 * values - 1e-6).all() and grid.updates == 4


def test_grid_state_round_trip_and_mismatch():
    renderer = ball_renderer(grid=True, resolution=8)
    renderer.update_grid(decay=0.95, generator=torch.Generator().manual_seed(0))
    state = renderer.grid.state()
    fresh = OccupancyGrid(8, 1.0)
    fresh.load_state(state, "ckpt.pt")
    assert torch.equal(fresh.values, renderer.grid.values) and torch.equal(fresh.occupied, renderer.grid.occupied)
    assert fresh.updates == 1
    with pytest.raises(PadError, match=r"ckpt\.pt.*occupancy_resolution"):
        OccupancyGrid(16, 1.0).load_state(state, "ckpt.pt")


def test_grid_rendering_is_differentiable_in_the_rays():
    """iNeRF differentiates the render w.r.t. the pose: the packed samples must pass gradients to the rays."""
    renderer = ball_renderer(grid=True, n_importance=8)
    set_occupied(renderer, ball_cells(16))
    rays_o, rays_d = camera_rays(6)
    rays_o = rays_o.reshape(-1, 3).clone().requires_grad_(True)
    rays_d = rays_d.reshape(-1, 3).clone().requires_grad_(True)
    renderer.render_rays(rays_o, rays_d)["rgb"].sum().backward()
    assert rays_o.grad.abs().sum() > 0 and rays_d.grad.abs().sum() > 0
    assert torch.isfinite(rays_o.grad).all() and torch.isfinite(rays_d.grad).all()


def test_whole_images_march_render_samples_while_rays_keep_the_training_march():
    coarse, fine = ball_renderer(grid=True, samples=16), ball_renderer(grid=True, samples=64)
    mixed = ball_renderer(grid=True, samples=16, render_samples=64)     # trains and refines poses with 16
    for renderer in (coarse, fine, mixed):
        set_occupied(renderer, ball_cells(16))
    c2w = torch.eye(4)
    c2w[2, 3] = 4.0
    image = {name: r.render_image(c2w, 12, 12, Intrinsics.centred(24.0, 12, 12))
             for name, r in (("coarse", coarse), ("fine", fine), ("mixed", mixed))}
    torch.testing.assert_close(image["mixed"], image["fine"], rtol=0, atol=1e-6)
    assert (image["mixed"] - image["coarse"]).abs().max() > 1e-3          # the march made a difference
    rays_o, rays_d = camera_rays()
    torch.testing.assert_close(mixed.render_rays(rays_o, rays_d)["rgb"], coarse.render_rays(rays_o, rays_d)["rgb"],
                               rtol=0, atol=0)
    for bad in (-1, 1):
        with pytest.raises(PadError, match="render_samples"):
            NeRFOptions(render_samples=bad).validated()


def test_ray_box_interval_closed_form():
    lo, hi = -torch.ones(1, 3), torch.ones(1, 3)
    rays_o = torch.tensor([[0.0, 0.0, 4.0], [0.5, 0.0, 4.0], [2.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    rays_d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -2.0], [0.0, 0.0, -1.0], [1.0, 1.0, 0.0]])
    t_enter, t_exit = ray_box_interval(rays_o, rays_d, lo, hi)
    # down the axis: enters at z = 1 (t 3), leaves at z = -1 (t 5); twice as long a direction halves t;
    # parallel to z outside the x slab: misses; from the centre along (1, 1, 0): leaves at t = 1, entered behind
    torch.testing.assert_close(t_enter[[0, 1, 3]], torch.tensor([3.0, 1.5, -1.0]))
    torch.testing.assert_close(t_exit[[0, 1, 3]], torch.tensor([5.0, 2.5, 1.0]))
    assert t_enter[2] > t_exit[2]
    # two boxes along the axis (z in [-1, -0.5] and [0.5, 1]): from the first one's entry to the last one's exit;
    # a box no ray of these crosses changes nothing
    lo2 = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, 0.5], [5.0, 5.0, 5.0]])
    hi2 = torch.tensor([[1.0, 1.0, -0.5], [1.0, 1.0, 1.0], [6.0, 6.0, 6.0]])
    t_enter, t_exit = ray_box_interval(rays_o[:1], rays_d[:1], lo2, hi2)
    assert t_enter.tolist() == [3.0] and t_exit.tolist() == [5.0]
    t_enter, t_exit = ray_box_interval(rays_o[:1], rays_d[:1], lo2[:0], hi2[:0])
    assert t_enter[0] > t_exit[0]                                  # no boxes: crosses none


def test_occupied_boxes_one_per_group_of_occupied_cells():
    grid = OccupancyGrid(16, 1.0)
    grid.occupied.copy_(ball_cells(16))
    lo, hi = grid.occupied_boxes()
    # cells of 0.125 touching the ball of radius 0.5: from -0.5 to 0.5 on every axis
    torch.testing.assert_close(lo, torch.full((1, 3), -0.5)) and torch.testing.assert_close(hi, torch.full((1, 3), 0.5))
    grid.occupied[0] = True                                        # a floater in the corner cell: a box of its own
    lo, hi = grid.occupied_boxes()
    assert len(lo) == 2
    torch.testing.assert_close(lo[1] if lo[0, 0] > -1 else lo[0], torch.full((3,), -1.0))
    grid.occupied.zero_()
    assert len(grid.occupied_boxes()[0]) == 0
    scattered = torch.zeros(16, 16, 16, dtype=torch.bool)
    scattered[::2, ::2, ::2] = True                               # 512 isolated cells: 127 boxes + one for the rest
    grid.occupied.copy_(scattered.reshape(-1))
    lo, hi = grid.occupied_boxes()
    assert len(lo) == 128
    centres = cell_points(torch.nonzero(grid.occupied)[:, 0], torch.full((512, 3), 0.5), 1.0, 16)
    assert (((centres[:, None] >= lo[None]) & (centres[:, None] <= hi[None])).all(-1)).any(-1).all()


@pytest.mark.parametrize("march", [0, 96])
def test_only_the_rays_crossing_the_occupied_box_are_marched_with_the_same_result(march):
    """The culled march (rays that miss the box of occupied cells skipped, depths outside it dropped) renders what
    the whole march renders, with and without jitter, and gives the rays the same gradients (iNeRF); it looks up
    the grid at a fraction of the points."""
    culled = ball_renderer(grid=True, samples=48, march=march)
    whole = ball_renderer(grid=True, samples=48, march=march)
    floater = ball_cells(16)
    floater[16 ** 3 - 1] = True               # one occupied cell in the far corner: its own box, not a wider one
    for r in (culled, whole):
        set_occupied(r, floater)
        r.coarse.density = lambda pts: torch.where(pts.norm(dim=-1) < BALL_RADIUS, 1.0, -1.0)   # translucent
    whole.grid.occupied_boxes = lambda: (-torch.ones(1, 3), torch.ones(1, 3))   # the cube: every ray, every depth
    looked_up = {}
    for name, r in (("culled", culled), ("whole", whole)):
        lookup = r.grid.occupied_at
        r.grid.occupied_at = lambda pts, lookup=lookup, name=name: (
            looked_up.__setitem__(name, looked_up.get(name, 0) + pts[..., 0].numel()) or lookup(pts))
    rays_o, rays_d = camera_rays(24)
    for perturb in (False, True):
        outs, grads = [], []
        for r in (culled, whole):
            d = rays_d.clone().requires_grad_(True)
            out = r.render_rays(rays_o, d, perturb=perturb, generator=torch.Generator().manual_seed(3))
            out["rgb"].sum().backward()
            outs.append(out)
            grads.append(d.grad)
        for key in ("rgb", "rgb_coarse", "depth", "acc", "samples"):
            torch.testing.assert_close(outs[0][key], outs[1][key], atol=1e-5, rtol=0)
        torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=0)
    assert (outs[0]["acc"] > 0.5).float().mean() < 0.5           # most rays miss the ball: the case that pays
    assert looked_up["culled"] < 0.3 * looked_up["whole"]


@pytest.mark.parametrize("n_importance", [0, 16])
def test_renders_without_gradients_stop_marching_behind_the_surface(n_importance):
    """render_early_stop: without gradients a ray is evaluated front to back and left once its transmittance is
    below the threshold, so the samples inside the ball are skipped and the image changes by at most that much;
    with gradients (training, iNeRF) every kept sample is evaluated as before."""
    whole = ball_renderer(grid=True, n_importance=n_importance)
    stopping = ball_renderer(grid=True, n_importance=n_importance, render_early_stop=1e-4)
    for r in (whole, stopping):
        set_occupied(r, ball_cells(16))
    rays_o, rays_d = camera_rays()
    with torch.no_grad():
        ref, out = whole.render_rays(rays_o, rays_d), stopping.render_rays(rays_o, rays_d)
    for key in ("rgb", "acc"):
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-4)
    torch.testing.assert_close(out["depth"], ref["depth"], rtol=0, atol=1e-4 * 6.0)
    through = ref["acc"] > 0.999                                  # rays through the opaque ball
    saved = 0.8 if n_importance == 0 else 0.95            # the fine pass's samples crowd at the surface already
    assert through.any() and out["samples"][through].sum() < saved * ref["samples"][through].sum()
    assert torch.equal(out["samples"][~through], ref["samples"][~through])   # translucent rays: every sample
    graded = stopping.render_rays(rays_o, rays_d)
    torch.testing.assert_close(graded["rgb"], ref["rgb"], rtol=0, atol=1e-5)
    assert torch.equal(graded["samples"], ref["samples"])
