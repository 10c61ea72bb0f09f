"""The diagnostic tools on the tiny generated class: the decomposition (benchmarks.decompose), the pose
accuracy (omniposead.pose_accuracy), the SfM benchmarks' pose comparison (benchmarks.sfm_truth), and the
scoring protocol's preset (omniposead.config.check_presets)."""
from __future__ import annotations

import json
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from anomaly.results import result_paths
from common.errors import ConfigError
from omniposead.config import parse_config

TINY_NERF = ["--netdepth", "1", "--netwidth", "16", "--netdepth_fine", "1", "--netwidth_fine", "16", "--skips",
             "--multires", "2", "--multires_views", "1", "--N_samples", "8", "--N_importance", "4", "--N_rand", "32",
             "--n_iters", "2", "--i_val", "1000", "--i_weights", "1000", "--holdout_every", "0",
             "--backbone", "tf_efficientnet_lite0", "--backbone_fallback", "false", "--allow_random_backbone", "true",
             "--retrieval_size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_args(tiny_class_dir, tmp_path_factory):
    """Options of the tiny class with a tiny NeRF trained for 2 steps (checkpoint in a temporary folder)."""
    from omniposead.pipeline import train_class

    base = tmp_path_factory.mktemp("tools")
    args = ["--data_root", str(tiny_class_dir.parent), "--class_name", "tiny", "--ckpt_root", str(base / "ck"),
            "--output_root", str(base / "out"), *TINY_NERF, "--score_sigma", "1", "--image_score_pool", "4"]
    train_class(parse_config(args), torch.device("cpu"), progress=False)
    return args


def test_decomposition_oracle_detects_everything_and_saved_references_are_scored(tiny_args, capsys):
    from benchmarks import decompose
    from omniposead.decomposition import oracle_references

    cfg = parse_config(tiny_args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-backbone warning
        assert decompose.main(tiny_args) == 0
    printed = capsys.readouterr().out
    header = "| reference | pixel AUROC | image AUROC | pixel AUPRO | pixel F1 |"
    assert "n/a (no saved references" in printed and header in printed
    table = json.loads((cfg.run.output_dir / "decomposition.json").read_text())["variants"]["paper/none"]
    rows = table["rows"]
    assert table["n_images"] == 2 + 3 * 2 and table["n_good"] == 2 and rows["pipeline"] is None
    # the oracle reference differs from its query only at the defect: every defect outscores every good image
    assert rows["oracle"]["image_auroc"] == 1.0
    # a NeRF trained for 2 steps renders a blur: worse than the oracle
    assert rows["nerf_true_pose"]["pixel_auroc"] < rows["oracle"]["pixel_auroc"]
    assert rows["nerf_true_pose"]["image_auroc"] < rows["oracle"]["image_auroc"]
    assert rows["nerf_true_pose"]["pixel_f1"] < rows["oracle"]["pixel_f1"] <= 1.0      # OmniAD's pixel F1 column

    # references saved as the pipeline does (<stem>_ref.png): here the oracle's, so the pipeline row equals it
    from mad.loader import load_test_set, load_train_views

    views = load_train_views(cfg.run.class_dir)
    samples = load_test_set(cfg.run.class_dir)
    names = [s.name for s in samples]
    oracle = oracle_references(cfg.run.class_dir, samples, views.intrinsics)
    for name, ref in zip(names, oracle, strict=True):
        path = result_paths(cfg.run.output_dir, name).reference
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, np.round(ref * 255).astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert decompose.main(tiny_args) == 0
    rows = json.loads((cfg.run.output_dir / "decomposition.json").read_text())["variants"]["paper/none"]["rows"]
    assert rows["pipeline"] == pytest.approx(rows["oracle"], abs=1e-6)


def _turned(pose: np.ndarray, degrees: float, stretch: float) -> np.ndarray:
    """`pose` rotated by `degrees` about its viewing axis, its camera moved `stretch` further from the origin."""
    out = pose.copy()
    out[:3, :3] = pose[:3, :3] @ Rotation.from_euler("z", degrees, degrees=True).as_matrix()
    out[:3, 3] = pose[:3, 3] * (1.0 + stretch)
    return out


def test_pose_accuracy_reports_known_errors_exactly(tiny_class_dir, tmp_path, capsys):
    """Records whose coarse pose is the truth and whose refined pose is 7 deg / 10 % off: the tool reports
    exactly zero and exactly 7 deg / 0.1 for every image."""
    from omniposead.pose_accuracy import load_test_poses, main

    truth = load_test_poses(tiny_class_dir)
    out = tmp_path / "out" / "synthetic" / "tiny"
    for name, pose in truth.items():
        record = {"coarse_pose": pose.tolist(), "refined_pose": _turned(pose, 7.0, 0.1).tolist(), "image_score": 0.0,
                  "label": int(not name.startswith("good/")), "defect_type": name.split("/")[0], "backbone": "test"}
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(record))
    assert main(["--data_root", str(tiny_class_dir.parent), "--class_name", "tiny", "--output_root",
                 str(tmp_path / "out"), "--from_outputs"]) == 0
    report = json.loads((out / "pose_accuracy.json").read_text())
    assert report["n"] == len(truth) and not report["missing_outputs"]
    coarse, refined = report["stages"]["retrieval"], report["stages"]["iNeRF"]
    assert coarse["rot_p90_deg"] == pytest.approx(0.0, abs=1e-6) and coarse["trans_p90_frac"] == pytest.approx(0.0)
    assert coarse["share_under_2deg"] == 1.0 and coarse["share_over_5deg"] == 0.0
    for row in report["per_image"]:
        assert row["iNeRF_rot_deg"] == pytest.approx(7.0, abs=1e-6)
        assert row["iNeRF_trans_frac"] == pytest.approx(0.1, abs=1e-9)
    assert refined["share_over_5deg"] == 1.0
    assert "retrieval" in capsys.readouterr().out


def test_sfm_pose_errors_undo_the_frame_and_find_the_wrong_view(tiny_class_dir, tmp_path):
    """Poses in another frame (scale 2.5, rotated, shifted) compare as exact after the alignment; one view
    turned by 10 deg shows as the maximum rotation error, and the recovered scale is 1 / 2.5."""
    from benchmarks.sfm_truth import pose_errors

    meta = json.loads((tiny_class_dir / "transforms.json").read_text())
    q = Rotation.from_euler("xyz", [20, -35, 70], degrees=True).as_matrix()
    scale, shift = 2.5, np.array([0.3, -1.0, 2.0])
    moved = json.loads(json.dumps(meta))
    for i, frame in enumerate(moved["frames"]):
        pose = np.array(frame["transform_matrix"])
        pose[:3, :3] = q @ pose[:3, :3]
        pose[:3, 3] = scale * q @ pose[:3, 3] + shift
        frame["transform_matrix"] = (_turned(pose, 10.0, 0.0) if i == 3 else pose).tolist()
    (tmp_path / "true.json").write_text(json.dumps(meta))
    (tmp_path / "est.json").write_text(json.dumps(moved))
    errors = pose_errors(tmp_path / "true.json", tmp_path / "est.json")
    assert errors["recovered"] == errors["views"] == len(meta["frames"])
    assert errors["rotation_deg"]["median"] == pytest.approx(0.0, abs=1e-6)
    assert errors["rotation_deg"]["max"] == pytest.approx(10.0, abs=1e-6)
    assert errors["position_percent_of_radius"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert errors["similarity"]["scale"] == pytest.approx(1 / scale)


# ------------------------------------------------------------------- the official protocol's preset

def test_official_preset_prints_what_it_sets_and_replaces_defaults(capsys):
    cfg = parse_config(["--score_protocol", "official", "--score_sigma", "4"])   # the preset's own value: fine
    line = capsys.readouterr().out.strip()
    assert line == ("score_protocol = official sets score_stages = [1, 2, 3, 4], score_include_rgb = True, "
                    "score_stage_weights = [], score_sigma = 4.0, image_score_pool = 1")
    assert cfg.score.compared_stages() == (1, 2, 3, 4) and cfg.score.image_pool() == 1
    parse_config(["--score_sigma", "2"])
    assert capsys.readouterr().out == ""           # the paper protocol has no preset


def test_an_explicit_value_against_the_preset_is_an_error_naming_where_it_was_given(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: image_score_pool = 8 contradicts score_protocol = "
                                          r"official, which sets image_score_pool = 1; remove image_score_pool"):
        parse_config(["--score_protocol", "official", "--image_score_pool", "8"])
    config = tmp_path / "official.txt"
    config.write_text("score_protocol = official\nscore_stages = [1, 2]\n")
    with pytest.raises(ConfigError, match=rf"^{config}: score_stages = \[1, 2\] contradicts"):
        parse_config(["--config", str(config)])


def test_the_command_line_protocol_replaces_the_config_files_scoring_values(tmp_path, capsys):
    """As any command-line flag overrides the file: `--score_protocol official` on a config that sets
    image_score_pool works, and the printed line names the value it replaced."""
    config = tmp_path / "paper.txt"
    config.write_text("image_score_pool = 8\nscore_sigma = 4\n")
    cfg = parse_config(["--config", str(config), "--score_protocol", "official"])
    assert cfg.score.image_pool() == 1
    assert f"(replacing image_score_pool = 8 of {config})" in capsys.readouterr().out


def test_a_preset_conflict_stops_a_tool_with_one_line_before_any_work(capsys):
    from benchmarks import decompose

    with pytest.raises(SystemExit) as stop:
        decompose.main(["--data_root", "/nonexistent", "--score_protocol", "official", "--score_sigma", "2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: command line: score_sigma = 2.0 contradicts")
