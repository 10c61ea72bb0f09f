"""The run identity (omniposead.run_identity, run.json): an option of any stage that can change a map, or
another trained NeRF, makes every map again and is named; a cosmetic or training-only option is not."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from mad.loader import load_train_views
from omniposead import pipeline
from omniposead.config import OmniposeConfig, parse_config
from omniposead.run_identity import OUTSIDE_IDENTITY, identity_changes, identity_stages, run_identity
from tests.test_nerf_train import TINY, write_sphere_class
from tests.test_reliability import PIPELINE_TINY

CPU = torch.device("cpu")
USED = {"nerf_weights": "a" * 64, "nerf_step": 4000, "backbone": "b4", "retrieval_database": "d" * 64,
        "residual_model": None, "device": "cpu"}


def identity(*args: str, used: dict = USED) -> dict:
    return run_identity(parse_config(["--data_root", "data/x", "--class_name", "c", *args]), used)


def test_the_identity_covers_every_stage_but_those_named_outside_it():
    stages = [f.name for f in OmniposeConfig.__dataclass_fields__.values()]
    assert set(OUTSIDE_IDENTITY) <= set(stages)
    assert identity_stages() == ["run", "nerf", "backbone", "retrieval", "inerf", "score"]
    saved = identity()
    assert set(saved) == {*identity_stages(), "used"}
    assert saved["nerf"]["skips"] == [4] and saved["nerf"]["N_samples"] == 64      # JSON values, nested by stage
    assert "output_root" not in saved["run"] and saved["run"]["downscale"] == 1   # cosmetic fields left out


@pytest.mark.parametrize("flag, value, line", [
    ("--downscale", "2", "run.downscale 1 -> 2"),                               # data loading
    ("--N_samples", "32", "nerf.N_samples 64 -> 32"),                           # NeRF rendering
    ("--occupancy_samples", "128", "nerf.occupancy_samples 0 -> 128"),
    ("--backbone_weights", "b4.pth", 'backbone.backbone_weights "" -> "b4.pth"'),  # backbone
    ("--desc_dim", "32", "retrieval.desc_dim 64 -> 32"),                       # retrieval
    ("--inerf_steps", "10", "inerf.inerf_steps 300 -> 10"),                    # iNeRF
    ("--score_sigma", "0", "score.score_sigma 4.0 -> 0.0"),                    # scoring
])
def test_an_option_of_each_stage_is_a_change_named_at_leaf_level(flag, value, line):
    assert identity_changes(identity(), identity(flag, value)) == [line]


@pytest.mark.parametrize("flag, value", [
    ("--output_root", "elsewhere"), ("--ckpt_root", "elsewhere"), ("--device", "cpu"),     # cosmetic run options
    ("--n_qualitative", "1"), ("--save_overlays", "false"), ("--evaluate", "false"),      # after the maps
    ("--save_every_minutes", "5"), ("--i_print", "1"), ("--lrate", "1e-3"),              # training: via the NeRF
    ("--synth_workers", "1"),
])
def test_cosmetic_and_training_options_are_no_change(flag, value):
    assert identity_changes(identity(), identity(flag, value)) == []


def test_another_nerf_or_no_saved_identity_is_a_change():
    retrained = identity(used={**USED, "nerf_weights": "b" * 64})
    assert identity_changes(identity(), retrained) == ["used.nerf_weights aaaaaaaaaaaa... -> bbbbbbbbbbbb..."]
    assert len(identity_changes(None, identity())) == 1


def test_the_nerf_is_named_by_its_weights_not_its_step(tmp_path):
    """Two trainings to the same step (other seeds) differ; the same training repeated, or read back from its
    checkpoint, is the same NeRF."""
    data_root = tmp_path / "spheres"
    write_sphere_class(data_root, n_views=6)
    views = load_train_views(data_root / "sphere")

    def nerf(seed: int, where: str):
        cfg = parse_config(["--data_root", str(data_root), "--class_name", "sphere", "--ckpt_root",
                            str(tmp_path / where), *TINY, "--n_iters", "3", "--seed", str(seed),
                            "--occupancy_grid", "true", "--occupancy_resolution", "4", "--occupancy_warmup", "1",
                            "--occupancy_update_every", "1"])
        return pipeline.ensure_trained(cfg, views, CPU, progress=False)

    trained, loaded = nerf(1, "a"), nerf(1, "a")       # trained now, then read from its checkpoint
    assert trained.step == loaded.step == 3 and trained.digest == loaded.digest
    assert nerf(1, "b").digest == trained.digest
    other = nerf(2, "c")
    assert other.step == 3 and other.digest != trained.digest


@pytest.mark.slow
def test_run_class_remakes_every_map_after_an_N_samples_change_and_reuses_them_after_a_cosmetic_one(
        tiny_data_root, tmp_path, monkeypatch, capsys):
    args = ["--data_root", str(tiny_data_root), "--class_name", "tiny", "--ckpt_root", str(tmp_path / "ck"),
            "--output_root", str(tmp_path / "out"), *PIPELINE_TINY, "--evaluate", "false"]
    made: list[str] = []
    real_save = pipeline.save_result

    def save(out_dir, name, *a, **kw):
        made.append(name)
        return real_save(out_dir, name, *a, **kw)

    monkeypatch.setattr(pipeline, "save_result", save)

    def run(*extra: str) -> tuple:
        made.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # the random-backbone warning
            out_dir = pipeline.run_class(parse_config([*args, *extra]), CPU, progress=False).out_dir
        return out_dir, capsys.readouterr().out

    out_dir, _ = run()
    n_maps = len(made)
    assert n_maps == 8
    _, printed = run("--N_samples", "10")
    assert len(made) == n_maps and "changed since the saved maps: nerf.N_samples 12 -> 10" in printed
    _, printed = run("--N_samples", "10", "--n_qualitative", "3", "--save_every_minutes", "9", "--device", "auto")
    assert made == [] and "changed" not in printed and f"{n_maps} already done" in printed
    record = json.loads((out_dir / "run.json").read_text())
    assert record["downscale"] == 1 and record["data_root"] == str(tiny_data_root)   # read back by auroc_test.py
    calibration = record["pose_calibration"]                 # the pose-unsure threshold, calibrated and recorded
    assert calibration["threshold"] == pytest.approx(5.0 * calibration["median_loss"]) and calibration["views"]
    image = json.loads(next((out_dir / "good").glob("*.json")).read_text())
    assert isinstance(image["pose_unsure"], bool) and image["pose_loss_ratio"] > 0
    assert record["identity"]["nerf"]["N_samples"] == 10 and record["identity"]["used"]["nerf_step"] == 2
    assert len(record["identity"]["used"]["nerf_weights"]) == 64
