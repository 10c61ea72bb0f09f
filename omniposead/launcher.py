"""Many classes at once: one job per class through submitit, on this machine (`launcher = local`) or on a
SLURM cluster (`launcher = slurm`); `inline` (default) runs the classes one after another in this process.

Each class job runs the entry point for that one class (train if needed, poses, maps, metrics) and keeps
its state in <jobs_dir>/<class>.json: pending / running / done / failed, with its log and, for a failure,
the error line. A failing class never stops the others; the same command again resubmits only the classes
that are not done. A job that SLURM preempts or times out is requeued by submitit (USR2 -> checkpoint ->
requeue) and, like a job requeued from outside (`scontrol requeue`), continues from the class's NeRF
checkpoint and the maps already written (the runs resume exactly from disk). When every job has ended the
class table is written (all_classes.md / .csv under <output_root>/<dataset>) with the missing classes
and why.

    python -m omniposead.launcher --config CFG [--class_name all] [--entry train_nerf]   # status of each job
"""
from __future__ import annotations

import csv
import importlib
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common.errors import ConfigError, DataError
from common.io import atomic_write, write_json
from evaluation.report import TABLE_KEYS, results_table
from omniposead.classes import ClassOutcome, class_names, summary_table
from omniposead.config import LauncherOptions, OmniposeConfig, build_parser

PROJECT_ROOT = Path(__file__).resolve().parents[1]    # on the jobs' PYTHONPATH, wherever they start
# SLURM job states (sacct / squeue) in which the job may still run again: it is not over
SLURM_ACTIVE = frozenset({"READY", "PENDING", "RUNNING", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING",
                          "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD",
                          "REQUEUE_FED", "RESV_DEL_HOLD"})
FINAL = ("done", "failed")
# The entry points that launch class jobs.
ENTRIES = ("anomaly_nerf_lego", "train_nerf", "auroc_test", "benchmarks.bench_baselines")


def jobs_dir(cfg: OmniposeConfig) -> Path:
    return Path(cfg.launcher.jobs_dir) if cfg.launcher.jobs_dir else cfg.run.dataset_output_dir / "jobs"


def read_state(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"class": name, "state": "not submitted"}


def write_state(folder: Path, name: str, **fields) -> None:
    write_json(folder / f"{name}.json", {**read_state(folder, name), "class": name, **fields,
                                         "updated": time.strftime("%Y-%m-%d %H:%M:%S")})


class _ErrorLine(io.TextIOBase):
    """stderr that remembers the last `error: ...` line written through it."""

    def __init__(self, stream):
        self.stream, self.last = stream, None

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith("error:"):
                self.last = line
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("launcher = local | slurm needs submitit: pip install -r requirements.txt") from None
    return submitit


class ClassJob:
    """One class through an entry point (`module.main(argv)`), as a submitit job. Checkpointable: on
    preemption or time-out submitit calls `checkpoint`, which requeues the same call; the run then resumes
    from the class's checkpoints and maps on disk."""

    def __call__(self, entry: str, argv: list[str], name: str, state_dir: str, gpu: int | None = None) -> float:
        folder = Path(state_dir)
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        write_state(folder, name, state="running", started=time.time(), error=None, **_job_info())
        errors = _ErrorLine(sys.stderr)
        start, sys.stderr = time.perf_counter(), errors
        try:
            code = importlib.import_module(entry).main([*argv, "--class_name", name, "--launcher", "inline"])
        except SystemExit as exit_:
            if exit_.code == -1:        # submitit's preemption handler: checkpointed and requeued, not failed
                write_state(folder, name, state="pending", error=None, requeued=read_state(folder, name)
                            .get("requeued", 0) + 1)
                raise
            code = exit_.code
        except Exception as err:
            write_state(folder, name, state="failed", error=f"{type(err).__name__}: {err}")
            raise
        finally:
            sys.stderr = errors.stream
        seconds = time.perf_counter() - start
        if code:
            write_state(folder, name, state="failed", seconds=seconds,
                        error=errors.last or f"{entry} exited with code {code}")
            raise RuntimeError(errors.last or f"{entry} exited with code {code}")
        write_state(folder, name, state="done", seconds=seconds, error=None)
        return seconds

    def checkpoint(self, *args, **kwargs):
        submitit = _submitit()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _job_info() -> dict:
    return {"job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
            "host": os.uname().nodename, "restarts": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def _executor(opts: LauncherOptions, folder: Path):
    submitit = _submitit()
    # job logs are files: their progress bars redraw every 10 s by themselves (common.progress)
    setup = [f"export PYTHONPATH={PROJECT_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"]
    if opts.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.job_timeout_min, setup=setup)
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    extra = dict(item.split("=", 1) if "=" in item else (item, "") for item in opts.slurm_extra.split())
    executor.update_parameters(
        timeout_min=opts.job_timeout_min, gpus_per_node=opts.slurm_gpus, cpus_per_task=opts.slurm_cpus,
        mem_gb=opts.slurm_mem_gb, slurm_partition=opts.slurm_partition or None, name="omniposead",
        slurm_setup=setup,
        slurm_array_parallelism=opts.max_jobs or 64,
        slurm_additional_parameters={k.lstrip("-"): v for k, v in extra.items()})
    return executor


