"""Reliability: every bad input gets one clear line before any expensive work, "all" runs go on past a
failing class, Ctrl-C says what was saved, and an interrupted training resumes bit for bit."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import anomaly_nerf_lego
import auroc_test
import train_nerf as nerf_train
from anomaly.results import save_result, save_run_record
from common.errors import DataError
from common.io import atomic_path, ensure_writable, remove_stale_temps
from mad.loader import load_test_set
from omniposead.config import parse_config
from omniposead.pipeline import train_class
from tests.test_data import make_class
from tests.test_nerf_train import TINY, write_sphere_class

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_TINY = [*TINY, "--n_iters", "2", "--backbone", "tf_efficientnet_lite0", "--backbone_fallback", "false",
                 "--allow_random_backbone", "true", "--retrieval_size", "32", "--inerf_steps", "2",
                 "--inerf_rays", "16", "--score_sigma", "0", "--image_score_pool", "2", "--n_qualitative", "1"]


def _main_fails(main, args, capsys) -> list[str]:
    """Run an entry point that must stop with exit code 2; its stderr lines."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


def _paths(tmp_path, data_root) -> list[str]:
    return ["--data_root", str(data_root), "--ckpt_root", str(tmp_path / "ckpts"),
            "--output_root", str(tmp_path / "outputs")]


# ----------------------------------------------------------------------------- bad data, found early

def test_all_zero_mask_is_an_error_unless_allowed(tmp_path):
    cdir = make_class(tmp_path)
    mask_path = cdir / "ground_truth" / "Burrs" / "0_mask.png"
    cv2.imwrite(str(mask_path), np.zeros((6, 8), np.uint8))
    with pytest.raises(DataError, match=r"0_mask\.png: mask of the defect image .* is all zero"):
        load_test_set(cdir)
    samples = load_test_set(cdir, allow_empty_masks=True)
    assert not next(s for s in samples if s.name == "Burrs/0").mask.any()


def test_several_problems_are_listed_together_one_line_each(tmp_path):
    cdir = make_class(tmp_path)
    (cdir / "ground_truth" / "Stains" / "1_mask.png").unlink()                       # missing mask
    (cdir / "test" / "good" / "1.png").write_bytes(b"not a png")                      # corrupt image
    cv2.imwrite(str(cdir / "test" / "Stains" / "0.png"), np.zeros((9, 9, 3), np.uint8))  # other size
    with pytest.raises(DataError) as exc:
        load_test_set(cdir)
    lines = str(exc.value).splitlines()
    assert len(lines) == 3
    assert any("1_mask.png" in line and "has no mask" in line for line in lines)
    assert any(line.startswith(str(cdir / "test" / "good" / "1.png")) and "cannot decode" in line for line in lines)
    assert any(line.startswith(str(cdir / "ground_truth" / "Stains" / "0_mask.png")) and "mask size 8x6 differs"
               in line for line in lines)


def test_test_image_of_another_size_is_named(tmp_path):
    cdir = make_class(tmp_path)
    cv2.imwrite(str(cdir / "test" / "good" / "1.png"), np.zeros((6, 10, 3), np.uint8))
    with pytest.raises(DataError, match=r"good/1\.png: image size 10x6 differs from the 8x6 of"):
        load_test_set(cdir)


def test_test_set_error_stops_the_pipeline_before_any_training(tiny_class_dir, tmp_path, capsys):
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_class_dir, data_root / "tiny")
    missing = data_root / "tiny" / "ground_truth" / "Burrs" / "1_mask.png"
    missing.unlink()
    start = time.perf_counter()
    lines = _main_fails(anomaly_nerf_lego.main, [*_paths(tmp_path, data_root), "--class_name", "tiny",
                                                 *PIPELINE_TINY], capsys)
    assert time.perf_counter() - start < 30
    assert lines == [(f"error: {data_root / 'tiny' / 'test' / 'Burrs' / '1.png'}: defect image has no mask "
                      f"(expected {missing})")]
    assert not (tmp_path / "ckpts").exists()          # no training started


