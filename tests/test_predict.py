"""Verdicts on new photos (predict.py): the thresholds on hand-computed fixtures, the masks, photos refused before
any work, resume, and the HTML report naming every photo and linking files that exist."""
from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

import anomaly_nerf_lego
import predict
from anomaly.scorer import defect_masks, image_scores
from benchmarks import check_report
from evaluation.metrics.base import EvaluationError
from evaluation.thresholds import f1_threshold, false_alarm_threshold, gumbel_quantile
from omniposead import predict as predict_module
from retrieval.database import WithoutViews
from tests.test_reliability import PIPELINE_TINY, _main_fails, _paths

# ----------------------------------------------------------------------------- thresholds


def test_false_alarm_threshold_on_a_hand_computed_fixture():
    """Scores 1..5: median 3, MAD 1, Gumbel scale b = 1 / 0.76705 = 1.30369, location 3 - 0.36651 b = 2.52218; the
    0.9 quantile 2.52218 - b ln(-ln 0.9) = 5.45598, above the largest score (5 views are too few for 10 %). By
    moments: mean 3, s = 1.58114, b = s sqrt(6) / pi = 1.23281, location 3 - 0.57722 b = 2.28840, quantile 5.06264.
    An outlier (a lost pose) moves the robust fit little and the moments' far."""
    t = false_alarm_threshold([3, 1, 5, 2, 4], 0.1)
    assert t.value == pytest.approx(5.45598, abs=1e-4)
    assert false_alarm_threshold([3, 1, 5, 2, 4], 0.1, fit="moments").value == pytest.approx(5.06264, abs=1e-4)
    assert false_alarm_threshold([3, 1, 5, 2, 4, 40], 0.1).value < 8.0
    assert false_alarm_threshold([3, 1, 5, 2, 4, 40], 0.1, fit="moments").value > 25.0
    assert t.few and t.n_scores == 5 and t.rate == 0.1 and "5 anomaly-free views at 10% false alarms" in t.source
    assert t.spread == 4.0
    assert t.normalised(t.value) == 0.5                              # 0.5 is the threshold
    assert t.normalised(t.value + 2.0) == 1.0 and t.normalised(t.value - 1.0) == pytest.approx(0.25)
    assert t.normalised(t.value + 99) == 1.0 and t.normalised(-99) == 0.0      # clipped
    assert not t.defective(t.value) and t.defective(t.value + 1e-9)
    assert not false_alarm_threshold(np.arange(20.0), 0.1).few        # 20 x 10 % = 2 expected false alarms


def test_false_alarm_threshold_keeps_its_rate_on_new_good_images():
    """Fitted on 40 maxima-like scores, the threshold lets about the asked share of 20,000 new ones through (a
    little more on average: a threshold estimated from few scores errs both ways, and a low one costs more false
    alarms than a high one saves; the robust fit varies more, 1.2-1.3x the rate against the moments' 1.1x)."""
    rng = np.random.default_rng(0)
    for rate in (0.05, 0.1, 0.2):
        rates = []
        for seed in range(20):
            sample = np.random.default_rng(seed).gumbel(3.0, 0.5, size=40)
            rates.append(float((rng.gumbel(3.0, 0.5, size=20000) > false_alarm_threshold(sample, rate).value)
                               .mean()))
        assert rate <= np.mean(rates) < 1.4 * rate, (rate, np.mean(rates))


def test_gumbel_quantile_matches_scipy_on_a_large_sample():
    from scipy.stats import gumbel_r

    sample = gumbel_r.rvs(loc=1.0, scale=2.0, size=200_000, random_state=1)
    for fit in ("robust", "moments"):
        assert gumbel_quantile(sample, 0.95, fit) == pytest.approx(gumbel_r.ppf(0.95, loc=1.0, scale=2.0), rel=0.01)


def test_false_alarm_threshold_refuses_what_it_cannot_use():
    with pytest.raises(EvaluationError, match="at least 2 finite scores"):
        false_alarm_threshold([1.0], 0.1)
    with pytest.raises(EvaluationError, match="at least 2 finite scores"):
        false_alarm_threshold([1.0, np.nan], 0.1)
    with pytest.raises(EvaluationError, match=r"in \(0, 1\)"):
        false_alarm_threshold([1.0, 2.0], 0.0)


def test_f1_threshold_on_a_hand_computed_fixture():
    """Calling 0.5 and above defective: TP 3, FP 1 -> F1 6 / 7, the best (0.6: 4 / 6, 0.8: 4 / 5); the threshold
    sits halfway to the next lower score, 0.2."""
    labels, scores = [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.5, 0.8, 0.9]
    t = f1_threshold(labels, scores)
    assert t.value == pytest.approx(0.35) and t.spread == pytest.approx(0.8) and t.n_scores == 6
    assert t.defective(np.array(scores)).tolist() == [False, False, True, True, True, True]
    assert t.normalised(0.35) == 0.5


