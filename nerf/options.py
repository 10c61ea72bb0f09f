"""NeRF model, rendering and training options (names follow nerf-pytorch where they exist)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from common.options import Options, option, require

FIELD_NAMES = ("mlp", "triplane")


@dataclass(frozen=True)
class NeRFOptions(Options):
    GROUP: ClassVar[str] = "NeRF model and rendering"

    field: str = option("mlp", "the radiance field: mlp = the paper's vanilla NeRF MLP (net* and multires options); "
                               "triplane = multiscale feature planes read by a tiny MLP (K-Planes / TensoRF style, "
                               "grid_* options): more capacity per second of training; the object must lie inside "
                               "[-grid_bound, grid_bound]^3", choices=FIELD_NAMES)
    netdepth: int = option(8, "layers in the coarse MLP")
    netwidth: int = option(256, "channels per layer in the coarse MLP")
    netdepth_fine: int = option(8, "layers in the fine MLP")
    netwidth_fine: int = option(256, "channels per layer in the fine MLP")
    skips: tuple[int, ...] = option((4,), "0-based layer indices after which the encoded input is "
                                          "concatenated (4 = skip at layer 5)")
    multires: int = option(10, "positional-encoding frequencies for xyz")
    multires_views: int = option(4, "positional-encoding frequencies for view directions")
    use_viewdirs: bool = option(True, "view-dependent colour branch")
    density_bias_init: float = option(0.1, "initial bias of the density output; > 0 keeps the ReLU density from "
                                           "starting dead (zero everywhere, no gradient), which small MLPs "
                                           "otherwise often do")
    grid_resolutions: tuple[int, ...] = option((32, 64, 128, 256), "triplane: cells per side of each scale's "
                                                                     "planes")
    grid_features: int = option(16, "triplane: feature channels per plane and scale")
    grid_hidden: int = option(64, "triplane: width of the density and colour MLPs")
    grid_bound: float = option(1.5, "triplane: the planes cover the cube [-b, b]^3 around the world origin; density "
                                    "is zero outside it")
    grid_density_bias: float = option(-1.0, "triplane: density = softplus(output + this); softplus keeps a "
                                            "gradient everywhere, so the density cannot start dead")
    grid_tv_weight: float = option(0.0, "triplane: weight of the planes' total variation in the training loss "
                                        "(K-Planes: 1e-4; a smoothness prior for sparse views; it costs a pass over "
                                        "every plane per step: on the CPU demo 0.8 dB lower after 60 s)")
    grid_lrate: float = option(2e-2, "triplane: Adam learning rate of the planes (the MLPs use lrate; both decay "
                                     "by lrate_decay)")
    N_samples: int = option(64, "coarse samples per ray")
    N_importance: int = option(64, "extra fine samples per ray (0 = coarse only)")
    perturb: float = option(1.0, "1 = stratified jitter while training, 0 = fixed")
    raw_noise_std: float = option(0.0, "noise added to density while training")
    near: float = option(2.0, "near bound along each ray (MAD-Sim / synthetic: 2)")
    far: float = option(6.0, "far bound along each ray (MAD-Sim / synthetic: 6)")
    chunk: int = option(32768, "rays rendered per forward pass when rendering images")
    amp: bool = option(True, "bf16 autocast of the fields on CUDA (ignored on CPU)")
    occupancy_grid: bool = option(False, "skip empty space (Instant-NGP / nerfacc occupancy grid): the MLPs are "
                                         "evaluated only at samples inside occupied cells of a grid that training "
                                         "keeps up to date from the density field; False = the paper's plain "
                                         "sampling")
    occupancy_resolution: int = option(64, "occupancy grid cells per side")
    occupancy_bound: float = option(1.5, "the grid covers the cube [-b, b]^3 around the world origin; it must "
                                         "contain the object: samples outside it are treated as empty")
    occupancy_samples: int = option(0, "with the grid (once it is built, after the warm-up): stratified samples "
                                       "per ray from near to far (marching step (far - near) / occupancy_samples), "
                                       "of which only those in occupied cells reach the coarse MLP; 0 = N_samples")
    render_samples: int = option(0, "with the grid: marching samples per ray of whole-image renders (the scored "
                                    "references, the residual model's and the held-out PSNR's views); 0 = "
                                    "occupancy_samples. A finer march than training's sharpens fine texture in "
                                    "the reference; training and iNeRF keep occupancy_samples")
    occupancy_early_stop: float = option(0.0, "with the grid, while gradients are on (training, iNeRF): a "
                                              "density-only pass first, then the samples behind the point where "
                                              "a ray's transmittance falls below this are not evaluated (early ray "
                                              "termination, nerfacc: 1e-4; 0 = off: on the CPU demo it dropped 7 % "
                                              "of the samples the grid keeps, less than its extra pass costs)")
    render_early_stop: float = option(1e-4, "with the grid, without gradients (the scored references, the residual "
                                            "model's and the held-out PSNR's views): a ray is no longer evaluated "
                                            "once its transmittance is below this, front to back in eight pieces "
                                            "of the march; what it leaves out adds at most this much to a pixel "
                                            "(a 400x400 render: 40 % of the samples lie behind the surface). 0 = "
                                            "off")
    occupancy_threshold: float = option(0.01, "a cell is occupied when one marching step through it would be at "
                                              "least this opaque, 1 - exp(-density * step) (Instant-NGP: 0.01)")

    def validated(self) -> NeRFOptions:
        require(self.N_samples >= 2, f"N_samples must be >= 2, got {self.N_samples}")
        require(self.N_importance >= 0, f"N_importance must be >= 0, got {self.N_importance}")
        require(0 < self.near < self.far, f"need 0 < near < far, got near={self.near}, far={self.far}")
        require(self.chunk >= 1, f"chunk must be >= 1, got {self.chunk}")
        require(self.render_samples == 0 or self.render_samples >= 2,
                f"render_samples must be 0 (= occupancy_samples) or >= 2, got {self.render_samples}")
        require(self.occupancy_resolution >= 1, f"occupancy_resolution must be >= 1, got {self.occupancy_resolution}")
        require(self.occupancy_bound > 0, f"occupancy_bound must be > 0, got {self.occupancy_bound}")
        require(self.occupancy_samples == 0 or self.occupancy_samples >= 2,
                f"occupancy_samples must be 0 (= N_samples) or >= 2, got {self.occupancy_samples}")
        require(0 <= self.occupancy_early_stop < 1,
                f"occupancy_early_stop must be in [0, 1), got {self.occupancy_early_stop}")
        require(0 <= self.render_early_stop < 1, f"render_early_stop must be in [0, 1), got {self.render_early_stop}")
        require(0 < self.occupancy_threshold < 1,
                f"occupancy_threshold must be in (0, 1), got {self.occupancy_threshold}")
        require(self.field in FIELD_NAMES, f"field must be one of {', '.join(FIELD_NAMES)}, got {self.field!r}")
        require(len(self.grid_resolutions) >= 1 and min(self.grid_resolutions) >= 2,
                f"grid_resolutions must be one or more sizes >= 2, got {list(self.grid_resolutions)}")
        require(self.grid_features >= 1 and self.grid_hidden >= 1,
                f"grid_features and grid_hidden must be >= 1, got {self.grid_features}, {self.grid_hidden}")
        require(self.grid_bound > 0 and self.grid_lrate > 0 and self.grid_tv_weight >= 0,
                "grid_bound and grid_lrate must be > 0 and grid_tv_weight >= 0")
        return self

    @property
    def has_fine(self) -> bool:
        return self.N_importance > 0

    def bound_problems(self, bounds: dict[str, float]) -> list[str]:
        """What the ray bounds and the field's cube get wrong for a scene whose `bounds` (mad.colmap_poses: near,
        far, object_radius, from the SfM points) are known: one line each, naming the option and the value that
        holds the object."""
        problems = []
        if self.near > bounds["near"]:
            problems.append(f"near = {self.near:g} cuts the object off (its points need near <= {bounds['near']:.2f})")
        if self.far < bounds["far"]:
            problems.append(f"far = {self.far:g} cuts the object off (its points need far >= {bounds['far']:.2f})")
        cubes = [("grid_bound", self.grid_bound)] if self.field == "triplane" else []
        cubes += [("occupancy_bound", self.occupancy_bound)] if self.occupancy_grid else []
        for name, value in cubes:
            if value < bounds["object_radius"]:
                problems.append(f"{name} = {value:g} cuts the object off (it needs {bounds['object_radius']:.2f})")
            elif value > 2 * bounds["object_radius"]:
                problems.append(f"{name} = {value:g} spends most of its cells on empty space (the object needs "
                                f"{bounds['object_radius']:.2f})")
        return problems

    @property
    def march_samples(self) -> int:
        """Stratified samples per ray of the coarse pass once the grid is built (occupancy_samples or N_samples)."""
        return self.occupancy_samples or self.N_samples

    @property
    def image_march_samples(self) -> int:
        """The coarse march of whole-image renders once the grid is built (render_samples or march_samples)."""
        return self.render_samples or self.march_samples

    def architecture(self) -> dict[str, Any]:
        """The options that shape the networks' parameters: a checkpoint only loads under the same values.
        (The vanilla MLP's keys are those of checkpoints written before other fields existed.)"""
        if self.field == "triplane":
            return {"field": self.field, "grid_resolutions": [int(r) for r in self.grid_resolutions],
                    "grid_features": self.grid_features, "grid_hidden": self.grid_hidden,
                    "grid_bound": self.grid_bound, "multires_views": self.multires_views,
                    "use_viewdirs": bool(self.use_viewdirs), "has_fine": self.has_fine}
        return {
            "netdepth": self.netdepth, "netwidth": self.netwidth,
            "netdepth_fine": self.netdepth_fine if self.has_fine else None,
            "netwidth_fine": self.netwidth_fine if self.has_fine else None,
            "skips": [int(s) for s in self.skips], "multires": self.multires,
            "multires_views": self.multires_views, "use_viewdirs": bool(self.use_viewdirs),
            "has_fine": self.has_fine,
        }


@dataclass(frozen=True)
class TrainOptions(Options):
    GROUP: ClassVar[str] = "NeRF training"

    N_rand: int = option(4096, "rays per training batch")
    lrate: float = option(5e-4, "Adam learning rate")
    lrate_decay: float = option(250, "learning rate decays by 10x every lrate_decay*1000 steps")
    n_iters: int = option(200000, "training iterations")
    max_train_minutes: float = option(0.0, "stop this run's training after this many minutes of wall clock (0 = no "
                                           "limit); the checkpoint is then marked as stopped by the budget and the "
                                           "next run continues it", cosmetic=True)
    precrop_iters: int = option(0, "sample rays from the image centre for this many steps")
    precrop_frac: float = option(0.5, "fraction of the image used by precrop")
    holdout_every: int = option(8, "every k-th training view is held out for validation PSNR (0 = none)")
    i_print: int = option(100, "update the progress bar every N steps", cosmetic=True)
    i_val: int = option(5000, "held-out PSNR every N steps", cosmetic=True)
    val_views: int = option(0, "held-out views the PSNR renders, evenly chosen (0 = every one): each is a full "
                               "render, at 400 px 25 views cost about as much as 300 training steps on a CPU; all "
                               "held-out views stay out of training", cosmetic=True)
    i_weights: int = option(10000, "checkpoint every N steps", cosmetic=True)
    save_every_minutes: float = option(1.0, "also checkpoint after this many minutes of training since the last "
                                            "save (0 = only every i_weights steps), so a killed run loses little",
                                       cosmetic=True)
    occupancy_update_every: int = option(16, "with occupancy_grid: update the grid every N steps (Instant-NGP: 16)")
    occupancy_warmup: int = option(256, "with occupancy_grid: plain sampling (N_samples, every cell counts as "
                                        "occupied) for this many steps, while the field learns a first shape; the "
                                        "first update then evaluates every cell (Instant-NGP: 256)")
    occupancy_decay: float = option(0.95, "with occupancy_grid: each update multiplies every cell's density by this "
                                          "before taking the max with the new one (Instant-NGP: 0.95)")

    def validated(self) -> TrainOptions:
        for name in ("N_rand", "n_iters"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(self.lrate > 0 and self.lrate_decay > 0,
                f"lrate and lrate_decay must be > 0, got {self.lrate} and {self.lrate_decay}")
        require(0 < self.precrop_frac <= 1, f"precrop_frac must be in (0, 1], got {self.precrop_frac}")
        require(self.i_print >= 1, f"i_print must be >= 1, got {self.i_print}")
        require(self.max_train_minutes >= 0 and self.save_every_minutes >= 0,
                "max_train_minutes and save_every_minutes must be >= 0")
        require(self.occupancy_update_every >= 1,
                f"occupancy_update_every must be >= 1, got {self.occupancy_update_every}")
        require(self.occupancy_warmup >= 0, f"occupancy_warmup must be >= 0, got {self.occupancy_warmup}")
        require(0 <= self.occupancy_decay <= 1, f"occupancy_decay must be in [0, 1], got {self.occupancy_decay}")
        return self
