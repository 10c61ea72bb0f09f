"""Coarse-to-fine pose of query images: nearest training views by retrieval, then iNeRF refinement.

Restarts (`inerf_topk_restarts = k > 1`): iNeRF starts from k retrieved training views and the result
with the lowest photometric loss is kept; k = 1 is the paper's method. The k starts are retrieval's
nearest views, skipping any within `inerf_restart_min_angle` degrees of one already chosen, so that
they cover distinct views: on near-symmetric objects the nearest views can all sit on the wrong side,
and a refinement that starts there renders the wrong side (a huge false anomaly). With
`inerf_restart_fraction = f` every start runs f * inerf_steps steps, then only each query's best continues
for the remaining steps (its learning-rate schedule carries on where it stopped); `inerf_start_rays` (when
set) is the ray count of those first steps and of the retry's.

Retry (`inerf_retry_factor = r > 0`, with k > 1): a query whose best loss after those first steps is above r
times the median best loss of the queries refined together has most likely started on the wrong side
from every start (a wrong-side pose keeps a loss several times the usual one); it gets k more starts,
retrieval's nearest views at least `inerf_restart_min_angle` from every start tried so far, and the best
of all its starts continues. Only such queries pay for the retry; a call with one query never retries.

Rerun (`inerf_rerun_factor = f > 0`): a query whose final loss is above f times the median final loss of the
queries refined together ran out of steps on its way in (a slow descent from a far start, unlucky rays): on
an anomaly-free image of seed 1 at 400 px such a pose ended 5.4 degrees off with a final loss 5x the batch's,
and with the worst-fitting rays left out its loss looked like a converged one's. It is refined once more
from where it stopped, with the whole schedule again, and the lower loss of the two is kept. A defect
raises the loss too, so some correct poses are refined twice; that costs steps, never the pose.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from common.errors import DataError
from common.progress import progress_bar
from common.rotations import rotation_error_deg
from inerf.optimize import refine_poses
from inerf.options import InerfOptions


@dataclass
class PoseEstimate:
    """The pose of one query: where retrieval started it and where iNeRF ended."""
    coarse_pose: np.ndarray        # [4,4] float32: the nearest training view's pose
    refined_pose: np.ndarray       # [4,4] float32: after iNeRF
    retrieval_index: int           # training view of the coarse pose
    retrieval_distance: float      # its squared descriptor distance
    topk_indices: list[int]        # the max(retrieval_topk, inerf_topk_restarts) nearest training views
    topk_distances: list[float]
    start_indices: list[int]       # the training views iNeRF started from, nearest first
    restart_rank: int              # which of them won (0 = the nearest)
    start_pose: np.ndarray         # [4,4] the winning refinement's start
    initial_loss: float            # photometric MSE at the start (fixed evaluation pixels)
    final_loss: float              # and at the refined pose
    loss_curve: np.ndarray         # [steps] MSE before each step's update
    sampling: str                  # ray sampling strategy actually used
    fallback_tried: bool = False   # the loss was above the unsure threshold: the global search ran
    fallback_used: bool = False    # and its pose (lower loss) replaced the refined one
    rerun: bool = False            # its loss stood out (inerf_rerun_factor): refined once more
    rerun_used: bool = False       # and the rerun's pose (lower loss) was kept
    confidence_loss: float | None = None  # final loss without the worst-fitting rays (pose_confidence_trim)
    loss_ratio: float | None = None  # confidence_loss / the calibrated unsure threshold (None: not calibrated)
    work_rays: int = 0             # rays rendered for this pose by iNeRF, over every start, retry and fallback
    work_samples: int = 0          # the field evaluations (MLP samples) those rays cost
    polish_loss: tuple[float, float] | None = None  # the photometric polish's loss before and after (None: off)

    @property
    def unsure(self) -> bool:
        """The final loss is above what this NeRF reaches on correct poses (inerf.global_search)."""
        return self.loss_ratio is not None and self.loss_ratio > 1.0

    def record(self) -> dict:
        """The JSON-ready fields the pipeline writes per image."""
        return {
            "coarse_pose": np.asarray(self.coarse_pose).tolist(),
            "refined_pose": np.asarray(self.refined_pose).tolist(),
            "retrieval_index": int(self.retrieval_index),
            "retrieval_distance": float(self.retrieval_distance),
            "inerf_start_index": int(self.start_indices[self.restart_rank]),
            "inerf_restart_rank": int(self.restart_rank),
            "inerf_final_loss": float(self.final_loss),
            "pose_confidence_loss": None if self.confidence_loss is None else float(self.confidence_loss),
            "pose_loss_ratio": None if self.loss_ratio is None else float(self.loss_ratio),
            "pose_unsure": bool(self.unsure),
            "pose_fallback_tried": bool(self.fallback_tried),
            "pose_fallback_used": bool(self.fallback_used),
            "pose_rerun": bool(self.rerun),
            "pose_rerun_used": bool(self.rerun_used),
            "pose_work_rays": int(self.work_rays),
            "pose_work_samples": int(self.work_samples),
            "pose_polish_loss": None if self.polish_loss is None else [float(x) for x in self.polish_loss],
        }


def restart_starts(ranked: np.ndarray, view_angles: np.ndarray, k: int, min_angle_deg: float) -> list[int]:
    """Up to k positions in `ranked` (training views, nearest first) to start iNeRF from: the nearest, then
    each next view at least `min_angle_deg` (camera rotation, `view_angles [N, N]` degrees) from every one
    already chosen; when fewer than k views are that far apart, the nearest remaining ones fill up."""
    position = {int(view): pos for pos, view in enumerate(ranked)}
    chosen = [position[view] for view in further_starts(ranked, view_angles, [], k, min_angle_deg)]
    rest = [pos for pos in range(len(ranked)) if pos not in chosen]
    return sorted(chosen + rest[:max(0, k - len(chosen))])


def further_starts(ranked: np.ndarray, view_angles: np.ndarray, tried: list[int], k: int,
                   min_angle_deg: float) -> list[int]:
    """Up to k more training views to start from (nearest first in `ranked`), each at least `min_angle_deg`
    from every view in `tried` and from each other; fewer when the views run out."""
    chosen: list[int] = []
    for view in ranked:
        if len(chosen) == k:
            break
        if all(view_angles[view, t] >= min_angle_deg for t in list(tried) + chosen):
            chosen.append(int(view))
    return chosen


def queries_to_retry(losses: dict[int, float], factor: float) -> list[int]:
    """The queries whose loss exceeds `factor` times the median loss of them all (none for fewer than 2): the
    retry's (best loss after the first steps) and the rerun's (final loss)."""
    if factor <= 0 or len(losses) < 2:
        return []
    median = float(np.median(list(losses.values())))
    return sorted(q for q, loss in losses.items() if loss > factor * median)


def _refine_jobs(renderer, images, starts, jobs, intrinsics, opts, device, seed, *, steps, first_step, bar) -> list:
    """Refine `jobs` [(query, key of its start pose in `starts`)] in batches of opts.inerf_batch; one
    (PoseRefinement, row) per job."""
    out = []
    for begin in range(0, len(jobs), opts.inerf_batch):
        chunk = jobs[begin:begin + opts.inerf_batch]
        result = refine_poses(renderer, images[[q for q, _ in chunk]], np.stack([starts[j] for _, j in chunk]),
                              intrinsics, opts, device, seed=seed, steps=steps, first_step=first_step,
                              on_step=bar.update)
        out.extend((result, row) for row in range(len(chunk)))
    return out


def work_of(refinements) -> tuple[int, int]:
    """(rays, field evaluations) summed over `refinements` [(PoseRefinement, row)]: a query's iNeRF work."""
    return (sum(int(r.rays[i]) for r, i in refinements), sum(int(r.samples[i]) for r, i in refinements))


