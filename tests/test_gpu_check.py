"""The GPU check's CPU rehearsal (`python -m benchmarks.gpu_check --tiny`): every section runs on a tiny class and
reports real figures, --sections reruns only the sections named, a section past its limit is cut with every figure
it had, and one that raises is recorded as failed while the others run (benchmarks/gpu_check.py)."""
from __future__ import annotations

import copy
import json
import math
import time

import pytest
import torch

from benchmarks import gpu_check
from omniposead.config import parse_config


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _run(args: list[str]) -> tuple[int, dict, str]:
    out = args[args.index("--out") + 1]
    code = gpu_check.main(args)
    with open(f"{out}/{gpu_check.REPORT_JSON}") as f:
        report = json.load(f)
    with open(f"{out}/{gpu_check.REPORT_MD}") as f:
        text = f.read()
    return code, report, text


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """(arguments, exit code, JSON report, markdown report) of the whole tiny rehearsal."""
    base = tmp_path_factory.mktemp("gpu_check")
    args = ["--tiny", "--device", "cpu", "--out", str(base / "report"), "--work_dir", str(base / "work")]
    return (args, *_run(args))


@pytest.mark.slow
def test_every_section_reports_real_figures(rehearsal):
    _, code, report, text = rehearsal
    assert code == 0
    sections = report["sections"]
    assert report["data"]["status"] == "ok" and report["data"]["size"] == "32x32"
    assert {name: sections[name]["status"] for name in gpu_check.SECTIONS} == dict.fromkeys(gpu_check.SECTIONS, "ok")

    cuda = sections["cuda_paths"]
    assert set(cuda["fields"]) == set(gpu_check.field_names())
    for figures in cuda["fields"].values():
        assert figures["resume_exact"] and figures["repeatable"] and figures["generator_equal"]
        assert figures["max_abs_diff"] == 0.0 and figures["again_max_abs_diff"] == 0.0   # the CPU repeats bit for bit
        psnr = figures["view_psnr"]
        assert _finite(psnr["straight"]) and psnr["resumed"] == psnr["straight"] and psnr["delta"] == 0.0
        assert figures["resumed_from_step"] == 6 and figures["tensors_compared"] > 10
        assert figures["autocast_dtype"] == ["float32"] and figures["fused_adam"] is False   # CPU: neither
        assert figures["grid_updates"] >= 2                          # before and after the resume point
    assert cuda["inerf"]["finite"] and _finite(cuda["inerf"]["initial_loss"], cuda["inerf"]["final_loss"])
    assert cuda["scoring"]["finite"] and cuda["scoring"]["map_device"] == "cpu"
    assert cuda["scoring"]["map_shape"] == [2, 32, 32]

    nerf = sections["nerf"]
    labels = {f"{name}/{kind}" for name in gpu_check.field_names() for kind in ("plain", "grid")}
    assert set(nerf["variants"]) == labels
    for runs in nerf["variants"].values():
        assert set(runs) == {"1s", "2s"}
        for r in runs.values():
            assert r["steps"] > 0
            assert _finite(r["rays_per_s"], r["val_psnr"], r["baseline_psnr"], r["render_ms_per_view"])
        assert runs["2s"]["steps"] > runs["1s"]["steps"]                       # resumed, not restarted
    sweep = nerf["sweep"]
    assert sweep["field"] == "triplane" and sweep["budget_s"] == 1.0 and set(sweep["rows"]) == {"64", "256", "1024"}
    for rays, r in sweep["rows"].items():
        assert r["rays_per_step"] == int(rays) and r["steps"] > 0 and r["occupied_fraction"] is not None
        assert _finite(r["rays_per_s"], r["val_psnr"], r["samples_per_ray"], r["render_ms_per_view"], r["lrate"])
    assert len(sweep["table"]) == 3

    det = sections["detection"]
    assert all(0.0 <= det[key] <= 1.0 for key in ("pixel_auroc", "image_auroc", "pixel_aupro"))
    assert det["n_images"] == 5 and det["wall_s"]["end_to_end"] > 0 and det["nerf"]["step"] > 0
    rows = det["decomposition"]["rows"]
    assert set(rows) == {"oracle", "nerf_true_pose", "pipeline"}
    assert all(_finite(*row.values()) for row in rows.values())
    cost = det["query_cost"]                                     # the counted work per query, beside its seconds
    assert cost["pose_rays"] > 0 and cost["pose_samples"] > 0 and cost["seconds"]["total"] > 0
    assert "per query: " in text and "field evaluations" in text

    pose = sections["pose"]
    assert pose["n"] == 5 and pose["seconds_per_query"] > 0
    for stage in ("retrieval", "iNeRF"):
        s = pose["stages"][stage]
        assert _finite(s["rot_median_deg"], s["trans_median_frac"], s["share_under_2deg"])

    for name in ("data", *gpu_check.SECTIONS):
        assert f"## {name}" in text
    assert "| mlp/grid | 2 s |" in text and "| oracle |" in text and "| iNeRF |" in text
    assert "| triplane | exact |" in text and "| mlp | exact |" in text and "seconds per query" in text
    assert "Rays per step: triplane" in text and "| 1024 | 2.00 |" in text


