"""Options of the iNeRF pose refinement."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.options import Options, option, require

STRATEGIES = ("random", "interest_points", "interest_regions")
DETECTORS = ("sift", "orb")


@dataclass(frozen=True)
class InerfOptions(Options):
    GROUP: ClassVar[str] = "iNeRF pose refinement"

    inerf_steps: int = option(300, "optimisation steps per query (paper: 300)")
    inerf_rays: int = option(3072, "rays sampled per query per step (paper: 3072)")
    inerf_lr: float = option(0.01, "Adam learning rate on the twist")
    inerf_lr_decay_every: int = option(100, "learning rate is multiplied by inerf_lr_decay every this many steps "
                                            "(lr * 0.8^(k/100))")
    inerf_lr_decay: float = option(0.8, "see inerf_lr_decay_every")
    inerf_lr_hold: int = option(0, "steps at the full learning rate before the decay starts (0 = the paper's "
                                   "schedule): a late, fast decay settles the pose finely without shrinking the "
                                   "early steps that bring it from the retrieved view")
    inerf_sampling: str = option("interest_regions", "where rays are drawn from in the query image",
                                 choices=STRATEGIES)
    kernel_size: int = option(5, "dilation kernel for interest_regions")
    dil_iter: int = option(3, "dilation iterations for interest_regions")
    inerf_batch: int = option(16, "query images refined together (one twist each)")
    inerf_topk_restarts: int = option(5, "refine from k retrieved training views and keep the pose with the lowest "
                                         "photometric loss (1 = paper: the nearest view only; 5 brought the share of "
                                         "poses off by > 5 deg on the demo seeds 0-2 from 8 % to 0 %)")
    inerf_restart_min_angle: float = option(15.0, "with k > 1 starts: retrieval's nearest views, skipping any within "
                                                  "this many degrees (camera rotation) of one already chosen, so "
                                                  "that the k starts cover distinct views (0 = the k nearest)")
    inerf_restart_fraction: float = option(0.2, "with k > 1 starts: all of them run this fraction of inerf_steps, "
                                                "then only each query's best continues for the rest (1 = all run "
                                                "every step; 0.2 costs about 1.5x a single start at 5 starts)")
    inerf_start_rays: int = option(0, "with k > 1 starts and a restart fraction below 1: rays per query per step "
                                      "(and fixed evaluation rays) while all the starts run; the best start then "
                                      "continues with inerf_rays (0 = inerf_rays throughout). The starts lie at "
                                      "least inerf_restart_min_angle apart, and telling the right one from the wrong "
                                      "ones needs fewer rays than settling it finely")
    inerf_retry_factor: float = option(3.0, "with k > 1 starts: a query whose best loss after the first steps is "
                                            "above this many times the median of the batch's gets k more starts, "
                                            "away from those tried (0 = no retry)")
    pose_fallback: bool = option(True, "a query whose refined loss is above the unsure threshold is searched for "
                                       "globally: compared with fallback_positions x fallback_rolls low-resolution "
                                       "renders over the sphere, its best fallback_refine candidates refined by iNeRF, "
                                       "the lowest loss kept")
    pose_unsure_factor: float = option(5.0, "unsure threshold = this x the median final loss of iNeRF on held-out "
                                            "training views started near their true poses (calibration); a pose "
                                            "above it is 'pose unsure' and, with pose_fallback, searched globally")
    pose_confidence_trim: float = option(0.25, "share of the worst-fitting evaluation rays left out of the loss the "
                                               "pose confidence is judged on (a defect makes a few rays fit badly, a "
                                               "wrong pose most of them)")
    pose_calibration_views: int = option(8, "held-out training views (the trainer's split) the threshold is "
                                            "calibrated on (evenly spaced training views without a split)")
    pose_calibration_offset: float = option(10.0, "degrees the calibration views' starts are turned away from their "
                                                  "true poses (a typical retrieval error)")
    fallback_positions: int = option(200, "candidate camera positions over the sphere (about 14 degrees apart at 200)")
    fallback_rolls: tuple[float, ...] = option((0.0,), "in-plane rolls in degrees tried at each candidate position "
                                                     "(0 = upright like the training views; e.g. 0 90 180 270)")
    fallback_size: int = option(32, "longer side in pixels of the candidate renders and the query they are compared "
                                    "with")
    fallback_refine: int = option(3, "distinct best candidates refined by iNeRF per lost query")
    pose_polish_steps: int = option(0, "after iNeRF: Adam steps of a photometric polish of the pose against the "
                                       "nearest training photographs, whose surface points (their NeRF depth) are "
                                       "projected into the query (inerf.photometric; 0 = off): the photographs keep "
                                       "the detail iNeRF's blurred render lacks")
    pose_polish_views: int = option(3, "training photographs the polish aligns the query with, nearest camera first")
    pose_polish_points: int = option(4000, "the most textured pixels of each photograph the polish compares")
    pose_polish_keep: float = option(1.0, "the polish's loss averages the best-fitting this share of the points (a "
                                          "trimmed loss: 1 = all; a part gone from the query pulls an untrimmed "
                                          "polish, benchmarks/RESULTS.md)")
    pose_polish_lr: float = option(0.002, "the polish's Adam step size on the twist (halved for its second half)")
    inerf_detector: str = option("sift", "keypoint detector for interest_points / interest_regions sampling "
                                         "(iNeRF: SIFT)", choices=DETECTORS)
    inerf_min_keypoints: int = option(8, "fewer keypoints than this in a query -> sample its rays uniformly "
                                         "(random)")
    inerf_converge_deg: float = option(0.0, "a query stops refining once its camera moved less than this many "
                                            "degrees (rotation, or its centre as seen from the object's) over the "
                                            "last inerf_converge_window steps, checked once the step size decays "
                                            "(after inerf_lr_hold); its rays are no longer rendered (0 = every "
                                            "query runs every step)")
    inerf_converge_window: int = option(10, "steps between two checks of inerf_converge_deg")
    inerf_rerun_factor: float = option(2.0, "a query whose final loss is above this many times the median final "
                                            "loss of the queries refined with it is refined once more, from where "
                                            "it stopped, with the whole step-size schedule; the lower loss is kept "
                                            "(0 = never)")
    inerf_march_samples: int = option(0, "with an occupancy grid: the coarse march of iNeRF's rays (0 = the "
                                         "training march, occupancy_samples); a coarser march costs fewer grid "
                                         "lookups and field evaluations per ray")
    inerf_chunk: int = option(16384, "max rays per render call during refinement: the batch's queries are split "
                                     "into near-equal groups, gradients accumulated (0 = all in one call). Bounds "
                                     "activation memory: the default 8x256 NeRF keeps roughly 0.5-1 MB per ray "
                                     "for backward")

    def validated(self) -> InerfOptions:
        require(self.inerf_steps >= 0, f"inerf_steps must be >= 0, got {self.inerf_steps}")
        for name in ("inerf_rays", "inerf_batch", "inerf_topk_restarts", "inerf_lr_decay_every"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(self.inerf_start_rays >= 0, f"inerf_start_rays must be >= 0, got {self.inerf_start_rays}")
        require(self.inerf_chunk >= 0, f"inerf_chunk must be >= 0, got {self.inerf_chunk}")
        require(self.inerf_converge_deg >= 0, f"inerf_converge_deg must be >= 0, got {self.inerf_converge_deg}")
        require(self.inerf_rerun_factor >= 0, f"inerf_rerun_factor must be >= 0, got {self.inerf_rerun_factor}")
        require(self.inerf_converge_window >= 1,
                f"inerf_converge_window must be >= 1, got {self.inerf_converge_window}")
        require(self.inerf_march_samples == 0 or self.inerf_march_samples >= 2,
                f"inerf_march_samples must be 0 (= the training march) or >= 2, got {self.inerf_march_samples}")
        require(self.inerf_lr_hold >= 0, f"inerf_lr_hold must be >= 0, got {self.inerf_lr_hold}")
        require(self.inerf_lr > 0, f"inerf_lr must be > 0, got {self.inerf_lr}")
        require(self.inerf_restart_min_angle >= 0,
                f"inerf_restart_min_angle must be >= 0, got {self.inerf_restart_min_angle}")
        require(self.inerf_retry_factor >= 0, f"inerf_retry_factor must be >= 0, got {self.inerf_retry_factor}")
        require(0 <= self.pose_confidence_trim < 1,
                f"pose_confidence_trim must be in [0, 1), got {self.pose_confidence_trim}")
        require(self.pose_unsure_factor > 0, f"pose_unsure_factor must be > 0, got {self.pose_unsure_factor}")
        for name in ("pose_calibration_views", "fallback_positions", "fallback_size", "fallback_refine"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(len(self.fallback_rolls) >= 1, "fallback_rolls needs at least one roll (0 = upright)")
        require(0 < self.inerf_restart_fraction <= 1,
                f"inerf_restart_fraction must be in (0, 1], got {self.inerf_restart_fraction}")
        require(self.pose_polish_steps >= 0, f"pose_polish_steps must be >= 0, got {self.pose_polish_steps}")
        require(self.pose_polish_views >= 1, f"pose_polish_views must be >= 1, got {self.pose_polish_views}")
        require(self.pose_polish_points >= 1, f"pose_polish_points must be >= 1, got {self.pose_polish_points}")
        require(0 < self.pose_polish_keep <= 1, f"pose_polish_keep must be in (0, 1], got {self.pose_polish_keep}")
        require(self.pose_polish_lr > 0, f"pose_polish_lr must be > 0, got {self.pose_polish_lr}")
        return self
