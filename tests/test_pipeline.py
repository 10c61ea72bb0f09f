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
from mad.loader import load_test_set
from omniposead import pipeline
from omniposead.config import parse_config

SIZE = 48
NERF_ARGS = [                # the demo recipe at 48 px: tri-planes at a third of the demo's resolutions
    "--field", "triplane", "--grid_resolutions", "16", "32", "64",
    "--netdepth", "4", "--netwidth", "64", "--netdepth_fine", "4", "--netwidth_fine", "64", "--skips",
    "--multires", "6", "--multires_views", "2", "--N_samples", "32", "--N_importance", "0", "--N_rand", "1024",
    "--lrate", "5e-3", "--lrate_decay", "2", "--precrop_iters", "100", "--n_iters", "500",
    "--holdout_every", "8", "--i_val", "500", "--i_weights", "500", "--seed", "0", "--device", "cpu",
    "--occupancy_grid", "true", "--occupancy_samples", "64", "--occupancy_warmup", "100",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data_root, ckpt_root, train summary): a 48x48 synthetic class and its trained NeRF."""
    from mad.options import SynthOptions
    from mad.synth.generate import generate_class

    base = tmp_path_factory.mktemp("pipeline")
    data_root = base / "synthetic"
    generate_class(data_root, "toy", SynthOptions(synth_seed=3, synth_size=SIZE, synth_n_train=40,
                                                  synth_n_test_good=3, synth_n_test_defect=2, synth_supersample=2,
                                                  synth_workers=1), progress=False)
    cfg = parse_config(["--data_root", str(data_root), "--class_name", "toy",
                        "--ckpt_root", str(base / "ckpts"), *NERF_ARGS])
    summary = pipeline.train_class(cfg, torch.device("cpu"), progress=False)
    return data_root, base / "ckpts", summary


@pytest.mark.slow
def test_demo_recipe_beats_mean_colour_by_8db(trained):
    _, _, summary = trained
    assert summary.val_psnr - summary.baseline_psnr >= 8.0, summary


def _pipeline_args(data_root, ckpt_root, out_root):
    return ["--data_root", str(data_root), "--class_name", "toy", "--ckpt_root", str(ckpt_root),
            "--output_root", str(out_root), *NERF_ARGS, "--desc_dim", "16", "--retrieval_size", "64",
            "--inerf_steps", "15", "--inerf_rays", "128", "--inerf_batch", "3", "--inerf_detector", "orb",
            "--score_sigma", "1", "--image_score_pool", "8", "--n_qualitative", "2"]


def _official(args):
    """The same run under score_protocol = official, which sets score_sigma and image_score_pool itself
    (giving them too is an error)."""
    cut = {i for i, a in enumerate(args) if a in ("--score_sigma", "--image_score_pool")}
    return [a for i, a in enumerate(args) if i not in cut and i - 1 not in cut] + ["--score_protocol", "official"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_interrupted_run_resumes_without_recomputing_finished_images(trained, tmp_path, monkeypatch):
    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    args = [*_pipeline_args(data_root, ckpts, tmp_path / "out"), "--evaluate", "false"]
    real_save = pipeline.save_result
    saved: list[str] = []

    def save_then_interrupt(out_dir, name, *a, **kw):
        real_save(out_dir, name, *a, **kw)
        saved.append(name)
        if len(saved) == 4:  # mid-way through the second batch of three
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_result", save_then_interrupt)
    with pytest.raises(SystemExit) as exc:      # Ctrl-C: one "interrupted: ..." line, exit code 130
        anomaly_nerf_lego.main(args)
    assert exc.value.code == 130
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


def _residual_model(data_root, ckpts):
    cfg = parse_config(["--data_root", str(data_root), "--class_name", "toy", "--ckpt_root", str(ckpts),
                        *NERF_ARGS, "--desc_dim", "16", "--retrieval_size", "64", "--score_normalization", "residual"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bundled backbone
        return pipeline.load_class(cfg, torch.device("cpu"), train=False, progress=False, poses=False).residual


@pytest.mark.slow
def test_residual_model_is_fitted_on_heldout_training_views_only(trained, tmp_path):
    """Replacing every test image and mask by noise changes nothing in the fit; changing the NeRF refits."""
    from anomaly.residual import RESIDUAL_NAME

    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    model = _residual_model(data_root, ckpts)
    assert model is not None and model.notes["heldout"] and model.notes["views"] == list(range(0, 40, 8))
    saved = ckpts / "synthetic" / "toy" / RESIDUAL_NAME
    assert saved.is_file()

    other = tmp_path / "data" / "synthetic"
    shutil.copytree(data_root / "toy", other / "toy")
    rng = np.random.default_rng(0)
    import imageio.v3 as iio

    for png in list((other / "toy" / "test").rglob("*.png")) + list((other / "toy" / "ground_truth").rglob("*.png")):
        image = iio.imread(png)
        iio.imwrite(png, rng.integers(0, 256, image.shape, dtype=np.uint8) if image.ndim == 3
                    else (255 - image).astype(np.uint8))
    other_ckpts = tmp_path / "other_ckpts"
    shutil.copytree(ckpt_root, other_ckpts)
    refit = _residual_model(other, other_ckpts)
    assert refit.fingerprint == model.fingerprint
    for a, b in zip(model.mean + model.std, refit.mean + refit.std, strict=True):
        assert torch.equal(a, b)

    # the cache is reused as long as the NeRF is the same, refitted when it changes
    stamp = saved.stat().st_mtime_ns
    assert _residual_model(data_root, ckpts).fingerprint == model.fingerprint and saved.stat().st_mtime_ns == stamp
    state = torch.load(ckpts / "synthetic" / "toy" / "nerf.pt", weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 0.01
    torch.save(state, ckpts / "synthetic" / "toy" / "nerf.pt")
    changed = _residual_model(data_root, ckpts)
    assert changed.fingerprint != model.fingerprint and saved.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_official_protocol_end_to_end_and_no_mixing_on_resume(trained, tmp_path):
    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    args = _official(_pipeline_args(data_root, ckpts, tmp_path / "out"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert anomaly_nerf_lego.main(args) == 0
    out_dir = tmp_path / "out" / "synthetic" / "toy"
    samples = load_test_set(data_root / "toy")
    maps = [np.load(out_dir / f"{s.name}.npy") for s in samples]
    assert all(m.shape == (224, 224) for m in maps)  # raw maps at the script's resolution
    metrics = json.loads((out_dir / "metrics.json").read_text())
    low, high = metrics["test_set_minmax"]
    assert low == pytest.approx(min(m.min() for m in maps)) and high == pytest.approx(max(m.max() for m in maps))
    scores = {entry["name"]: entry["image_score"] for entry in metrics["images"]}
    for s, m in zip(samples, maps, strict=True):  # image score = plain max of the min-max normalised map
        assert scores[s.name] == pytest.approx((m.max() - low) / (high - low), abs=1e-6)
    assert metrics["scorer"]["score_protocol"] == "official" and metrics["image_score_pool"] == 1
    # another scorer on the same outputs: every map is made again (run.json), never a mix of two scorers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.run_class(parse_config(_pipeline_args(data_root, ckpts, tmp_path / "out")), torch.device("cpu"),
                           progress=False)
    for s in samples:
        assert np.load(out_dir / f"{s.name}.npy").shape == (SIZE, SIZE)
        assert json.loads((out_dir / f"{s.name}.json").read_text())["scorer"]["score_protocol"] == "paper"


@pytest.mark.slow
def test_decomposition_rows_and_pipeline_results_untouched(trained, tmp_path, capsys):
    from benchmarks import decompose
    from omniposead.decomposition import oracle_references

    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    args = _pipeline_args(data_root, ckpts, tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anomaly_nerf_lego.main(args)
    out_dir = tmp_path / "out" / "synthetic" / "toy"
    before = {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}

    samples = load_test_set(data_root / "toy")
    good = [i for i, s in enumerate(samples) if s.defect_type == "good"]
    from mad.loader import load_train_views

    views = load_train_views(data_root / "toy")
    oracle = oracle_references(data_root / "toy", samples, views.intrinsics)
    for i in good:  # the generator's render at the true pose IS the anomaly-free test image
        assert np.array_equal(np.round(oracle[i] * 255), np.round(samples[i].image * 255))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert decompose.main(args) == 0
        assert decompose.main(_official(args)) == 0
    printed = capsys.readouterr().out
    assert "| oracle |" in printed and "| nerf_true_pose |" in printed and "| pipeline |" in printed
    table = json.loads((out_dir / "decomposition.json").read_text())
    assert set(table["variants"]) == {"paper/none", "official/none"}
    rows = table["variants"]["paper/none"]["rows"]
    assert rows["oracle"]["image_auroc"] == 1.0  # the oracle reference differs from a query only at its defect
    for row in ("oracle", "nerf_true_pose", "pipeline"):
        assert set(rows[row]) == {"pixel_auroc", "image_auroc", "pixel_aupro", "pixel_f1"}
    assert {p: p.read_bytes() for p in before} == before  # per-image results untouched


@pytest.mark.slow
def test_detail_levers_render_each_reference_once_and_score_every_variant(trained, tmp_path, monkeypatch):
    from benchmarks import bench_detail_levers

    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    renders = []
    real = bench_detail_levers.nerf_references
    monkeypatch.setattr(bench_detail_levers, "nerf_references", lambda *a: renders.append(1) or real(*a))
    monkeypatch.setattr(bench_detail_levers, "ROOT", tmp_path / "levers")
    flags = " ".join(_pipeline_args(data_root, ckpts, tmp_path / "out"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench_detail_levers.main(["--config", "", "--classes", flags, "--variant", "config", "",
                                  "--variant", "unsmoothed", "--score_sigma 0",
                                  "--variant", "coarse_march", "--render_samples 8", "--tag", "t"])
    assert len(renders) == 2                       # the scorer variant reuses the config's references
    results = json.loads((tmp_path / "levers" / "t.json").read_text())["results"]
    config, unsmoothed, coarse = (results[k][0] for k in ("config", "unsmoothed", "coarse_march"))
    assert config["oracle_image_auroc"] == 1.0     # the oracle differs from a query only at its defect
    assert config["loss"] == pytest.approx(config["oracle_image_auroc"] - config["image_auroc"])
    assert unsmoothed["render_s"] == config["render_s"] and coarse["render_s"] != config["render_s"]
    assert set(config["per_defect"]) == {s.defect_type for s in load_test_set(data_root / "toy")} - {"good"}


@pytest.mark.slow
def test_residual_model_without_heldout_views_warns_and_uses_training_views(trained, tmp_path):
    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    cfg = parse_config(["--data_root", str(data_root), "--class_name", "toy", "--ckpt_root", str(ckpts),
                        *NERF_ARGS, "--holdout_every", "0", "--residual_fallback_views", "4", "--desc_dim", "16",
                        "--retrieval_size", "64", "--score_normalization", "residual"])
    with pytest.warns(UserWarning, match="holdout_every = 0"):
        model = pipeline.load_class(cfg, torch.device("cpu"), train=False, progress=False, poses=False).residual
    assert model.notes == {"views": [0, 13, 26, 39], "heldout": False, "score_protocol": "paper"}


@pytest.mark.slow
def test_the_pose_polish_runs_after_inerf_and_keeps_a_pose_only_where_its_loss_fell(trained, tmp_path):
    """pose_polish_steps: every query's iNeRF pose is polished against the nearest training photographs; the
    record carries the polish's loss before and after, never higher after, and the poses move, by a few degrees at
    most (a polish, not a search). Whether they move towards the truth is a matter of size: at 48 px this toy's
    depth is too coarse to say (tests/test_photometric_polish.py checks the recovery on exact photographs; the
    400 px figures are in benchmarks/RESULTS.md)."""
    from common.rotations import rotation_error_deg

    data_root, ckpt_root, _ = trained
    ckpts = tmp_path / "ckpts"
    shutil.copytree(ckpt_root, ckpts)
    args = _pipeline_args(data_root, ckpts, tmp_path / "out")
    cfg = parse_config(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assets = pipeline.load_class(cfg, torch.device("cpu"), train=False, progress=False, poses=False)
    images = np.stack([s.image for s in assets.test_set])
    plain = pipeline.estimate_batch_poses(assets, images)
    assets.cfg = parse_config([*args, "--pose_polish_steps", "20"])
    polished = pipeline.estimate_batch_poses(assets, images)
    moved = []
    for before, after in zip(plain, polished, strict=True):
        assert before.polish_loss is None and after.polish_loss is not None
        assert after.polish_loss[1] <= after.polish_loss[0]
        assert after.record()["pose_polish_loss"] == list(after.polish_loss)
        moved.append(rotation_error_deg(after.refined_pose, before.refined_pose))
    assert max(moved) < 5.0 and sum(m > 0 for m in moved) >= len(moved) // 2
