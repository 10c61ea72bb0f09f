"""The evaluation's outputs on a tiny fake output folder: metrics.json against AUROCs computed by hand
(scikit-learn), the figures' files and sizes, the terminal report and the all-class table."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import evaluation.class_evaluation as class_evaluation
from anomaly.options import ScoreOptions
from anomaly.results import result_paths, save_result
from common.run import RunOptions
from evaluation.class_evaluation import evaluate_class
from evaluation.options import EvalOptions
from evaluation.report import report, results_table
from mad.loader import load_test_set
from tests.test_auroc_test import SIZE, make_class

N_QUALITATIVE = 3


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A class of 6 test images (good, Burrs, Stains; 2 each) with imperfect maps, evaluated once."""
    tmp_path = tmp_path_factory.mktemp("report")
    data_root, output_root = tmp_path / "data" / "toy", tmp_path / "outputs"
    cdir = make_class(data_root, "01Toy")
    run = RunOptions(data_root=str(data_root), class_name="01Toy", output_root=str(output_root))
    samples = load_test_set(cdir)
    rng = np.random.default_rng(3)
    maps = {}
    for s in samples:   # signal inside the defect, noise everywhere: AUROCs strictly between 0.5 and 1
        amap = (0.6 * s.mask + rng.random(s.mask.shape)).astype(np.float32)
        maps[s.name] = amap
        save_result(run.output_dir, s.name, amap, {"image_score": 0.0, "label": s.label,
                                                   "defect_type": s.defect_type, "backbone": "test backbone"},
                    query=s.image, reference=s.image)
    score, ev = ScoreOptions(image_score_pool=1), EvalOptions(n_qualitative=N_QUALITATIVE)
    metrics = evaluate_class(run, score, ev)
    return run, score, ev, samples, maps, metrics


def test_metrics_json_holds_the_hand_computed_aurocs(evaluated):
    run, _, _, samples, maps, metrics = evaluated
    saved = json.loads((run.output_dir / "metrics.json").read_text())
    masks = np.concatenate([s.mask.ravel() for s in samples])
    values = np.concatenate([maps[s.name].ravel() for s in samples])
    labels = [s.label for s in samples]
    scores = [float(maps[s.name].max()) for s in samples]          # image_score_pool = 1: the plain max
    pixel, image = roc_auc_score(masks, values), roc_auc_score(labels, scores)
    assert 0.5 < pixel < 1.0 and 0.5 < image <= 1.0
    assert saved["pixel_auroc"] == pytest.approx(pixel, abs=1e-12)
    assert saved["image_auroc"] == pytest.approx(image, abs=1e-12)
    assert [m["image_score"] for m in saved["images"]] == pytest.approx(scores)
    burrs = [i for i, s in enumerate(samples) if s.defect_type in ("good", "Burrs")]
    assert saved["per_defect"]["Burrs"]["image_auroc"] == pytest.approx(
        roc_auc_score([labels[i] for i in burrs], [scores[i] for i in burrs]))
    assert saved["per_defect"]["Burrs"]["pixel_auroc"] == pytest.approx(roc_auc_score(
        np.concatenate([samples[i].mask.ravel() for i in burrs]),
        np.concatenate([maps[samples[i].name].ravel() for i in burrs])))
    assert (saved["n_images"], saved["n_good"], saved["n_defective"]) == (6, 2, 4)
    good = [maps[s.name] for s in samples if s.label == 0]
    assert saved["colour_scale"] == pytest.approx([min(m.min() for m in good), max(m.max() for m in good)])
    assert saved == json.loads(json.dumps(metrics))                  # the file is what evaluate_class returned


def test_figures_are_written_with_their_sizes(evaluated):
    run, *_ = evaluated
    roc = cv2.imread(str(run.output_dir / "roc.png"))
    assert roc.shape[:2] == (500, 500) and roc.std() > 0             # 5 x 5 in at 100 dpi, not blank
    sheet = cv2.imread(str(run.output_dir / "qualitative.png"))
    # 5 columns of 2.4 in; one row of 2.4 in per shown image plus 0.6 in for the title, at 100 dpi
    assert sheet.shape[:2] == (round(100 * (2.4 * N_QUALITATIVE + 0.6)), 1200) and sheet.std() > 0
    overlay = cv2.imread(str(result_paths(run.output_dir, "Burrs/1").overlay))
    assert overlay.shape == (SIZE, SIZE, 3)


def test_a_test_set_already_loaded_is_not_loaded_again(evaluated, monkeypatch):
    run, score, ev, samples, _, metrics = evaluated

    def no_second_load(_run):
        raise AssertionError("the test set was loaded again")

    monkeypatch.setattr(class_evaluation, "load_run_test_set", no_second_load)
    again = evaluate_class(run, score, ev, write_outputs=False, samples=samples)
    assert again == metrics