def _slots(opts: LauncherOptions) -> list[int | None]:
    """Local job slots: one per visible GPU (max_jobs at most), else max_jobs (default 1) CPU slots."""
    import torch

    gpus = list(range(torch.cuda.device_count()))
    if gpus:
        return gpus[:opts.max_jobs] if opts.max_jobs else gpus
    return [None] * max(opts.max_jobs, 1)


def launch(cfg: OmniposeConfig, entry: str, argv: Sequence[str], what: str = "", table: bool = True) \
        -> list[ClassOutcome]:
    """Run the entry point module `entry` once per class as jobs (its states under <jobs_dir>/<entry>); wait
    for all; the outcomes, from the state files; with `table`, the class table."""
    names = class_names(cfg.run.data_root, cfg.run.class_name)
    folder = jobs_dir(cfg) / entry
    folder.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if read_state(folder, n).get("state") != "done"]
    if len(todo) < len(names):
        print(f"{len(names) - len(todo)} of {len(names)} classes already done: submitting {len(todo)}")
    executor = _executor(cfg.launcher, folder / "submitit")
    for name in todo:
        write_state(folder, name, state="pending", error=None)
    jobs = []
    if cfg.launcher.launcher == "slurm":
        with executor.batch():
            jobs = [(name, executor.submit(ClassJob(), entry, list(argv), name, str(folder))) for name in todo]
        for name, job in jobs:
            write_state(folder, name, job_id=job.job_id, log=str(job.paths.stderr))
        while not all(slurm_job_over(job, read_state(folder, name).get("state")) for name, job in jobs):
            time.sleep(cfg.launcher.poll_seconds)
    else:
        free, running, queue = _slots(cfg.launcher), [], list(todo)
        while queue or running:
            while queue and free:
                name, slot = queue.pop(0), free.pop(0)
                job = executor.submit(ClassJob(), entry, list(argv), name, str(folder), slot)
                write_state(folder, name, job_id=job.job_id, log=str(job.paths.stderr))
                running.append((job, slot))
            time.sleep(cfg.launcher.poll_seconds if running else 0)
            for job, slot in [r for r in running if r[0].done()]:
                running.remove((job, slot))
                free.append(slot)
    outcomes = []
    for name in names:
        state = read_state(folder, name)
        if state.get("state") not in FINAL:      # ended without saying so (killed, lost)
            write_state(folder, name, state="failed", error=state.get("error") or "the job ended without a result")
            state = read_state(folder, name)
        outcomes.append(ClassOutcome(name, state, state.get("error"), float(state.get("seconds") or 0.0)))
    print(summary_table(outcomes, what))
    if table:
        write_class_table(cfg, outcomes)
    return outcomes