def test_one_label_test_set_is_refused_before_training(tmp_path, capsys):
    data_root = tmp_path / "data"
    make_class(data_root, test={"good": [0, 1]})
    lines = _main_fails(anomaly_nerf_lego.main, [*_paths(tmp_path, data_root), "--class_name", "toy",
                                                 *PIPELINE_TINY], capsys)
    assert len(lines) == 1 and "test set has only good images" in lines[0] and "--evaluate false" in lines[0]
    assert not (tmp_path / "ckpts").exists()


@pytest.mark.parametrize("which", ["ckpt_root", "output_root"])
def test_unwritable_or_misplaced_folders_are_refused_up_front(tiny_class_dir, tmp_path, capsys, which):
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_class_dir, data_root / "tiny")
    regular_file = tmp_path / "a_file"
    regular_file.write_text("x")
    args = [*_paths(tmp_path, data_root), "--class_name", "tiny", *PIPELINE_TINY, f"--{which}", str(regular_file)]
    lines = _main_fails(anomaly_nerf_lego.main, args, capsys)
    assert len(lines) == 1 and str(regular_file) in lines[0] and "regular file" in lines[0]
    assert not list(tmp_path.rglob("nerf.pt"))


def test_ensure_writable_names_a_read_only_folder(tmp_path):
    if os.geteuid() == 0:            # root writes through permission bits: use a folder the kernel refuses
        read_only = Path("/sys")
    else:
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o500)
    with pytest.raises(DataError, match=rf"^{read_only}: the output folder is not writable"):
        ensure_writable(read_only, "output")
    assert ensure_writable(tmp_path / "new" / "deep", "output").is_dir()


def test_option_ranges_are_checked_with_one_line(capsys):
    lines = _main_fails(anomaly_nerf_lego.main, ["--inerf_batch", "0"], capsys)
    assert lines == ["error: inerf_batch must be >= 1, got 0"]


def test_config_errors_name_the_file_and_the_closest_key(tmp_path, capsys):
    config = tmp_path / "my.txt"
    config.write_text("N_sampels = 64\nnetdepth = 4\n")
    lines = _main_fails(anomaly_nerf_lego.main, ["--config", str(config)], capsys)
    assert lines == [f"error: {config}: unknown key 'N_sampels' (did you mean 'N_samples'?)"]
    config.write_text("N_samples = many\n")
    lines = _main_fails(anomaly_nerf_lego.main, ["--config", str(config)], capsys)
    assert lines == [f"error: {config}: argument --N_samples: invalid int value: 'many'"]


# ----------------------------------------------------------------------------- "all" classes

def test_all_goes_on_past_failing_classes_and_ends_with_a_summary(tmp_path, capsys):
    data_root = tmp_path / "spheres"
    write_sphere_class(data_root, name="a_sphere")
    write_sphere_class(data_root, name="b_broken")
    (data_root / "b_broken" / "train" / "good" / "3.png").write_bytes(b"garbage")
    (data_root / "c_no_transforms" / "train" / "good").mkdir(parents=True)
    write_sphere_class(data_root, name="d_sphere")
    code = nerf_train.main(["--data_root", str(data_root), "--class_name", "all", "--ckpt_root", str(tmp_path / "ck"),
                            *TINY, "--n_iters", "2"])
    assert code == 1
    captured = capsys.readouterr()
    assert "| a_sphere | done |" in captured.out and "| d_sphere | done |" in captured.out
    assert "| b_broken | FAILED |" in captured.out and "| c_no_transforms | FAILED |" in captured.out
    assert "2 of 4 classes done, 2 failed" in captured.out
    assert "error: [b_broken]" in captured.err and "3.png: cannot decode image" in captured.err
    assert "error: [c_no_transforms]" in captured.err and "transforms.json" in captured.err
    assert (tmp_path / "ck" / "spheres" / "d_sphere" / "nerf.pt").is_file()
    # a comma-separated list runs those classes only, the same way
    code = nerf_train.main(["--data_root", str(data_root), "--class_name", "d_sphere, b_broken",
                            "--ckpt_root", str(tmp_path / "ck"), *TINY, "--n_iters", "2"])
    out = capsys.readouterr().out
    assert code == 1 and "1 of 2 classes done, 1 failed" in out and "a_sphere" not in out


