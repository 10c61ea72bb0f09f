"""Options of the feature-difference scorer (anomaly maps and image scores)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from common.options import Options, option, require

N_STAGES = 5


@dataclass(frozen=True)
class ScoreOptions(Options):
    GROUP: ClassVar[str] = "anomaly scoring"

    score_stages: tuple[int, ...] = option((1, 2, 3, 4, 5), "backbone stages (1..5) whose features are compared")
    score_include_rgb: bool = option(True, "append the RGB image to the features")
    score_stage_weights: tuple[float, ...] = option((), "optional weight per compared stage (empty = all 1, the "
                                                        "paper's plain formula); one more weights the RGB term")
    score_sigma: float = option(4.0, "Gaussian smoothing of the map in pixels (0 = off)")
    image_score_pool: int = option(32, "average-pool kernel before the max that gives the image score")

    def validated(self) -> "ScoreOptions":
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
        return self

    def term_weights(self) -> tuple[list[float], float]:
        """(weight per stage, weight of the RGB term). All 1 by default (the plain L2 formula)."""
        if not self.score_stage_weights:
            return [1.0] * len(self.score_stages), 1.0
        weights = list(self.score_stage_weights)
        n = len(self.score_stages)
        return weights[:n], (weights[n] if len(weights) > n else 1.0)
