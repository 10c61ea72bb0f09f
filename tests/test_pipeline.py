"""End to end on a real (small) NeRF: the demo recipe's quality, the full pipeline, and resume.

(Pose recovery on a trained NeRF is tested in test_inerf.py.)

One NeRF is trained per session with the demo recipe on a generated 48x48 class, then reused.
"""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import anomaly_nerf_lego
from data.mad import load_test_set
from omniposead import pipeline
from omniposead.config import parse_config

SIZE = 48
NERF_ARGS = [
    "--netdepth", "4", "--netwidth", "64", "--netdepth_fine", "4", "--netwidth_fine", "64", "--skips",
    "--multires", "6", "--multires_views", "2", "--N_samples", "32", "--N_importance", "0", "--N_rand", "1024",
    "--lrate", "5e-3", "--lrate_decay", "2", "--precrop_iters", "100", "--n_iters", "500",
    "--holdout_every", "8", "--i_val", "500", "--i_weights", "500", "--seed", "0", "--device", "cpu",
    "--occupancy_grid", "true", "--occupancy_samples", "64", "--occupancy_warmup", "100",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data_root, ckpt_root, train summary): a 48x48 synthetic class and its trained NeRF."""
    from data.options import SynthOptions
    from data.synth.generate import generate_class

    base = tmp_path_factory.mktemp("pipeline")
    data_root = base / "synthetic"
    generate_class(data_root, "toy", SynthOptions(synth_seed=3, synth_size=SIZE, synth_n_train=40,
                                                  synth_n_test_good=3, synth_n_test_defect=2, synth_supersample=2,
                                                  synth_workers=1), progress=False)
    cfg = parse_config(["--data_root", str(data_root), "--class_name", "toy",
                        "--ckpt_root", str(base / "ckpts"), *NERF_ARGS])
    summary = pipeline.train_class(cfg, torch.device("cpu"), progress=False)
    return data_root, base / "ckpts", summary


def test_demo_recipe_beats_mean_colour_by_8db(trained):
    _, _, summary = trained
    assert summary.val_psnr - summary.baseline_psnr >= 8.0, summary


def _pipeline_args(data_root, ckpt_root, out_root):
    return ["--data_root", str(data_root), "--class_name", "toy", "--ckpt_root", str(ckpt_root),
            "--output_root", str(out_root), *NERF_ARGS, "--desc_dim", "16", "--retrieval_size", "64",
            "--inerf_steps", "15", "--inerf_rays", "128", "--inerf_batch", "3", "--inerf_detector", "orb",
            "--score_sigma", "1", "--image_score_pool", "8", "--n_qualitative", "2"]


def test_pipeline_writes_every_result_and_prints_both_aurocs(trained, tmp_path, capsys):
    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bundled-backbone warning (tested in test_backbone.py)
        assert anomaly_nerf_lego.main(_pipeline_args(data_root, ckpts, tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    assert "pixel AUROC: " in printed and "image AUROC: " in printed

    out_dir = tmp_path / "out" / "synthetic" / "toy"
    samples = load_test_set(data_root / "toy")
    for sample in samples:
        record = json.loads((out_dir / f"{sample.name}.json").read_text())
        for key in ("image_score", "coarse_pose", "refined_pose", "retrieval_index", "retrieval_distance",
                    "inerf_start_index", "inerf_restart_rank", "inerf_final_loss", "seconds", "backbone"):
            assert key in record, key
        assert np.load(out_dir / f"{sample.name}.npy").shape == (SIZE, SIZE)
        for suffix in ("_query.png", "_ref.png", "_overlay.png"):
            assert (out_dir / f"{sample.name}{suffix}").is_file()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["n_images"] == len(samples)
    assert "lite2" in metrics["backbone"]
    assert (ckpts / "synthetic" / "toy" / "retrieval.pt").is_file()


def test_interrupted_run_resumes_without_recomputing_finished_images(trained, tmp_path, monkeypatch):
    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    args = _pipeline_args(data_root, ckpts, tmp_path / "out") + ["--evaluate", "false"]
    real_save = pipeline.save_result
    saved: list[str] = []

    def save_then_interrupt(out_dir, name, *a, **kw):
        real_save(out_dir, name, *a, **kw)
        saved.append(name)
        if len(saved) == 4:  # mid-way through the second batch of three
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_result", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        anomaly_nerf_lego.main(args)
    out_dir = tmp_path / "out" / "synthetic" / "toy"
    first = {name: (out_dir / f"{name}.npy").stat().st_mtime_ns for name in saved}

    recomputed: list[str] = []

    def count_save(out_dir, name, *a, **kw):
        recomputed.append(name)
        real_save(out_dir, name, *a, **kw)

    monkeypatch.setattr(pipeline, "save_result", count_save)
    anomaly_nerf_lego.main(args)
    names = [s.name for s in load_test_set(data_root / "toy")]
    assert sorted(recomputed) == sorted(set(names) - set(saved))
    assert {name: (out_dir / f"{name}.npy").stat().st_mtime_ns for name in saved} == first
    assert all((out_dir / f"{name}.json").is_file() for name in names)