def test_a_class_without_transforms_points_at_colmap_or_the_layout(tmp_path, capsys):
    (tmp_path / "data" / "raw" / "train" / "good").mkdir(parents=True)
    lines = _main_fails(nerf_train.main, ["--data_root", str(tmp_path / "data"), "--class_name", "raw",
                                          "--ckpt_root", str(tmp_path / "ck"), *TINY], capsys)
    assert len(lines) == 1 and "transforms.json" in lines[0]


# ----------------------------------------------------------------------------- interruptions and budgets

@pytest.mark.slow
def test_ctrl_c_in_the_pipeline_says_what_was_saved(tiny_class_dir, tmp_path, capsys, monkeypatch):
    from omniposead import pipeline

    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_class_dir, data_root / "tiny")
    real_save = pipeline.save_result
    calls = []

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_result", save_then_interrupt)
    with pytest.raises(SystemExit) as exc:
        anomaly_nerf_lego.main([*_paths(tmp_path, data_root), "--class_name", "tiny", *PIPELINE_TINY])
    assert exc.value.code == 130
    lines = capsys.readouterr().err.strip().splitlines()
    out_dir = tmp_path / "outputs" / "synthetic" / "tiny"
    assert lines[-1] == (f"interrupted: 2 of 8 test images of tiny have their results in {out_dir}; rerun the "
                         "same command to make the rest")


def test_budget_stop_is_marked_and_the_next_run_continues(tmp_path):
    data_root = tmp_path / "spheres"
    write_sphere_class(data_root)
    args = ["--data_root", str(data_root), "--class_name", "sphere", "--ckpt_root", str(tmp_path / "ck"), *TINY,
            "--n_iters", "100000", "--max_train_minutes", "0.01"]
    first = train_class(parse_config(args), torch.device("cpu"), progress=False)
    assert first.stop_reason == "budget" and not first.finished and 0 < first.step < 100000
    second = train_class(parse_config(args), torch.device("cpu"), progress=False)
    assert second.stop_reason == "budget" and second.step > first.step
    done = train_class(parse_config([*args[:-2], "--n_iters", str(second.step + 3)]), torch.device("cpu"),
                       progress=False)
    assert done.finished and done.stop_reason == "n_iters" and done.step == second.step + 3


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / "sub" / ".nerf.pt.999999999.abc.tmp"
    live = tmp_path / f".nerf.pt.{os.getppid()}.xyz.tmp"
    legacy = tmp_path / ".map.npy.k2j3.tmp"
    for path in (dead, live, legacy):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([dead, legacy])
    assert live.exists() and not dead.exists()
    with atomic_path(tmp_path / "x.json") as tmp:     # names carry the writer's pid
        assert f".x.json.{os.getpid()}." in tmp.name