def slurm_job_over(job, class_state: str | None) -> bool:
    """Whether a SLURM class job has ended for good. submitit's `done()` alone is not enough: a job requeued
    from outside (`scontrol requeue`, preemption) keeps the result file of its earlier run and may even have
    written its class's outcome, while SLURM runs it again. So once either the class state or submitit says
    it ended, SLURM is asked (one forced query) and the job is over only when SLURM holds no further run."""
    if class_state not in FINAL and not job.done():
        return False
    return job.watcher.get_state(job.job_id, mode="force").upper() not in SLURM_ACTIVE


def pose_median_deg(cfg: OmniposeConfig, name: str) -> float | None:
    """Median rotation error (degrees) of the poses the pipeline refined for class `name`, when the class has
    true test poses (generated classes; MAD has none); None otherwise."""
    from mad.layout import TEST_POSES_FILE
    from omniposead.pose_accuracy import estimates_from_outputs, load_test_poses, pose_errors

    class_cfg = cfg.for_class(name)
    if not (class_cfg.run.class_dir / TEST_POSES_FILE).is_file():
        return None
    try:
        truth = load_test_poses(class_cfg.run.class_dir)
        estimates, _ = estimates_from_outputs(class_cfg, list(truth))
    except DataError:
        return None
    refined = pose_errors(estimates, truth)["stages"]["iNeRF"]
    return refined.get("rot_median_deg")


TABLE_EXTRA = (("pose_median_deg", "pose error, median (deg)", ".2f"), ("seconds", "s per class", ".1f"),
               ("seconds_per_query", "s per query", ".2f"))


def write_class_table(cfg: OmniposeConfig, outcomes: list[ClassOutcome]) -> Path:
    """all_classes.md / .csv: per class pixel / image AUROC, AUPRO, median pose error (when true poses exist),
    wall time per class and per query, a mean row, and the missing classes with why."""
    rows, missing = [], []
    for o in outcomes:
        metrics_path = cfg.run.for_class(o.name).output_dir / "metrics.json"
        if o.ok and metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            rows.append({"class": o.name, **{k: metrics.get(k) for k in TABLE_KEYS},
                         "pose_median_deg": pose_median_deg(cfg, o.name),
                         "seconds": o.seconds, "seconds_per_query": o.seconds / max(metrics["n_images"], 1)})
        else:
            missing.append((o.name, o.error or "no metrics.json (evaluate = false?)"))
    text = results_table(rows, TABLE_EXTRA)
    if missing:
        text += "\nMissing: " + "; ".join(f"{name} ({why})" for name, why in missing) + "\n"
    out = cfg.run.dataset_output_dir / "all_classes"
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    columns = ("pixel_auroc", "image_auroc", "pixel_aupro", "pose_median_deg", "seconds", "seconds_per_query")

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", *columns, "status"])
            for r in rows:
                writer.writerow([r["class"], *("" if r[c] is None else r[c] for c in columns), "done"])
            for name, why in missing:
                writer.writerow([name, *[""] * len(columns), f"missing: {why}"])
    atomic_write(out.with_suffix(".csv"), write_csv)
    print(text, end="")
    print(f"wrote {out}.md and .csv")
    return out


def status_lines(cfg: OmniposeConfig, entry: str) -> list[str]:
    folder = jobs_dir(cfg) / entry
    lines = [f"jobs in {folder}", "| class | state | restarts | log | error |", "|---|---|---:|---|---|"]
    for name in class_names(cfg.run.data_root, cfg.run.class_name):
        s = read_state(folder, name)
        lines.append(f"| {name} | {s.get('state')} | {s.get('restarts') or 0} | {s.get('log') or ''} | "
                     f"{s.get('error') or ''} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("Status of the class jobs")
    parser.add_argument("--entry", default="anomaly_nerf_lego", choices=ENTRIES,
                        help="whose jobs: the pipeline's or the NeRF training's")
    namespace = parser.parse_args(argv)
    print("\n".join(status_lines(OmniposeConfig.from_namespace(namespace), namespace.entry)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
