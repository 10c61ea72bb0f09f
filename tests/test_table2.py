"""benchmarks.table2: the paper-layout table and its Mean row from saved pipeline benchmark records."""
import json

import pytest

from benchmarks import table2


def _record(name, image, burrs, rot, over, data_s, nerf_true_pose=None):
    return {"class": name, "pixel_auroc": 0.99, "image_auroc": image, "pixel_aupro": 0.98,
            "per_defect": {"Burrs": {"image_auroc": burrs}, "Missing": {"image_auroc": 1.0},
                           "Stains": {"image_auroc": 0.9}},
            "pose": {"iNeRF": {"rot_median_deg": rot, "rot_p90_deg": 2 * rot, "share_over_5deg": over / 10, "n": 10}},
            "stages": {"seconds": {"data": data_s, "nerf": 60.0, "maps": 120.0}},
            "decomposition": None if nerf_true_pose is None else
            {"oracle": {"image_auroc": 1.0}, "nerf_true_pose": {"image_auroc": nerf_true_pose},
             "pipeline": {"image_auroc": image}}}


def test_rows_and_mean(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"rows": [_record("a", 0.9, 0.8, 0.2, 1, 20.0, 0.85),
                                         _record("b", 1.0, 1.0, 0.4, 0, 0.0)]}))
    table2.main([str(path), "--label", "a=a (seed 0)"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2] == ("| a (seed 0) | 99.0 | 90.0 | 98.0 | 80.0 / 100.0 / 90.0 | 0.20 / 0.40, 1 of 10 "
                        "| 3.3 (data 20 s) | 100.0 / 85.0 / 90.0 |")
    assert "| n/a / n/a / n/a |" in lines[3]            # no decomposition run for b
    # the mean of what was measured: image (0.9 + 1.0) / 2, Burrs 0.9, rotation 0.3, 3.2 min, NeRF@GT of a alone
    assert lines[4] == ("| **Mean** (2 classes) | **99.0** | **95.0** | **98.0** | 90.0 / 100.0 / 90.0 "
                        "| 0.30 median | 3.2 | 100.0 / 85.0 / 90.0 |")


def test_reused_nerf_counts_its_training_and_saved_decomposition_is_read(tmp_path, capsys):
    """A run on an existing NeRF shows its training's seconds, not the 1 s of loading it; a record without a
    decomposition takes the one benchmarks.decompose saved beside the class's outputs, for the record's scorer."""
    out = tmp_path / "outputs" / "c"
    out.mkdir(parents=True)
    rows = {"oracle": {"image_auroc": 1.0}, "nerf_true_pose": {"image_auroc": 0.7}, "pipeline": {"image_auroc": 0.8}}
    (out / "decomposition.json").write_text(json.dumps({"variants": {
        "paper/residual": {"rows": {**rows, "nerf_true_pose": {"image_auroc": 0.1}}},
        "paper/residual/reprojected": {"rows": rows}}}))
    record = {**_record("c", 0.8, 0.8, 0.2, 0, 0.0), "output_dir": str(out), "scorer": "paper/residual/reprojected",
              "nerf_seconds": 150.0}
    record["stages"]["seconds"]["nerf"] = 0.5
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"rows": [record]}))
    table2.main([str(path)])
    line = capsys.readouterr().out.strip().splitlines()[2]
    assert line.endswith("| 4.5 (data 0 s) | 100.0 / 70.0 / 80.0 |")     # (0 + 150 + 120) s, the reprojected row

    record["scorer"] = "paper/none"                    # a scorer with no saved table is an error, not another's rows
    path.write_text(json.dumps({"rows": [record]}))
    with pytest.raises(SystemExit, match=r"decomposition\.json.*'paper/none'"):
        table2.main([str(path)])


def test_the_pipeline_benchmark_tables_a_class_without_test_poses():
    """A class whose training poses came from SfM has no test poses (their frame is not the SfM one): its row
    says so instead of failing the run after the pipeline."""
    from benchmarks.bench_pipeline import table

    row = {"class": "skull_sfm", "field": "triplane", "wall_s": 517.0, "nerf_seconds": 172.0, "heldout_psnr": 26.25,
           "pixel_auroc": 0.928, "image_auroc": 0.564, "pixel_aupro": 0.778, "pose": None}
    line = table([row]).splitlines()[2]
    assert line.startswith("| skull_sfm | triplane | 8.6 | 172 | 26.25 | 0.928 | 0.564 | 0.778 | n/a / n/a |")
    assert "n/a (no test poses)" in line and line.count("|") == table([row]).splitlines()[0].count("|")
