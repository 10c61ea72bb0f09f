"""The launcher on a real SLURM: three tiny copies of one synthetic class with `launcher = slurm`, one job
preempted mid-training through submitit's checkpoint-and-requeue (SIGTERM + USR2, `job._interrupt()`), one
requeued from outside (`scontrol requeue`: it restarts from its submission, carried only by the run's own
checkpoints on disk); then checks that all three finish, that both interrupted classes end with exactly the
metrics of the uninterrupted copy, and that the class table has three rows. Every wait is bounded.
Needs a running SLURM (benchmarks/slurm_check.sh starts one); prints a pass/fail summary, exit 0 = pass.

    python -m benchmarks.slurm_check --work /tmp/slurm_run
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from mad.options import SynthOptions
from mad.synth.generate import generate_class
from nerf.checkpoint import checkpoint_path
from omniposead.launcher import read_state

CLASSES = ("c0_usr2", "c1_scontrol", "c2_plain")
N_ITERS = 1500         # long enough that an interrupted run is killed before it finishes its NeRF
RECIPE = ["--netdepth", "2", "--netwidth", "32", "--skips", "--multires", "4", "--multires_views", "2",
          "--N_samples", "16", "--N_importance", "0", "--N_rand", "128", "--lrate", "5e-3", "--n_iters", str(N_ITERS),
          "--i_val", "100000", "--i_weights", "20", "--holdout_every", "4", "--seed", "0", "--retrieval_size", "32",
          "--desc_dim", "8", "--inerf_steps", "10", "--inerf_rays", "64", "--inerf_batch", "4", "--score_sigma", "1",
          "--image_score_pool", "4", "--n_qualitative", "1", "--save_overlays", "false", "--device", "cpu"]
SLURM = ["--launcher", "slurm", "--slurm_gpus", "0", "--slurm_cpus", "1", "--slurm_mem_gb", "2",
         "--job_timeout_min", "60", "--poll_seconds", "2"]


def wait_for(what: str, condition, seconds: float, poll: float = 1.0):
    """condition() until truthy, at most `seconds`; RuntimeError naming `what` otherwise."""
    end = time.time() + seconds
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise RuntimeError(f"timed out after {seconds:.0f} s waiting for {what}")


def trained_step(ckpt_root: Path, name: str) -> int:
    """The step of a class's saved NeRF checkpoint (0 when none), read without loading tensors to the GPU."""
    import torch

    path = checkpoint_path(ckpt_root / "synthetic" / name)
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return 0


class RestartWatch(threading.Thread):
    """Notes, for each class, the step its NeRF checkpoint holds when SLURM first runs it again (the state
    file's `restarts`, from SLURM_RESTART_COUNT): the step the new run resumes from. Watches from the start,
    so a restart is seen however early it comes."""

    def __init__(self, jobs: Path, ckpt: Path, names):
        super().__init__(daemon=True)
        self.jobs, self.ckpt, self.names, self.at = jobs, ckpt, list(names), {}
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set() and len(self.at) < len(self.names):
            for name in self.names:
                if name not in self.at and (read_state(self.jobs, name).get("restarts") or 0) >= 1:
                    self.at[name] = trained_step(self.ckpt, name)
            self.stopped.wait(0.25)