@pytest.mark.slow
def test_sections_reruns_only_those_named(rehearsal):
    args, _, before, _ = rehearsal
    time.sleep(1.0)                                   # a later start time than every section of the first run
    code, after, text = _run([*args, "--sections", "pose"])
    assert code == 0 and after["sections_run"] == ["pose"]
    pose = after["sections"]["pose"]
    assert pose["status"] == "ok" and "from_earlier_run" not in pose
    assert pose["started"] > before["sections"]["pose"]["started"]
    assert pose["source"].startswith("retrieval + iNeRF")   # no detection in this call: estimated here
    for name in ("cuda_paths", "nerf", "detection"):
        kept = dict(after["sections"][name])
        assert kept.pop("from_earlier_run") == before["sections"][name]["started"]
        assert kept == before["sections"][name]
    assert "from the run of" in text


@pytest.mark.slow
def test_a_section_past_its_limit_is_cut_and_keeps_its_figures(tmp_path):
    code, report, text = _run(["--tiny", "--device", "cpu", "--out", str(tmp_path / "report"), "--work_dir",
                               str(tmp_path / "work"),
                               "--sections", "nerf", "--variants", "mlp/plain,mlp/grid", "--nerf_budgets", "1", "60",
                               "--budget_s", "15"])
    nerf = report["sections"]["nerf"]
    assert code == 0 and nerf["status"] == "cut"
    assert set(nerf["variants"]) == {"mlp/plain", "mlp/grid"}
    assert all(set(runs) == {"1s"} for runs in nerf["variants"].values())
    assert "mlp/plain to 60 s" in nerf["cut"][0]
    assert "| nerf | cut |" in text and report["sections"]["pose"]["status"] == "not run"


def test_the_alarm_cuts_and_an_error_is_recorded():
    def slow(check, limit, out):
        out["figure"] = 1.0
        out["doing"] = "sleeping"
        time.sleep(5)

    def broken(check, limit, out):
        raise ValueError("no such thing\nsecond line")

    cut = gpu_check.run_step("slow", slow, None, 0.2)
    assert cut["status"] == "cut" and cut["figure"] == 1.0 and "during sleeping" in cut["cut"][0]
    assert cut["seconds"] < 2
    failed = gpu_check.run_step("broken", broken, None, 5.0)
    assert failed["status"] == "failed" and failed["error"].startswith("ValueError: no such thing (test_gpu_check.py:")


def test_unknown_sections_are_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--tiny", "--sections", "nerf,speed"])
    assert "unknown section(s) speed" in capsys.readouterr().err


def test_a_resume_that_is_not_bitwise_exact_reports_its_tolerance():
    weights = {"layer.weight": torch.tensor([[0.5, -2.0], [1.0, 0.25]]), "layer.bias": torch.tensor([0.1, 0.2])}
    state = {"step": 24, "model": weights, "optimizer": {"state": {0: {"step": torch.tensor(24.0)}}}}
    twin = copy.deepcopy(state)
    same = gpu_check.state_differences(state, twin, ("step", "model", "optimizer"))
    assert same.exact and same.compared == 3 and same.max_abs_diff == 0.0 and same.worst is None

    twin["model"]["layer.weight"][0, 1] += 1e-6
    delta = float(twin["model"]["layer.weight"][0, 1].double() - weights["layer.weight"][0, 1].double())
    assert delta == pytest.approx(1e-6, rel=0.05)             # 1e-6 as float32 rounds it next to -2.0
    found = gpu_check.state_differences(state, twin, ("step", "model", "optimizer"))
    assert not found.exact and found.differing == ["model.layer.weight"] and found.worst == "model.layer.weight"
    assert found.max_abs_diff == delta and found.max_rel_diff == pytest.approx(delta / 2.0)   # largest weight: 2
    cell = gpu_check._resume_cell({"resume_exact": found.exact, "differing_count": len(found.differing),
                                   "max_abs_diff": found.max_abs_diff, "max_rel_diff": found.max_rel_diff,
                                   "worst_tensor": found.worst})
    assert cell.startswith("not exact: 1 leaves differ; max weight diff 9.54e-07 (rel. 4.77e-07")

    twin["optimizer"]["state"][0]["step"] += 1                # a differing leaf outside the weights
    other = gpu_check.state_differences(state, twin, ("step", "model", "optimizer"))
    assert set(other.differing) == {"model.layer.weight", "optimizer.state.0.step"}
    assert other.max_abs_diff == delta


def test_the_sweep_scales_learning_rates_and_schedule_to_the_batch():
    cfg = parse_config(["--config", gpu_check.CONFIGS[False]], description="gpu_check")
    assert cfg.nerf.field == "triplane" and cfg.train.N_rand == 4096         # the recommended field, as users run it
    rows = {rays: gpu_check.sweep_config(cfg, rays) for rays in (4096, 16384, 65536)}
    same, _ = rows[4096]
    assert same.train == cfg.train and same.nerf == cfg.nerf.replace(occupancy_grid=True)
    for rays, scale in ((16384, 2.0), (65536, gpu_check.SWEEP_LR_CAP)):      # sqrt(4) = 2; sqrt(16) = 4, capped
        vcfg, settings = rows[rays]
        assert vcfg.train.N_rand == rays and vcfg.nerf.occupancy_grid and settings["lr_scale"] == scale
        assert vcfg.train.lrate == pytest.approx(cfg.train.lrate * scale)
        assert vcfg.nerf.grid_lrate == pytest.approx(cfg.nerf.grid_lrate * scale)
        assert vcfg.train.lrate_decay == pytest.approx(cfg.train.lrate_decay * 4096 / rays)
        assert vcfg.train.occupancy_warmup == max(1, round(cfg.train.occupancy_warmup * 4096 / rays))
