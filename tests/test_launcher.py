"""The local launcher (submitit): one job per class, a broken class fails alone with its error line, the
table names it, a rerun resubmits only what is not done, and the status command shows each class."""
import csv
import json
import shutil

import pytest

import anomaly_nerf_lego
import auroc_test
from omniposead import launcher
from tests.conftest import TINY_CLASS
from tests.test_reliability import PIPELINE_TINY

pytest.importorskip("submitit")


@pytest.mark.slow
def test_local_launcher_runs_each_class_and_survives_a_broken_one(tiny_data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)          # jobs start in the submitting folder; they find the project anyway
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_data_root / TINY_CLASS, data_root / "a_good")
    shutil.copytree(tiny_data_root / TINY_CLASS, data_root / "b_broken")
    (data_root / "b_broken" / "transforms.json").write_text("{not json")
    args = ["--data_root", str(data_root), "--class_name", "all", "--ckpt_root", str(tmp_path / "ck"),
            "--output_root", str(tmp_path / "out"), *PIPELINE_TINY, "--launcher", "local", "--poll_seconds", "0.5",
            "--device", "cpu"]
    assert anomaly_nerf_lego.main(args) == 1
    out = capsys.readouterr().out
    assert "| a_good | done |" in out and "| b_broken | FAILED |" in out
    jobs = tmp_path / "out" / "synthetic" / "jobs" / "anomaly_nerf_lego"
    good, broken = (json.loads((jobs / f"{n}.json").read_text()) for n in ("a_good", "b_broken"))
    assert good["state"] == "done" and good["seconds"] > 0 and good["log"]
    assert broken["state"] == "failed" and "transforms.json" in broken["error"] and broken["error"].startswith("error:")
    rows = list(csv.reader((tmp_path / "out" / "synthetic" / "all_classes.csv").read_text().splitlines()))
    assert rows[1][0] == "a_good" and rows[1][-1] == "done" and 0 <= float(rows[1][2]) <= 1
    assert rows[0][4] == "pose_median_deg" and 0 <= float(rows[1][4]) <= 180   # a generated class has true poses
    assert rows[2][0] == "b_broken" and rows[2][-1].startswith("missing: error:")
    table = (tmp_path / "out" / "synthetic" / "all_classes.md").read_text()
    assert "| a_good |" in table and "Missing: b_broken" in table
    # status: each class with its state and the failure's error line
    launcher.main(["--data_root", str(data_root), "--class_name", "all", "--output_root", str(tmp_path / "out")])
    status = capsys.readouterr().out
    assert "| a_good | done |" in status and "| b_broken | failed |" in status
    # the same command again resubmits only what is not done
    (data_root / "b_broken" / "transforms.json").write_text((data_root / "a_good" / "transforms.json").read_text())
    assert anomaly_nerf_lego.main(args) == 0
    out = capsys.readouterr().out
    assert "1 of 2 classes already done: submitting 1" in out and "| b_broken | done |" in out
    # the evaluation step as jobs too: each class evaluated in its own job, the same figures, one table
    saved = {n: json.loads((tmp_path / "out" / "synthetic" / n / "metrics.json").read_text())
             for n in ("a_good", "b_broken")}
    for n in saved:
        (tmp_path / "out" / "synthetic" / n / "metrics.json").unlink()
    assert auroc_test.main(["--output_root", str(tmp_path / "out"), "--obj", "all", "--launcher", "local",
                            "--poll_seconds", "0.5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "evaluation: 2 of 2 classes done" in out and "results_table.md" in out
    for n, before in saved.items():
        after = json.loads((tmp_path / "out" / "synthetic" / n / "metrics.json").read_text())
        assert {k: after[k] for k in ("pixel_auroc", "image_auroc", "pixel_aupro")} == \
            {k: before[k] for k in ("pixel_auroc", "image_auroc", "pixel_aupro")}
    assert json.loads((tmp_path / "out" / "synthetic" / "jobs" / "auroc_test" / "a_good.json").read_text())[
        "state"] == "done"


class _FakeSlurmJob:
    """What slurm_job_over reads of a submitit job: done() (its result file) and SLURM's state."""

    def __init__(self, result_file: bool, slurm_state: str):
        self.job_id, self._result, self.asked = "7_1", result_file, []
        self.watcher = self
        self._state = slurm_state

    def done(self):
        return self._result

    def get_state(self, job_id, mode="standard"):
        self.asked.append((job_id, mode))
        return self._state


def test_a_requeued_slurm_job_is_not_over_while_slurm_runs_it_again():
    # an `scontrol requeue` leaves the earlier run's result file (and perhaps its "done") while SLURM runs it again
    assert not launcher.slurm_job_over(_FakeSlurmJob(True, "PENDING"), "done")
    assert not launcher.slurm_job_over(_FakeSlurmJob(True, "RUNNING"), "running")
    assert not launcher.slurm_job_over(_FakeSlurmJob(False, "COMPLETING"), "failed")
    job = _FakeSlurmJob(True, "COMPLETED")
    assert launcher.slurm_job_over(job, "done") and job.asked == [("7_1", "force")]   # SLURM asked, not a cache
    # ended without writing its outcome (killed, out of memory): over, and the launcher records it as failed
    assert launcher.slurm_job_over(_FakeSlurmJob(True, "OUT_OF_MEMORY"), "running")
    # still running with no outcome: SLURM is not even asked
    job = _FakeSlurmJob(False, "RUNNING")
    assert not launcher.slurm_job_over(job, "running") and job.asked == []
