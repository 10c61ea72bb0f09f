"""Options of the feature-difference scorer (anomaly maps and image scores)."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

from common.options import Options, option, require

N_STAGES = 5
PROTOCOLS = ("paper", "official")
NORMALIZATIONS = ("none", "residual")
REFERENCES = ("nerf", "reprojected")
REFERENCE_MATCHES = ("nerf", "query")
# What a protocol fixes, whatever the options say: 'official' is the PAD authors' evaluation script
# (README, "Scoring"): EfficientNet-B4 blocks 1, 5, 9, 21 (UniAD's layers 1-4) + RGB, unweighted, sigma 4,
# plain max. A value given explicitly (config file or command line) that differs is an error
# (omniposead.config); a default left alone is replaced, and the parser prints what the preset set.
PRESETS: dict[str, dict[str, Any]] = {
    "official": {"score_stages": (1, 2, 3, 4), "score_include_rgb": True, "score_stage_weights": (),
                 "score_sigma": 4.0, "image_score_pool": 1},
}


@dataclass(frozen=True)
class ScoreOptions(Options):
    GROUP: ClassVar[str] = "anomaly scoring"

    score_protocol: str = option("paper", "'paper': the paper's formula (Eqn. 3-4) at the query's resolution; "
                                          "'official': the PAD authors' evaluation script (224 px, squared "
                                          "differences of stages 1-4 + RGB, test-set min-max; README); it sets "
                                          "score_stages, score_include_rgb, score_stage_weights, score_sigma "
                                          "and image_score_pool, and giving one of them another value is an "
                                          "error",
                                 choices=PROTOCOLS)
    score_normalization: str = option("none", "'residual': score each feature difference by how unusual it is for "
                                              "this NeRF (per-channel statistics of its error on held-out training "
                                              "views, cached in the class's checkpoint folder); 'none': raw "
                                              "differences", choices=NORMALIZATIONS)
    residual_views: int = option(0, "held-out training views the residual model is fitted on, evenly chosen (0 = "
                                    "every one; each costs a full render and a backbone pass)")
    residual_fallback_views: int = option(8, "training views used to fit the residual model when holdout_every = 0 "
                                             "(the NeRF has seen them: its error there is optimistic; a warning "
                                             "says so)")
    reference: str = option("nerf", "what a query is compared with: 'nerf' = the NeRF's render at the refined pose "
                                    "(the paper); 'reprojected' = the nearest training views (anomaly-free "
                                    "photographs) warped to that pose with the NeRF's depth, the NeRF's colour "
                                    "where none sees a pixel: it keeps the fine detail the NeRF blurs",
                            choices=REFERENCES)
    reference_views: int = option(3, "reference = reprojected: training views tried per pixel, nearest camera first")
    reference_tolerance: float = option(0.01, "reference = reprojected: a training view sees a point when its NeRF "
                                              "depth there is within this fraction of the point's depth")
    reference_match: str = option("nerf", "reference = reprojected: what each pixel's warped colour is chosen to be "
                                          "closest to: 'nerf' = the NeRF's render (passes over a highlight one "
                                          "view caught); 'query' = the query itself (of the anomaly-free "
                                          "photographs, the one that explains the query best, a nearest "
                                          "neighbour per pixel: what no training view shows still differs)",
                                  choices=REFERENCE_MATCHES)
    reference_match_window: int = option(1, "reference = reprojected: the colours are compared over a box of this "
                                            "many pixels per side (1 = per pixel)")
    reference_match_shift: int = option(0, "reference = reprojected: each warped view is also tried moved by up to "
                                           "this many pixels along each image axis, the move whose box matches "
                                           "best taken (a block match against the warp's misregistration at thin "
                                           "parts and edges; (2 x this + 1)^2 tries per view)")
    reference_fill_views: int = option(0, "reference = reprojected: the next this many nearest training views are "
                                          "tried on the pixels none of the reference_views sees (a disocclusion), "
                                          "before the NeRF's colour is left there")
    reference_unseen_power: float = option(0.0, "reference = reprojected: the map is multiplied by (1 - u)^this, u "
                                                "the share of the pixels around (Gaussian-weighted at the map's "
                                                "smoothing scale) where no warped training view sees the surface "
                                                "and the NeRF's guess fills the reference (0 = off): the map is "
                                                "trusted where anomaly-free photographs make the reference")
    reference_spread_limit: float = option(0.0, "reference = reprojected: the surface pixels where the warped "
                                                "training views disagree by more than this (their colours' mean "
                                                "absolute difference from their mean, summed over RGB, in [0, 1] "
                                                "units) count as unseen too: no anomaly-free photograph vouches for "
                                                "the reference there (0 = off; the query takes no part)")
    reference_silhouette_band: int = option(0, "reference = reprojected: background pixels within this many pixels "
                                               "of the NeRF's surface are also tried with the warped views (at the "
                                               "nearest surface's depth) against the NeRF's colour: a silhouette the "
                                               "NeRF draws a pixel or two short or long")
    reference_background_band: int = option(0, "either reference: on the surface pixels within this many pixels of "
                                               "the NeRF's background, the plain background colour (white with "
                                               "white_bkgd) takes the reference's place where it is closer to the "
                                               "query, pixel by pixel (the NeRF draws the outline a pixel or two "
                                               "too wide, with a dark fringe of its blur); for objects on a plain "
                                               "background (0 = off)")
    reference_match_nerf: bool = option(False, "reference = reprojected: the NeRF's own colour competes with the "
                                               "warped views' on every pixel it sees as solid")
    reference_depth_search: int = option(0, "reference = reprojected: the query's NeRF depth is tried at this many "
                                            "steps of reference_depth_step either side, per pixel, and the depth "
                                            "at which the warped training views agree best (over the "
                                            "reference_match_window box; the query takes no part) is kept "
                                            "(0 = off)")
    reference_depth_step: float = option(0.0025, "reference = reprojected: the relative depth step of "
                                                 "reference_depth_search")
    reference_depth_downscale: int = option(1, "reference = reprojected: the training views' NeRF depth (their "
                                               "z-buffer) is rendered at 1/this of the image size, this^2 times "
                                               "fewer rays per warped view; the colours stay full size")
    score_stages: tuple[int, ...] = option((1, 2, 3, 4, 5), "backbone stages (1..5) whose features are compared")
    score_include_rgb: bool = option(True, "append the RGB image to the features")
    score_stage_weights: tuple[float, ...] = option((), "optional weight per compared stage (empty = all 1, the "
                                                        "paper's plain formula); one more weights the RGB term")
    score_relight_sigma: float = option(0.0, "the reference is relit to the query's low-frequency shading before "
                                             "they are compared: each colour channel multiplied by the ratio of "
                                             "the query's and the reference's Gaussian blurs at this sigma, in "
                                             "pixels (between 1/2 and 2). For queries whose exposure or white "
                                             "balance differs from the training photographs' (it did not help "
                                             "against a flash's shading: RESULTS); a defect much smaller than the "
                                             "blur keeps its contrast (0 = off)")
    score_colour_gain: bool = option(False, "each colour channel of the reference is scaled by its least-squares "
                                            "gain to the query's, over the whole image (between 1/2 and 2), "
                                            "before they are compared: for photographs whose exposure or white "
                                            "balance changes from shot to shot (a flash, a camera's automatic "
                                            "white balance), which a NeRF averages away")
    score_sigma: float = option(4.0, "Gaussian smoothing of the map in pixels (0 = off)")
    image_score_pool: int = option(32, "average-pool kernel before the max that gives the image score")

    def validated(self) -> ScoreOptions:
        stages, weights = self.score_stages, self.score_stage_weights
        require(bool(stages) or self.score_include_rgb,
                "score_stages is empty and score_include_rgb is off: nothing to compare")
        require(all(1 <= s <= N_STAGES for s in stages), f"score_stages must be in 1..{N_STAGES}, got {list(stages)}")
        require(len(set(stages)) == len(stages), f"score_stages has repeated stages: {list(stages)}")
        n_terms = len(stages) + int(self.score_include_rgb)
        require(not weights or len(weights) in (len(stages), n_terms),
                f"score_stage_weights has {len(weights)} values; expected one per stage ({len(stages)}) "
                f"or one per stage plus one for RGB ({n_terms})")
        require(all(w >= 0 and math.isfinite(w) for w in weights),
                f"score_stage_weights must be finite and >= 0, got {list(weights)}")
        require(self.score_sigma >= 0 and math.isfinite(self.score_sigma),
                f"score_sigma must be >= 0, got {self.score_sigma}")
        require(self.image_score_pool >= 1, f"image_score_pool must be >= 1, got {self.image_score_pool}")
        require(self.score_relight_sigma >= 0 and math.isfinite(self.score_relight_sigma),
                f"score_relight_sigma must be >= 0, got {self.score_relight_sigma}")
        require(self.score_protocol in PROTOCOLS,
                f"score_protocol must be one of {', '.join(PROTOCOLS)}, got {self.score_protocol!r}")
        require(self.score_normalization in NORMALIZATIONS,
                f"score_normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.score_normalization!r}")
        require(self.reference in REFERENCES,
                f"reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        require(self.reference_views >= 1, f"reference_views must be >= 1, got {self.reference_views}")
        require(self.reference_match in REFERENCE_MATCHES,
                f"reference_match must be one of {', '.join(REFERENCE_MATCHES)}, got {self.reference_match!r}")
        require(self.reference_match_window >= 1,
                f"reference_match_window must be >= 1, got {self.reference_match_window}")
        require(self.reference_match_shift >= 0,
                f"reference_match_shift must be >= 0, got {self.reference_match_shift}")
        require(self.reference_fill_views >= 0, f"reference_fill_views must be >= 0, got {self.reference_fill_views}")
        require(self.reference_unseen_power >= 0,
                f"reference_unseen_power must be >= 0, got {self.reference_unseen_power}")
        require(self.reference_silhouette_band >= 0,
                f"reference_silhouette_band must be >= 0, got {self.reference_silhouette_band}")
        require(self.reference_background_band >= 0,
                f"reference_background_band must be >= 0, got {self.reference_background_band}")
        require(self.reference_tolerance > 0, f"reference_tolerance must be > 0, got {self.reference_tolerance}")
        require(self.reference_depth_search >= 0,
                f"reference_depth_search must be >= 0, got {self.reference_depth_search}")
        require(self.reference_spread_limit >= 0 and math.isfinite(self.reference_spread_limit),
                f"reference_spread_limit must be >= 0, got {self.reference_spread_limit}")
        require(self.reference_depth_step > 0, f"reference_depth_step must be > 0, got {self.reference_depth_step}")
        require(self.reference_depth_downscale >= 1,
                f"reference_depth_downscale must be >= 1, got {self.reference_depth_downscale}")
        require(self.residual_fallback_views >= 1,
                f"residual_fallback_views must be >= 1, got {self.residual_fallback_views}")
        return self

    # What the protocol compares: its preset's value where it has one, else the option's.

    def preset(self) -> dict[str, Any]:
        """The settings the protocol fixes ({} for 'paper')."""
        return PRESETS.get(self.score_protocol, {})

    def preset_conflicts(self, given: Collection[str]) -> list[str]:
        """The options among `given` (names set explicitly) whose value contradicts the protocol's preset."""
        preset = self.preset()
        return [name for name in given if name in preset and getattr(self, name) != preset[name]]

    def preset_line(self) -> str | None:
        """One line saying what the protocol's preset sets (None without a preset)."""
        preset = self.preset()
        if not preset:
            return None
        values = ", ".join(f"{k} = {list(v) if isinstance(v, tuple) else v}" for k, v in preset.items())
        return f"score_protocol = {self.score_protocol} sets {values}"

    def _setting(self, name: str) -> Any:
        return self.preset().get(name, getattr(self, name))

    def compared_stages(self) -> tuple[int, ...]:
        return self._setting("score_stages")

    def compares_rgb(self) -> bool:
        return self._setting("score_include_rgb")

    def smoothing_sigma(self) -> float:
        return self._setting("score_sigma")

    def image_pool(self) -> int:
        """Average-pool kernel of the image score; the official script takes the plain maximum."""
        return self._setting("image_score_pool")

    def scorer_record(self) -> dict:
        """What a saved map was scored with (stored in every result record and checked on resume)."""
        return {"score_protocol": self.score_protocol, "score_normalization": self.score_normalization,
                "score_stages": list(self.compared_stages()), "score_include_rgb": self.compares_rgb(),
                "score_stage_weights": list(self._setting("score_stage_weights")),
                "score_sigma": self.smoothing_sigma(), **self.relight_record(), **self.reference_record()}

    def relight_record(self) -> dict:
        """The relighting of the reference (its colour gain, its low-frequency shading), when on (so records made
        without it stay as they were)."""
        return {**({"score_colour_gain": True} if self.score_colour_gain else {}),
                **({"score_relight_sigma": self.score_relight_sigma} if self.score_relight_sigma else {})}

    def reference_record(self) -> dict:
        """The options the reference depends on: for the NeRF's render (the paper's) none but the background band
        when it is on, every reference_* option for the reprojected one."""
        if self.reference == "nerf":
            band = self.reference_background_band
            return {"reference_background_band": band} if band else {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.startswith("reference")}

    def term_weights(self) -> tuple[list[float], float]:
        """(weight per stage, weight of the RGB term). All 1 by default (the plain L2 formula)."""
        weights = list(self._setting("score_stage_weights"))
        if not weights:
            return [1.0] * len(self.compared_stages()), 1.0
        n = len(self.score_stages)
        return weights[:n], (weights[n] if len(weights) > n else 1.0)