def test_report_lines_and_the_mean_row_of_the_table():
    metrics = {"class": "01Toy", "n_images": 6, "n_good": 2, "backbone": "b", "pixel_auroc": 0.9123,
               "image_auroc": 0.75, "pixel_aupro": 0.5, "aupro_fpr_limit": 0.3, "pixel_f1": 0.4567,
               "pixel_threshold": 2.5,
               "per_defect": {"Burrs": {"n_images": 2, "image_auroc": 1.0, "pixel_auroc": None, "pixel_aupro": None}}}
    assert report(metrics).splitlines() == [
        "== 01Toy: 6 test images (2 good), backbone: b ==", "pixel AUROC: 0.912", "image AUROC: 0.750",
        "pixel AUPRO: 0.500 (FPR <= 0.3)", "pixel F1: 0.457 (the best over thresholds, at map value 2.5)",
        "  Burrs (2 images vs good): image AUROC 1.000, pixel AUROC n/a, pixel AUPRO n/a"]
    rows = [{"class": "A", "pixel_auroc": 0.9, "image_auroc": 0.8, "pixel_aupro": 0.7, "pixel_f1": 0.5},
            {"class": "B", "pixel_auroc": 0.8, "image_auroc": 0.5, "pixel_aupro": 0.6, "pixel_f1": 0.3}]
    assert results_table(rows).splitlines()[0] == \
        "| class | pixel AUROC (%) | image AUROC (%) | pixel AUPRO (%) | pixel F1 (%) |"
    assert results_table(rows).splitlines()[2:] == [
        "| A | 90.0 | 80.0 | 70.0 | 50.0 |", "| B | 80.0 | 50.0 | 60.0 | 30.0 |",
        "| **Mean (2 classes)** | **85.0** | **65.0** | **65.0** | **40.0** |"]
    assert results_table([]).splitlines()[2:] == []
    # a class evaluated before pixel F1 was recorded: n/a, and the mean over the others
    assert results_table([rows[0], {**rows[1], "pixel_f1": None}]).splitlines()[3:] == [
        "| B | 80.0 | 50.0 | 60.0 | n/a |", "| **Mean (2 classes)** | **85.0** | **65.0** | **65.0** | **50.0** |"]
    # extra columns: as given, n/a where a row has none, the mean over the rows that have one
    rows[0].update(pose_deg=0.5, seconds=10.0)
    rows[1].update(pose_deg=None, seconds=30.0)
    table = results_table(rows, (("pose_deg", "pose (deg)", ".2f"), ("seconds", "s", ".0f"))).splitlines()
    assert table[0].endswith("| pose (deg) | s |") and table[1].endswith("---:|---:|")
    assert table[2:] == ["| A | 90.0 | 80.0 | 70.0 | 50.0 | 0.50 | 10 |",
                         "| B | 80.0 | 50.0 | 60.0 | 30.0 | n/a | 30 |",
                         "| **Mean (2 classes)** | **85.0** | **65.0** | **65.0** | **40.0** | 0.50 | 20 |"]


def test_query_cost_is_the_mean_over_the_records_and_is_reported():
    records = [{"seconds": {"pose": 1.0, "render": 0.5, "score": 0.25}, "pose_work_rays": 1000,
                "pose_work_samples": 8000},
               {"seconds": {"pose": 3.0, "render": 0.5, "score": 0.75}, "pose_work_rays": 3000,
                "pose_work_samples": 4000},
               {"seconds": {"pose": 2.0, "render": 0.5, "score": 0.5}}]          # made before work was counted
    cost = class_evaluation.query_cost(records)
    assert cost["seconds"] == {"pose": 2.0, "render": 0.5, "score": 0.5, "total": 3.0}
    assert cost["pose_rays"] == 2000 and cost["pose_samples"] == 6000
    assert class_evaluation.query_cost([{}]) == {"seconds": {"pose": None, "render": None, "score": None,
                                                             "total": None}, "pose_rays": None, "pose_samples": None}
    metrics = {"class": "c", "n_images": 3, "n_good": 1, "backbone": "b", "pixel_auroc": 1.0, "image_auroc": 1.0,
               "pixel_aupro": 1.0, "aupro_fpr_limit": 0.3, "per_defect": {}, "query_cost": cost}
    line = "per query: 3.00 s (pose 2.00, render 0.50, score 0.50); pose work 2,000 rays, 6,000 field evaluations"
    assert line in report(metrics)