def _starts_of(jobs, q: int) -> list[int]:
    """The training views query q was started from, in job order."""
    return [view for qq, view in jobs if qq == q]


def _loss(job_result) -> float:
    result, row = job_result
    return float(result.final_loss[row])


def _pose(job_result) -> np.ndarray:
    result, row = job_result
    return result.poses[row]


def _best_jobs(jobs, results) -> dict[int, int]:
    """query -> index of its job with the lowest loss."""
    best: dict[int, int] = {}
    for j, (q, _) in enumerate(jobs):
        if q not in best or _loss(results[j]) < _loss(results[best[q]]):
            best[q] = j
    return best


def estimate_poses(renderer, database, train_views, images, opts: InerfOptions, device, *, retrieval_topk: int = 1,
                   seed: int = 0, progress: bool = True) -> list[PoseEstimate]:
    """Coarse (retrieval) + fine (iNeRF) pose of every query image.

    images: [N,H,W,3] float in [0,1] (or a list of [H,W,3]) at the training resolution.
    database: anything with `query(images, k) -> (indices [N,k], distances [N,k])` (retrieval.database).
    A bar (progress=True) advances with every iNeRF step.
    """
    images = np.stack([np.asarray(im, dtype=np.float32) for im in images]) if len(images) else np.zeros((0,))
    if len(images) == 0:
        return []
    h, w = images.shape[1:3]
    if (h, w) != (train_views.height, train_views.width):
        raise DataError(f"query images are {h}x{w} but the training views (and the NeRF) are "
                        f"{train_views.height}x{train_views.width}; load both with the same downscale")
    train_poses = np.asarray(train_views.poses, dtype=np.float32)
    k = opts.inerf_topk_restarts
    ranked_idx, ranked_dist = database.query(images, k=len(train_poses) if k > 1 else retrieval_topk)
    view_angles = rotation_error_deg(train_poses[:, None], train_poses[None]) if k > 1 else None
    positions = [restart_starts(ranked_idx[q], view_angles, k, opts.inerf_restart_min_angle) if k > 1 else [0]
                 for q in range(len(images))]
    jobs = [(q, int(ranked_idx[q, pos])) for q in range(len(images)) for pos in positions[q]]

    steps = opts.inerf_steps
    first = round(opts.inerf_restart_fraction * steps) if k > 1 else steps
    first = first if 0 < first < steps else steps
    # the starts' own ray count, only where a best start continues with inerf_rays (its final loss is then the
    # one every later decision reads: the rerun, the pose confidence)
    start_opts = replace(opts, inerf_rays=opts.inerf_start_rays) if opts.inerf_start_rays and first < steps else opts
    batches = -(-len(jobs) // opts.inerf_batch)
    total = batches * first + (-(-len(images) // opts.inerf_batch)) * (steps - first)
    with progress_bar(total=total, desc=f"iNeRF ({len(images)} queries x {k} starts)", unit="step", leave=False,
                      disable=not progress) as bar:
        results = _refine_jobs(renderer, images, train_poses, jobs, train_views.intrinsics, start_opts, device,
                               seed, steps=first, first_step=0, bar=bar)
        best = _best_jobs(jobs, results)
        retry = queries_to_retry({q: _loss(results[j]) for q, j in best.items()}, opts.inerf_retry_factor) \
            if k > 1 else []
        extra = [(q, v) for q in retry
                 for v in further_starts(ranked_idx[q], view_angles, _starts_of(jobs, q), k,
                                         opts.inerf_restart_min_angle)]
        if extra:
            bar.total += -(-len(extra) // opts.inerf_batch) * first
            bar.set_description(f"iNeRF ({len(images)} queries x {k} starts, {len(retry)} retried)")
            results += _refine_jobs(renderer, images, train_poses, extra, train_views.intrinsics, start_opts,
                                    device, seed, steps=first, first_step=0, bar=bar)
            jobs += extra
            best = _best_jobs(jobs, results)
        finals = {}
        if first < steps:                                         # only each query's best start continues
            refined = {q: _pose(results[j]) for q, j in best.items()}
            order = sorted(best)
            tail = _refine_jobs(renderer, images, refined, [(q, q) for q in order], train_views.intrinsics, opts,
                                device, seed, steps=steps - first, first_step=first, bar=bar)
            finals = dict(zip(order, tail, strict=True))
        # each query's refinement so far: its best start's run, then that run's continuation when there is one
        chain = {q: [results[j]] + ([finals[q]] if q in finals else []) for q, j in best.items()}
        rerun = queries_to_retry({q: _loss(runs[-1]) for q, runs in chain.items()}, opts.inerf_rerun_factor)
        reruns = {}
        if rerun:
            bar.total += -(-len(rerun) // opts.inerf_batch) * steps
            stopped_at = {q: _pose(chain[q][-1]) for q in rerun}
            again = _refine_jobs(renderer, images, stopped_at, [(q, q) for q in rerun], train_views.intrinsics,
                                 opts, device, seed, steps=steps, first_step=0, bar=bar)
            reruns = dict(zip(rerun, again, strict=True))

    out = []
    n_top = max(retrieval_topk, k)
    for q in range(len(images)):
        j = best[q]
        start_index = jobs[j][1]
        head, row = results[j]
        rerun_used = q in reruns and _loss(reruns[q]) < _loss(chain[q][-1])
        runs = chain[q] + ([reruns[q]] if rerun_used else [])
        last, last_row = runs[-1]
        curve = np.concatenate([r.loss_curves[i] for r, i in runs])
        starts = _starts_of(jobs, q)
        rays, samples = work_of([results[j] for j, (qq, _) in enumerate(jobs) if qq == q]   # every start's
                                + chain[q][1:] + ([reruns[q]] if q in reruns else []))
        out.append(PoseEstimate(
            coarse_pose=train_poses[ranked_idx[q, 0]].copy(),
            refined_pose=last.poses[last_row],
            retrieval_index=int(ranked_idx[q, 0]),
            retrieval_distance=float(ranked_dist[q, 0]),
            topk_indices=[int(i) for i in ranked_idx[q, :n_top]],
            topk_distances=[float(d) for d in ranked_dist[q, :n_top]],
            start_indices=starts,
            restart_rank=starts.index(start_index),
            start_pose=train_poses[start_index].copy(),
            initial_loss=float(head.initial_loss[row]),
            final_loss=float(last.final_loss[last_row]),
            confidence_loss=float(last.final_trimmed[last_row]),
            loss_curve=curve,
            sampling=head.sampling[row],
            rerun=q in reruns,
            rerun_used=rerun_used,
            work_rays=rays,
            work_samples=samples,
        ))
    return out