def metrics_of(out_root: Path, name: str) -> dict:
    m = json.loads((out_root / "synthetic" / name / "metrics.json").read_text())
    return {k: m[k] for k in ("pixel_auroc", "image_auroc", "pixel_aupro")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder for data, checkpoints, maps and jobs")
    args = p.parse_args(argv)
    data, ckpt, out = args.work / "synthetic", args.work / "ck", args.work / "out"
    shutil.rmtree(args.work, ignore_errors=True)
    generate_class(data, CLASSES[0], SynthOptions(synth_seed=0, synth_size=32, synth_n_train=12, synth_n_test_good=2,
                                                  synth_n_test_defect=1, synth_supersample=2, synth_workers=1),
                   progress=False)
    for name in CLASSES[1:]:
        shutil.copytree(data / CLASSES[0], data / name)
    flags = ["--data_root", str(data), "--class_name", "all", "--ckpt_root", str(ckpt), "--output_root", str(out),
             *RECIPE, *SLURM]
    root = Path(__file__).resolve().parents[1]
    launcher = subprocess.Popen([sys.executable, str(root / "anomaly_nerf_lego.py"), *flags], cwd=root)
    jobs = out / "synthetic" / "jobs" / "anomaly_nerf_lego"
    checks: list[tuple[str, bool, str]] = []
    watch = RestartWatch(jobs, ckpt, CLASSES[:2])
    watch.start()
    try:
        import submitit

        # 1. submitit's own preemption (SIGTERM + USR2 -> checkpoint -> requeue) of the first class mid-training
        job_id = wait_for("the first class to train", lambda: trained_step(ckpt, CLASSES[0]) >= 40 and
                          read_state(jobs, CLASSES[0]).get("job_id"), 300)
        step = trained_step(ckpt, CLASSES[0])
        submitit.SlurmJob(folder=jobs / "submitit", job_id=job_id)._interrupt()
        print(f"slurm_check: preempted {CLASSES[0]} (job {job_id}) at step {step} of {N_ITERS} (USR2)", flush=True)
        # 2. a requeue from outside, of the second class mid-training
        job_id = wait_for("the second class to train", lambda: trained_step(ckpt, CLASSES[1]) >= 40 and
                          read_state(jobs, CLASSES[1]).get("job_id"), 300)
        step = trained_step(ckpt, CLASSES[1])
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        print(f"slurm_check: requeued {CLASSES[1]} (job {job_id}) at step {step} of {N_ITERS} (scontrol)", flush=True)
        # 3. each interrupted class runs again: the step its NeRF checkpoint holds when the new run starts
        wait_for("both interrupted classes to run again", lambda: len(watch.at) == 2, 300, poll=0.5)
        for name, step in sorted(watch.at.items()):
            print(f"slurm_check: {name} runs again from its checkpoint at step {step} of {N_ITERS}", flush=True)
        code = launcher.wait(timeout=600)
    except Exception as err:  # noqa: BLE001 - reported as a failed check
        launcher.kill()
        checks.append(("the run", False, f"{type(err).__name__}: {err}"))
        code = None
    watch.stopped.set()
    resumed_at = dict(watch.at)
    states = {name: read_state(jobs, name).get("state") for name in CLASSES}
    checks.append(("3 of 3 classes done", all(s == "done" for s in states.values()) and code == 0,
                   f"states {states}, launcher exit code {code}"))
    reference = metrics_of(out, CLASSES[2]) if states[CLASSES[2]] == "done" else None
    for name in CLASSES[:2]:
        restarts, step = read_state(jobs, name).get("restarts") or 0, resumed_at.get(name)
        checks.append((f"{name} ran again mid-training, from its checkpoint", restarts >= 1 and step is not None
                       and 0 < step < N_ITERS, f"SLURM restarts: {restarts}, resumed at step {step} of {N_ITERS}"))
        got = metrics_of(out, name) if states[name] == "done" else None
        checks.append((f"{name} metrics equal the uninterrupted run's", got is not None and got == reference,
                       f"{got} vs {reference}"))
    table = out / "synthetic" / "all_classes.csv"
    rows = list(csv.DictReader(table.read_text().splitlines())) if table.is_file() else []
    checks.append(("table with 3 rows", len(rows) == 3 and all(r["status"] == "done" for r in rows),
                   f"{len(rows)} rows in {table}"))
    for what, ok, detail in checks:
        print(f"slurm_check: {'PASS' if ok else 'FAIL'}: {what} ({detail})")
    passed = all(ok for _, ok, _ in checks)
    if not passed:                  # what a failure on a CI machine needs to be understood: each job's log
        for log in sorted((jobs / "submitit").glob("*_log.*")):
            lines = [line for line in log.read_text(errors="replace").splitlines() if "it/s" not in line]
            print(f"--- {log.name} (last 15 lines)", *lines[-15:], sep="\n")
    print(f"slurm_check: {'PASSED' if passed else 'FAILED'} ({sum(ok for _, ok, _ in checks)} of {len(checks)} checks)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