def test_masks_are_empty_exactly_when_the_image_score_is_at_or_below_the_threshold():
    amap = np.zeros((1, 10, 10), np.float32)
    amap[0, 4, 4] = 9.0                                              # one hot pixel: 3x3 window averages <= 1
    covered = defect_masks(amap, 0.9, 3)[0]
    assert covered.sum() == 25 and covered[2:7, 2:7].all()          # every window holding it
    assert not defect_masks(amap, 1.0, 3).any()
    assert defect_masks(amap, 5.0, 1).sum() == 1                     # pool 1: the pixels above
    maps = np.random.default_rng(0).gamma(2.0, 1.0, size=(30, 24, 24)).astype(np.float32)
    scores = image_scores(maps, 5)
    threshold = float(np.median(scores))
    masks = defect_masks(maps, threshold, 5)
    assert (masks.any(axis=(1, 2)) == (scores > threshold)).all()


class _Ranked:
    """A database that ranks views 0..n-1 in a fixed order."""

    def __init__(self, order):
        self.order = np.asarray(order)

    def __len__(self):
        return len(self.order)

    def query(self, images, k=1):
        n = len(np.asarray(images))
        return np.tile(self.order[:k], (n, 1)), np.tile(np.arange(k, dtype=np.float32), (n, 1))


def test_a_view_scored_as_a_query_never_finds_itself():
    blind = WithoutViews(_Ranked([3, 0, 5, 1, 4, 2]), [0, 3])
    idx, dist = blind.query(np.zeros((2, 4, 4, 3)), k=2)
    assert idx.tolist() == [[5, 1], [5, 1]] and dist.tolist() == [[2.0, 3.0], [2.0, 3.0]]
    assert len(blind) == 4 and blind.query(np.zeros((1, 4, 4, 3)), k=99)[0].tolist() == [[5, 1, 4, 2]]


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def trained_tiny(tiny_class_dir, tmp_path):
    """(args, data_root): the tiny class with a (2-step) NeRF and its test maps made by the pipeline."""
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_class_dir, data_root / "tiny")
    args = [*_paths(tmp_path, data_root), "--class_name", "tiny", *PIPELINE_TINY]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                # the random backbone's warning
        assert anomaly_nerf_lego.main([*args, "--evaluate", "false"]) == 0
    return args, data_root


