"""Real captures end to end: photos on a non-white background, and a class whose views have no poses."""
from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import anomaly_nerf_lego
from mad.images import read_image_file
from omniposead import pipeline
from omniposead.config import parse_config
from tests.conftest import generate_tiny

SIZE = 48
BACKDROP = (60, 90, 70)  # RGB of the backdrop painted behind the object
SMALL_RUN = [
    "--netdepth", "2", "--netwidth", "64", "--netdepth_fine", "2", "--netwidth_fine", "64", "--skips",
    "--multires", "6", "--multires_views", "2", "--N_samples", "32", "--N_importance", "0", "--N_rand", "1024",
    "--lrate", "5e-3", "--lrate_decay", "2", "--precrop_iters", "0", "--n_iters", "300", "--holdout_every", "8",
    "--i_val", "300", "--i_weights", "300", "--seed", "0", "--device", "cpu", "--desc_dim", "16",
    "--retrieval_size", "64", "--inerf_steps", "10", "--inerf_rays", "128", "--inerf_batch", "14",
    "--inerf_detector", "orb", "--score_sigma", "1", "--image_score_pool", "8", "--n_qualitative", "2",
]


def _paint_backdrop(class_dir) -> None:
    """Replace the generator's pure-white background by BACKDROP in every train and test image (the
    object is never pure white, so the defect masks stay exact)."""
    for path in list((class_dir / "train").rglob("*.png")) + list((class_dir / "test").rglob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image[(image == 255).all(-1)] = BACKDROP[::-1]
        cv2.imwrite(str(path), image)


@pytest.mark.slow
def test_non_white_background_class_runs_end_to_end(tmp_path, capsys):
    data_root = tmp_path / "synthetic"
    class_dir = generate_tiny(data_root, size=SIZE, n_train=24)
    _paint_backdrop(class_dir)
    args = ["--data_root", str(data_root), "--class_name", "tiny", "--ckpt_root", str(tmp_path / "ckpts"),
            "--output_root", str(tmp_path / "out"), "--white_bkgd", "false", *SMALL_RUN]
    cfg = parse_config(args)
    assert cfg.run.white_bkgd is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bundled-backbone warning
        assert anomaly_nerf_lego.main(args) == 0
        assets = pipeline.load_class(cfg, torch.device("cpu"), train=False, progress=False)
    assert "pixel AUROC: " in capsys.readouterr().out
    out_dir = tmp_path / "out" / "synthetic" / "tiny"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["pixel_auroc"]) and math.isfinite(metrics["image_auroc"])
    # white_bkgd false reaches the renderer (it composites on black: tests/test_nerf_math.py), the query is
    # loaded as painted, and the NeRF has learned the backdrop: the reference's corners show it, not white
    assert assets.renderer.white_bkgd is False
    backdrop = np.array(BACKDROP) / 255.0
    for sample in assets.test_set:
        assert np.abs(sample.image[0, 0] - backdrop).max() < 1e-6            # loaded as painted, not whitened
        reference = read_image_file(out_dir / f"{sample.name}_ref.png")
        corners = reference[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert np.abs(corners - backdrop).max() < 0.1, (sample.name, corners)


def test_class_without_poses_stops_with_a_pointer_to_colmap_poses(tmp_path, capsys):
    data_root = tmp_path / "synthetic"
    class_dir = generate_tiny(data_root, n_train=4, n_test_good=1, n_test_defect=1)
    (class_dir / "transforms.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        anomaly_nerf_lego.main(["--data_root", str(data_root), "--class_name", "tiny", "--ckpt_root",
                                str(tmp_path / "ckpts"), "--output_root", str(tmp_path / "out"), *SMALL_RUN])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "transforms.json: transforms file not found; the training views have no poses" in err
    assert f"python -m mad.colmap_poses --class_dir {class_dir}" in err


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "captures" / "skull" / "images"
NEIGHBOURS = [f"{i}.jpg" for i in range(57, 63)]   # six neighbouring photographs of the shipped capture's top ring


@pytest.mark.slow
def test_sfm_registers_a_few_views_of_the_shipped_capture_one_of_them_darker(tmp_path):
    """The shipped real capture (data/captures/skull): six neighbouring photographs, one of them at 55 % exposure
    (SIFT normalises the gain: the README's promise for photographs whose exposure differs). SfM registers all six,
    the cameras stand where a hand-held ring puts them (about 20 degrees apart), and the bounds written beside the
    poses come from the sparse points on the object."""
    pytest.importorskip("pycolmap")
    from mad.colmap_poses import recover_poses
    from mad.options import SfmOptions

    good = tmp_path / "skull" / "train" / "good"
    good.mkdir(parents=True)
    for k, name in enumerate(NEIGHBOURS):
        image = cv2.imread(str(SHIPPED / name))
        if k == 2:
            image = (image.astype(np.float32) * 0.55).round().astype(np.uint8)
        cv2.imwrite(str(good / f"{k}.png"), image)
    report = recover_poses(tmp_path / "skull", SfmOptions(sfm_num_threads=1, sfm_peak_threshold=0.002,
                                                          sfm_init_min_inliers=50, sfm_abs_pose_min_inliers=15),
                           progress=False)
    assert report["registered"] == len(NEIGHBOURS) and report["unregistered"] == []
    transforms = json.loads((tmp_path / "skull" / "transforms.json").read_text())
    centres = np.array([np.asarray(f["transform_matrix"])[:3, 3] for f in transforms["frames"]])
    steps = [math.degrees(math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))
             for a, b in itertools.pairwise(centres)]
    assert all(3 < s < 40 for s in steps), steps
    bounds = transforms["bounds"]
    spread = report["point_distance_from_centre"]
    assert bounds["object_radius"] == pytest.approx(1.15 * spread["p99"], rel=1e-3) and 0.1 < spread["p99"] < 2.0
    distances = np.linalg.norm(centres, axis=1)
    assert bounds["near"] == pytest.approx(distances.min() - bounds["object_radius"], abs=1e-3)


def test_a_query_photographed_at_another_exposure_is_relit_not_flagged():
    """A photograph of the shipped capture and the same photograph at 55 % exposure (the README's promise for
    queries whose exposure differs from the training photographs'): compared as they are, the darker one
    differs everywhere; with score_relight_sigma the reference is relit to the query and the map falls to a
    fraction; a painted stain on the darker query still peaks the relit map, near the stain."""
    from anomaly.options import ScoreOptions
    from anomaly.scorer import anomaly_map
    from features.backbone import random_backbone_for_tests

    photo = cv2.cvtColor(cv2.resize(cv2.imread(str(SHIPPED / "58.jpg")), (120, 80), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_BGR2RGB)
    reference = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    darker = reference * 0.55
    stained = darker.clone()
    stained[:, :, 36:44, 56:64] *= 0.4
    backbone = random_backbone_for_tests("cpu")
    plain = anomaly_map(backbone, darker, reference, ScoreOptions(score_sigma=1.0))
    relit_opts = ScoreOptions(score_sigma=1.0, score_relight_sigma=12.0)
    relit = anomaly_map(backbone, darker, reference, relit_opts)
    assert relit.mean() < 0.3 * plain.mean()
    stain_map = anomaly_map(backbone, stained, reference, relit_opts)[0]
    peak = torch.nonzero(stain_map == stain_map.max())[0].float()
    assert torch.dist(peak, torch.tensor([39.5, 59.5])) < 16 and stain_map.max() > 2 * relit.max()