def _train_cmd(data_root, ckpt_root, n_iters, *extra) -> list[str]:
    return [sys.executable, str(ROOT / "train_nerf.py"), "--data_root", str(data_root), "--class_name", "sphere",
            "--ckpt_root", str(ckpt_root), *TINY, "--n_iters", str(n_iters), "--i_weights", "100000",
            "--i_print", "1000", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_resume_after_a_signal_is_bitwise_exact(tmp_path, sig):
    """Kill `python train_nerf.py` mid-run, rerun it: the weights equal an uninterrupted run's."""
    data_root = tmp_path / "spheres"
    write_sphere_class(data_root)
    n_iters = 800
    straight = subprocess.run(_train_cmd(data_root, tmp_path / "straight", n_iters), env=_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    ckpt = tmp_path / "cut" / "spheres" / "sphere" / "nerf.pt"
    proc = subprocess.Popen(_train_cmd(data_root, tmp_path / "cut", n_iters, "--save_every_minutes", "0.002"),
                            env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ckpt.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.is_file(), "no wall-clock checkpoint appeared"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    cut = _weights(ckpt)
    assert 0 < cut["step"] < n_iters and not cut["finished"]
    if sig in (signal.SIGINT, signal.SIGTERM):            # SIGTERM saves and says so, as Ctrl-C does
        assert proc.returncode == 130
        assert err.strip().splitlines()[-1].startswith(f"interrupted: NeRF training of sphere stopped at step "
                                                       f"{cut['step']}/{n_iters}; the checkpoint {ckpt} holds it")
        assert cut["stop_reason"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(_train_cmd(data_root, tmp_path / "cut", n_iters), env=_env(), cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "straight" / "spheres" / "sphere" / "nerf.pt"), _weights(ckpt)
    assert a["step"] == b["step"] == n_iters
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    assert not list(ckpt.parent.glob(".*.tmp"))


# ----------------------------------------------------------------------------- fresh clone and evaluation

def test_nerf_train_generates_a_missing_synthetic_class(tmp_path, capsys):
    code = nerf_train.main(["--data_root", str(tmp_path / "synthetic"), "--class_name", "gen", "--ckpt_root",
                            str(tmp_path / "ck"), "--synthesize_if_missing", "true", "--synth_size", "16",
                            "--synth_n_train", "6", "--synth_n_test_good", "1", "--synth_n_test_defect", "1",
                            "--synth_workers", "1", *TINY, "--n_iters", "2", "--holdout_every", "3"])
    assert code == 0
    assert (tmp_path / "synthetic" / "gen" / "transforms.json").is_file()
    assert (tmp_path / "ck" / "synthetic" / "gen" / "nerf.pt").is_file()
    assert "gen: step 2" in capsys.readouterr().out


def test_auroc_test_takes_dataset_and_resolution_from_the_saved_maps(tmp_path, capsys):
    data_root = tmp_path / "data" / "LEGO-3D"
    cdir = make_class(data_root, "01Half", height=12, width=16)
    out_dir = tmp_path / "outputs" / "LEGO-3D" / "01Half"
    for sample in load_test_set(cdir, downscale=2):
        amap = sample.mask.astype(np.float32)
        save_result(out_dir, sample.name, amap, {"image_score": float(amap.max()), "label": sample.label,
                                                 "defect_type": sample.defect_type, "backbone": "b"})
    save_run_record(out_dir, {"data_root": str(data_root), "class_name": "01Half", "half_res": True,
                              "white_bkgd": True})
    code = auroc_test.main(["--obj", "01Half", "--output_root", str(tmp_path / "outputs"), "--n_qualitative", "1"])
    assert code == 0
    captured = capsys.readouterr()
    assert "pixel AUROC: 1.000" in captured.out and "half_res = True" in captured.err
    assert json.loads((out_dir / "metrics.json").read_text())["n_images"] == 5


@pytest.mark.parametrize("command", [["anomaly_nerf_lego.py"], ["auroc_test.py"], ["train_nerf.py"],
                                     ["-m", "mad.synthesize"], ["-m", "mad.colmap_poses"],
                                     ["-m", "omniposead.pose_accuracy"],
                                     *(["-m", f"benchmarks.{name}"] for name in (
                                         "decompose", "bench_sfm_poses", "bench_sfm_pipeline", "bench_nerf",
                                         "bench_occupancy", "bench_pipeline", "bench_pose_fallback",
                                         "bench_noisy_masks", "bench_capture_sfm", "bench_capture_pipeline",
                                         "bench_colour_gains", "bench_reference_detail")),
                                     ["-m", "mad.capture"], ["-m", "mad.undistort"]])
@pytest.mark.slow
def test_every_command_line_prints_its_help(command):
    """--help lists the options (a '%' in an option's help text once made argparse crash here)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, *command, "--help"], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--help" in done.stdout and "Traceback" not in done.stderr


def test_progress_bars_redraw_slowly_in_log_files_only():
    import io

    from common.progress import LOG_REDRAW_SECONDS, progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_bar(total=1, file=io.StringIO()).mininterval == LOG_REDRAW_SECONDS == 10   # a log file
    assert progress_bar(total=1, file=Terminal()).mininterval == 0.1          # a terminal keeps tqdm's live bar
    assert progress_bar(total=1, file=io.StringIO(), mininterval=1).mininterval == 1
    log = io.StringIO()
    for _ in progress_bar(range(1000), file=log):                             # 1000 fast steps: a line or two
        pass
    assert log.getvalue().count("\r") <= 3, log.getvalue()
    script = "from common.progress import progress_bar; import io; print(progress_bar(file=io.StringIO()).mininterval)"
    env = {**os.environ, "TQDM_MININTERVAL": "2"}                             # the user's own setting wins
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "2.0"


@pytest.mark.parametrize("name", ["../../../x", "a/b", "/tmp/x", "..", ".", "ok,../x", "c:x"])
def test_a_class_name_that_leaves_its_roots_is_refused_before_anything_is_created(tmp_path, name, capsys):
    """Issue 38: `--class_name ../../../x` wrote checkpoints, caches, maps and metrics outside the roots."""
    roots = ["--data_root", str(tmp_path / "data" / "synthetic"), "--ckpt_root", str(tmp_path / "ck"),
             "--output_root", str(tmp_path / "out")]
    err = "\n".join(_main_fails(anomaly_nerf_lego.main, [*roots, "--class_name", name], capsys))
    assert "class_name must name folders inside data_root" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []                # nothing created, in or out of the roots


def test_class_names_and_lists_inside_the_roots_are_accepted():
    from common.run import RunOptions

    for name in ("01Gorilla", "all", "a,b", "demo_s1", "x.y"):
        assert RunOptions(class_name=name).validated().class_name == name
    with pytest.raises(Exception, match="class_name"):
        RunOptions().for_class("../x")


def test_a_device_that_is_not_one_is_one_line_at_parse_time(capsys):
    """`--device gpu` ended in a traceback; `cuda` on a machine without CUDA is one line where the work starts
    (not at parse time: a SLURM submission host may have no GPU while its jobs do)."""
    from common.errors import ConfigError
    from common.runtime import resolve_device

    err = "\n".join(_main_fails(anomaly_nerf_lego.main, ["--device", "gpu", "--class_name", "tiny"], capsys))
    assert "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in err and "Traceback" not in err
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")


@pytest.mark.parametrize("text, message", [
    ("lrate = 1e-3\nN_samples = 8\nlrate = 2e-3\n", r"cfg\.txt:3: key 'lrate' given twice \(first on line 1\)"),
    ("N_samples = 8\n# a comment\noccupancy_grid\n", r"cfg\.txt:3: 'occupancy_grid' is not a `key = value` line"),
    ("[nerf]\nN_samples = 8\n", r"cfg\.txt:1: section header '\[nerf\]'"),
])
def test_a_config_line_that_would_be_misread_is_one_line_with_its_number(tmp_path, text, message, capsys):
    """configargparse silently keeps a duplicate key's last value and reads a bare word as an unknown option."""
    from common.errors import ConfigError
    from omniposead.config import parse_config

    config = tmp_path / "cfg.txt"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_config(["--config", str(config)])
    lines = _main_fails(anomaly_nerf_lego.main, ["--config", str(config)], capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}:")
    config.write_text("lrate = 1e-3\nN_samples: 8\n\n; another comment\n")
    assert parse_config(["--config", str(config)]).nerf.N_samples == 8


def test_an_unreadable_or_non_finite_map_counts_as_not_done(tmp_path):
    """Such a map was never remade, and every rerun repeated the evaluation's error (issue 38)."""
    from anomaly.results import is_done, result_paths

    record = {"image_score": 1.0, "label": 1, "defect_type": "Burrs", "backbone": "b"}
    save_result(tmp_path, "Burrs/0", np.ones((4, 4), np.float32), record)
    assert is_done(tmp_path, "Burrs/0")
    save_result(tmp_path, "Burrs/0", np.full((4, 4), np.nan, np.float32), record)
    assert not is_done(tmp_path, "Burrs/0")
    result_paths(tmp_path, "Burrs/0").map.write_bytes(b"not a numpy file")
    assert not is_done(tmp_path, "Burrs/0")


@contextlib.contextmanager
def _lock_held_by_another_process(folder: Path):
    """A second Python process holding common.lock's lock under `folder` (created) for the block; killed at its
    end, which leaves its lock file behind as a killed run would."""
    folder.mkdir(parents=True, exist_ok=True)
    script = ("import time; from pathlib import Path; from common.lock import run_lock\n"
              f"with run_lock(Path({str(folder)!r}), 'x'):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_one_run_per_class_a_second_is_refused_and_a_dead_holder_is_taken_over(tiny_class_dir, tmp_path, capsys):
    """Two runs of one class overwrote each other's maps (issue 38). A second process holds the class's lock: the
    pipeline is refused in one line naming it, before any work; once that process is killed (its lock left
    behind), the lock is taken over with a notice."""
    from common.lock import LOCK_NAME, run_lock

    out_dir = tmp_path / "outputs" / "synthetic" / "tiny"
    with _lock_held_by_another_process(out_dir) as holder:
        lines = _main_fails(anomaly_nerf_lego.main, [*_paths(tmp_path, tiny_class_dir.parent), "--class_name", "tiny",
                                                     *PIPELINE_TINY], capsys)
        assert len(lines) == 1 and f"process {holder.pid} on " in lines[0]
        assert lines[0].startswith(f"error: {out_dir / LOCK_NAME}: the maps of tiny is being made by another run")
        assert not (tmp_path / "ckpts").exists()                              # refused before any training
    assert (out_dir / LOCK_NAME).is_file()                                    # left behind by the killed holder
    with run_lock(out_dir, "the maps of tiny"):
        assert json.loads((out_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "taking over the lock of the maps of tiny left by process" in capsys.readouterr().err
    assert not (out_dir / LOCK_NAME).exists()                                 # released at the end


def test_a_requeued_slurm_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch, capsys):
    from common.lock import LOCK_NAME, LockedError, run_lock

    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": 1, "host": "node-a", "started": "2026-12-06 10:00:00", "slurm_job": "77_3"}))
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    held_elsewhere = r"another run \(process 1 on node-a, since 2026-12-06 10:00:00\)"
    with pytest.raises(LockedError, match=held_elsewhere), run_lock(tmp_path, "the maps of c"):
        pass
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    with run_lock(tmp_path, "the maps of c"):
        assert json.loads(lock.read_text())["slurm_job"] == "77_3"
    assert "this SLURM job's earlier run" in capsys.readouterr().err and not lock.exists()


# ----------------------------------------------------------------------------- results bound to their inputs

def test_the_views_fingerprint_covers_images_poses_and_intrinsics(tiny_class_dir):
    import dataclasses

    from common.camera import Intrinsics
    from mad.loader import load_train_views

    views = load_train_views(tiny_class_dir)
    again = load_train_views(tiny_class_dir)
    assert views.fingerprint == again.fingerprint
    pixel = views.images.copy()
    pixel[3, 5, 5, 1] += 1 / 255
    poses = views.poses.copy()
    poses[0, 0, 3] += 1e-3
    k = views.intrinsics
    for changed in (dataclasses.replace(views, images=pixel), dataclasses.replace(views, poses=poses),
                    dataclasses.replace(views, intrinsics=Intrinsics(k.fx * 1.01, k.fy, k.cx, k.cy))):
        assert changed.fingerprint != views.fingerprint


@pytest.mark.slow
def test_checkpoints_and_maps_are_bound_to_their_inputs(tiny_class_dir, tmp_path, capsys):
    """Issue 38's silent-wrong cases: a NeRF trained on other images was used without a word, and a test image
    replaced after its map existed was scored by the old map (the rerun said 'already done', auroc_test agreed).
    Now the NeRF is refused in one line naming both, a replaced image's map is made again, auroc_test refuses the
    old map, and a training option changed after training gets a notice."""
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_class_dir, data_root / "tiny")
    args = [*_paths(tmp_path, data_root), "--class_name", "tiny", *PIPELINE_TINY]
    anomaly_nerf_lego.main(args)
    capsys.readouterr()
    out_dir = tmp_path / "outputs" / "synthetic" / "tiny"
    stages = json.loads((out_dir / "stages.json").read_text())            # where the run's time went
    assert list(stages["seconds"])[:3] == ["data", "backbone", "nerf"] and stages["seconds"]["maps"] > 0
    assert stages["maps_made"] == 8 and stages["peak_rss_gb"] > 0.1
    record = json.loads((out_dir / "good" / "0.json").read_text())
    untouched = json.loads((out_dir / "good" / "1.json").read_text())

    image_path = data_root / "tiny" / "test" / "good" / "0.png"
    cv2.imwrite(str(image_path), cv2.imread(str(image_path))[::-1].copy())           # replaced by another photo
    lines = [line for line in _main_fails(auroc_test.main, ["--output_root", str(tmp_path / "outputs"),
                                                            "--class_name", "tiny"], capsys) if "error" in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out_dir / 'good' / '0.npy'}: this map was made from "
                                                   f"another version of the test image {image_path}")
    anomaly_nerf_lego.main(args)
    out = capsys.readouterr().out
    assert "1 test image(s) differ from the ones their maps were made from (good/0): making their maps again" in out
    assert json.loads((out_dir / "good" / "0.json").read_text())["image_digest"] != record["image_digest"]
    assert json.loads((out_dir / "good" / "1.json").read_text()) == untouched          # not made again
    assert json.loads((out_dir / "stages.json").read_text())["maps_made"] == 1
    auroc_test.main(["--output_root", str(tmp_path / "outputs"), "--class_name", "tiny"])

    anomaly_nerf_lego.main([*args, "--lrate", "1e-3"])                               # after training: no effect
    out = capsys.readouterr().out
    assert "note: training options changed since the NeRF in " in out
    assert "(lrate 0.005 -> 0.001): they have no effect on it unless you retrain" in out
    anomaly_nerf_lego.main(args)
    assert "note: training options changed" not in capsys.readouterr().out

    train_image = sorted((data_root / "tiny" / "train" / "good").glob("*.png"))[0]
    cv2.imwrite(str(train_image), 255 - cv2.imread(str(train_image)))                 # another object's photo
    ckpt = tmp_path / "ckpts" / "synthetic" / "tiny" / "nerf.pt"
    lines = _main_fails(anomaly_nerf_lego.main, args, capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: NeRF checkpoint {ckpt} was trained on other training "
                                                   "images or poses than those in ")
    assert "(checkpoint " in lines[0] and ", data " in lines[0]
    lines = _main_fails(nerf_train.main, [*_paths(tmp_path, data_root), "--class_name", "tiny", *PIPELINE_TINY,
                                          "--n_iters", "4"], capsys)                    # resuming it too
    assert len(lines) == 1 and "was trained on other training images or poses" in lines[0]


def test_a_second_training_of_one_class_is_refused(tmp_path, capsys):
    """Two trainings of one class both wrote nerf.pt, each resuming from the other's saves: the second is refused
    in one line naming the first (another process holds the lock under the checkpoint folder)."""
    from common.lock import LOCK_NAME

    data_root = tmp_path / "spheres"
    write_sphere_class(data_root)
    ckpt_dir = tmp_path / "ck" / "spheres" / "sphere"
    with _lock_held_by_another_process(ckpt_dir) as holder:
        lines = _main_fails(nerf_train.main, ["--data_root", str(data_root), "--class_name", "sphere", "--ckpt_root",
                                              str(tmp_path / "ck"), *TINY, "--n_iters", "3"], capsys)
        assert len(lines) == 1 and lines[0].startswith(f"error: {ckpt_dir / LOCK_NAME}: the NeRF of sphere is being "
                                                       f"made by another run (process {holder.pid} on ")
        assert not (ckpt_dir / "nerf.pt").exists()


def test_missing_backbone_weights_stop_the_run_before_any_training(tiny_class_dir, tmp_path, capsys):
    """The GPU configs name the paper's EfficientNet-B4, whose weights do not ship: without the fallback that is one
    line before the NeRF is trained (it used to come after minutes of training)."""
    lines = _main_fails(anomaly_nerf_lego.main, [*_paths(tmp_path, tiny_class_dir.parent), "--class_name", "tiny",
                                                 *PIPELINE_TINY, "--backbone", "tf_efficientnet_b4.aa_in1k",
                                                 "--backbone_fallback", "false", "--allow_random_backbone", "false"],
                        capsys)
    assert lines == [("error: no pretrained weights for backbone 'tf_efficientnet_b4.aa_in1k' offline: pass "
                     "--backbone_weights FILE, enable --backbone_fallback (bundled EfficientNet-Lite2) or "
                     "--allow_random_backbone")]
    assert not list((tmp_path / "ckpts").rglob("nerf.pt"))