def _predict(args, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # the random backbone; the threshold on 2 held-out views
        return predict.main([*args, *extra])


def test_photos_of_another_size_or_aspect_are_refused_before_any_work(tiny_class_dir, tmp_path, capsys):
    """No checkpoint exists: the photos' errors come first, one line each, naming the file and the fix."""
    data_root = tmp_path / "synthetic"
    shutil.copytree(tiny_class_dir, data_root / "tiny")
    bigger, wide, broken = tmp_path / "bigger.png", tmp_path / "wide.png", tmp_path / "broken.png"
    cv2.imwrite(str(bigger), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(wide), np.zeros((32, 48, 3), np.uint8))
    broken.write_bytes(b"not a png")
    good = data_root / "tiny" / "test" / "good" / "0.png"
    lines = _main_fails(predict.main, [*_paths(tmp_path, data_root), "--class_name", "tiny", *PIPELINE_TINY,
                                       str(good), str(bigger), str(wide), str(broken)], capsys)
    assert len(lines) == 3
    assert lines[0].startswith(f"error: {bigger}: photo is 64x64 but class tiny takes 32x32") \
        and "--downscale 2" in lines[0]
    assert lines[1].startswith(f"error: {wide}: photo is 48x32 (aspect 1.500)") and "crop" in lines[1]
    assert lines[2].startswith(f"error: {broken}: cannot decode image")
    assert not (tmp_path / "ckpts").exists() and not (tmp_path / "outputs").exists()
    lines = _main_fails(predict.main, [*_paths(tmp_path, data_root), "--class_name", "tiny", *PIPELINE_TINY,
                                       str(tmp_path / "nothing_*.png")], capsys)
    assert len(lines) == 1 and "nothing_*.png: no photos there" in lines[0]


@pytest.mark.slow
def test_predict_writes_a_verdict_per_photo_and_resumes(trained_tiny, tmp_path, monkeypatch, capsys):
    args, data_root = trained_tiny
    test_dir = data_root / "tiny" / "test"
    photos = sorted(test_dir.glob("*/*.png"))
    out = tmp_path / "predicted"
    capsys.readouterr()
    assert _predict(args, str(test_dir / "good"), str(test_dir / "Burrs" / "*.png"), str(test_dir / "Stains"),
                    "--out", str(out)) == 0
    printed = capsys.readouterr().out
    chosen = sorted([p for p in photos if p.parent.name in ("good", "Burrs", "Stains")])
    names = [f"{p.parent.name}-{p.stem}" for p in chosen]        # stems clash across folders: the folder joins
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert sorted(r["name"] for r in rows) == sorted(names)
    for row in rows:
        assert row["verdict"] in ("good", "defective")
        assert (float(row["score"]) > 0.5) == (row["verdict"] == "defective")
        assert re.search(rf"^{row['name']}: {row['verdict'].upper()}", printed, re.M)
        for suffix in ("_overlay.png", "_mask.png", "_query.png", "_ref.png", ".npy"):
            assert (out / "photos" / f"{row['name']}{suffix}").is_file()
        mask = cv2.imread(str(out / "photos" / f"{row['name']}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        assert (int(row["defect_pixels"]) > 0) == (row["verdict"] == "defective")
    saved = json.loads((out / "predictions.json").read_text())
    threshold = saved["threshold"]
    # holdout_every 5 of 12 views
    assert threshold["image"]["n_scores"] == 3 and threshold["images"] == ["view 0", "view 5", "view 10"]
    assert "held-out training views" in threshold["source"] and "robust Gumbel fit" in threshold["source"]
    assert len(threshold["pose_errors_deg"]) == 3 and all(e >= 0 for e in threshold["pose_errors_deg"])
    assert all(len(p["pose"]) == 4 for p in saved["photos"])
    ckpt_threshold = tmp_path / "ckpts" / "synthetic" / "tiny" / "threshold.json"
    assert json.loads(ckpt_threshold.read_text())["fingerprint"] == threshold["fingerprint"]

    # a rerun makes no map; a new false-alarm rate only redraws the verdicts; a scorer change remakes every map
    made: list[str] = []
    real = predict_module.save_result
    monkeypatch.setattr(predict_module, "save_result", lambda o, name, *a, **kw: (made.append(name),
                                                                                  real(o, name, *a, **kw)))
    inputs = [str(p) for p in chosen]
    assert _predict(args, *inputs, "--out", str(out)) == 0 and made == []
    assert _predict(args, *inputs, "--out", str(out), "--max_false_alarm", "0.3") == 0 and made == []
    lower = json.loads((out / "predictions.json").read_text())["threshold"]["image"]["value"]
    assert lower < threshold["image"]["value"]
    assert _predict(args, *inputs, "--out", str(out), "--score_sigma", "1") == 0
    assert sorted(made) == sorted(f"photos/{n}" for n in names)
    # a labelled folder instead: the best F1 on its images, the masks at the best pixel F1 (on the map itself)
    made.clear()
    assert _predict(args, *inputs, "--out", str(out), "--score_sigma", "1", "--validation_dir",
                    str(data_root / "tiny")) == 0 and made == []
    labelled = json.loads((out / "predictions.json").read_text())["threshold"]
    assert labelled["source"].startswith("best F1 on 8 labelled images") and labelled["pixel_pool"] == 1
    assert labelled["images"][0] == "good/0" and len(labelled["scores"]) == 8


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.links = [], []

    def handle_starttag(self, tag, attrs):
        self.links += [value for key, value in attrs if key in ("src", "href") and value]

    def handle_data(self, data):
        self.text.append(data)


def _page(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text())
    return parser


@pytest.mark.slow
def test_predict_makes_the_pipelines_maps_and_the_reports_link_files_that_exist(trained_tiny, tmp_path,
                                                                                monkeypatch):
    args, data_root = trained_tiny
    test_dir = data_root / "tiny" / "test"
    folders = ["good", "Burrs", "Missing", "Stains"]                 # the pipeline's order: the same batch
    monkeypatch.chdir(tmp_path)
    out = Path("predicted")                                          # a relative output folder, linked from its page
    assert _predict(args, *(str(test_dir / f) for f in folders), "--out", str(out)) == 0
    class_out = tmp_path / "outputs" / "synthetic" / "tiny"
    photos = [p for f in folders for p in sorted(test_dir.glob(f"{f}/*.png"))]
    for photo in photos:                                             # the same pose, reference and map
        made = np.load(out / "photos" / f"{photo.parent.name}-{photo.stem}.npy")
        np.testing.assert_array_equal(made, np.load(class_out / photo.parent.name / f"{photo.stem}.npy"))
    page = _page(out / "report.html")
    text = " ".join(page.text)
    assert all(f"{p.parent.name}-{p.stem}" in text for p in photos)
    assert "held-out training views" in text and "unsure poses" in text
    assert len(page.links) == 2 * 4 * len(photos)                   # 4 thumbnails, each an <a> and an <img>
    assert all((out / link).is_file() for link in page.links)
    good = list(test_dir.glob("good/*.png"))
    # the test-set run's page, beside its qualitative.png
    import auroc_test

    assert auroc_test.main([*args]) == 0
    page = _page(class_out / "report.html")
    text = " ".join(page.text)
    names = [p.relative_to(data_root / "tiny" / "test").with_suffix("").as_posix()
             for p in (data_root / "tiny" / "test").glob("*/*.png")]
    assert all(name in text for name in names) and "image AUROC" in text
    assert all((class_out / link).resolve().is_file() for link in page.links)
    assert sum("ground_truth" in link for link in page.links) == 2 * (len(names) - len(good))
    # in a real browser where one is installed (CI installs Debian's chromium): every image loads
    if check_report.browser() is not None:
        assert check_report.main([str(out / "report.html"), str(class_out / "report.html")]) == 0
        (class_out / "good" / "0_ref.png").unlink()
        assert check_report.main([str(class_out / "report.html")]) == 1
