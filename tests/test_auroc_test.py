"""auroc_test.py end to end on a tiny MAD-format class with hand-made score maps."""
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import auroc_test
from anomaly.results import is_done, load_results, result_paths, save_result

SIZE = 16


def _square_mask(k: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[3 + k:7 + k, 4:9] = True
    return mask


def make_class(root: Path, name: str, defects=("Burrs", "Stains"), n_per_folder=2) -> Path:
    """A tiny class in the MAD layout: transforms.json + train/good, test/good, test/<defect>, ground_truth."""
    cdir = root / name
    rng = np.random.default_rng(0)
    frames = []
    for i in range(2):
        path = cdir / "train" / "good" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8))
        pose = np.eye(4)
        pose[2, 3] = 4.0 + i
        frames.append({"file_path": f"train/good/{i}.png", "transform_matrix": pose.tolist()})
    (cdir / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    for folder in ("good", *tuple(defects)):
        for i in range(n_per_folder):
            path = cdir / "test" / folder / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8))
            if folder != "good":
                mpath = cdir / "ground_truth" / folder / f"{i}_mask.png"
                mpath.parent.mkdir(parents=True, exist_ok=True)
                iio.imwrite(mpath, _square_mask(i).astype(np.uint8) * 255)
    return cdir


def write_perfect_maps(out_dir: Path, class_dir: Path) -> None:
    """Maps equal to the GT masks (plus low noise outside): every metric is 1."""
    from mad.loader import load_test_set

    rng = np.random.default_rng(1)
    for s in load_test_set(class_dir):
        amap = s.mask.astype(np.float32) + 0.1 * rng.random(s.mask.shape).astype(np.float32) * (~s.mask)
        save_result(out_dir, s.name, amap,
                    {"image_score": float(amap.max()), "label": s.label, "defect_type": s.defect_type,
                     "backbone": "test backbone"},
                    query=s.image, reference=s.image)


@pytest.fixture
def layout(tmp_path):
    data_root = tmp_path / "data" / "LEGO-3D"
    output_root = tmp_path / "outputs"
    cdir = make_class(data_root, "01Tiny")
    write_perfect_maps(output_root / "LEGO-3D" / "01Tiny", cdir)
    return data_root, output_root


def _args(data_root, output_root, *extra):
    return ["--data_root", str(data_root), "--output_root", str(output_root), "--n_qualitative", "3", *extra]


def test_perfect_maps_give_auroc_one(layout, capsys):
    data_root, output_root = layout
    assert auroc_test.main(_args(data_root, output_root, "--obj", "01Tiny")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "pixel AUROC: 1.000" in lines and "image AUROC: 1.000" in lines
    assert any(line.startswith("pixel AUPRO: 1.000") for line in lines)
    out = output_root / "LEGO-3D" / "01Tiny"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("pixel_auroc", "image_auroc", "pixel_aupro", "per_defect", "n_images", "backbone"):
        assert key in metrics
    assert metrics["n_images"] == 6 and metrics["backbone"] == "test backbone"
    assert set(metrics["per_defect"]) == {"Burrs", "Stains"}
    assert metrics["per_defect"]["Burrs"]["image_auroc"] == 1.0
    for fig in ("roc.png", "qualitative.png", "good/0_overlay.png", "Burrs/1_overlay.png"):
        assert (out / fig).stat().st_size > 0


def test_image_scores_are_recomputed_with_the_pool_option(layout, capsys):
    data_root, output_root = layout
    auroc_test.main(_args(data_root, output_root, "--obj", "01Tiny", "--image_score_pool", "1"))
    metrics = json.loads((output_root / "LEGO-3D" / "01Tiny" / "metrics.json").read_text())
    by_name = {m["name"]: m["image_score"] for m in metrics["images"]}
    assert by_name["Burrs/0"] == pytest.approx(1.0)  # pool 1 = plain max of the map
    assert metrics["image_score_pool"] == 1


def test_one_label_test_set_is_refused(tmp_path, capsys):
    data_root, output_root = tmp_path / "data" / "LEGO-3D", tmp_path / "outputs"
    cdir = make_class(data_root, "02Good", defects=())
    write_perfect_maps(output_root / "LEGO-3D" / "02Good", cdir)
    with pytest.raises(SystemExit) as exc:
        auroc_test.main(_args(data_root, output_root, "--obj", "02Good"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "test set has only good images: image AUROC needs both good and defective images" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_map_is_named(layout, capsys):
    data_root, output_root = layout
    missing = result_paths(output_root / "LEGO-3D" / "01Tiny", "Stains/1").map
    missing.unlink()
    with pytest.raises(SystemExit) as exc:
        auroc_test.main(_args(data_root, output_root, "--obj", "01Tiny"))
    assert exc.value.code == 2
    assert str(missing) in capsys.readouterr().err


def test_obj_all_writes_the_table_over_complete_classes_and_fails_on_the_rest(layout, capsys):
    data_root, output_root = layout
    make_class(data_root, "03NoMaps")
    assert auroc_test.main(_args(data_root, output_root, "--obj", "all")) == 1
    captured = capsys.readouterr()
    assert "error: [03NoMaps]" in captured.err and "result file missing" in captured.err
    assert "| 03NoMaps | FAILED |" in captured.out and "| 01Tiny | done |" in captured.out
    table = (output_root / "LEGO-3D" / "results_table.md").read_text()
    assert "| 01Tiny | 100.0 | 100.0 | 100.0 |" in table and "03NoMaps" not in table
    assert "| **Mean (1 class)** | **100.0** | **100.0** | **100.0** |" in table
    assert table in captured.out


def test_results_layout_round_trip(tmp_path):
    out = tmp_path / "o"
    paths = save_result(out, "Burrs/12", np.ones((4, 5), np.float32),
                        {"image_score": 1.0, "label": 1, "defect_type": "Burrs", "backbone": "b", "extra": [1, 2]})
    for name, label in (("good/2", 0), ("Burrs/3", 1)):
        save_result(out, name, np.zeros((4, 5)),
                    {"image_score": 0.0, "label": label, "defect_type": name.split("/")[0], "backbone": "b"})
    assert paths.map == out / "Burrs" / "12.npy" and paths.overlay == out / "Burrs" / "12_overlay.png"
    assert is_done(out, "Burrs/12") and not is_done(out, "Burrs/13")
    results = load_results(out)
    assert [r.name for r in results] == ["good/2", "Burrs/3", "Burrs/12"]
    assert results[2].record["extra"] == [1, 2] and results[2].load_map().dtype == np.float32
    with pytest.raises(ValueError, match="lacks"):
        save_result(out, "good/9", np.zeros((2, 2)), {"image_score": 0.0})


def test_perfect_maps_on_the_synthetic_tiny_class(tiny_data_root, tiny_class_dir, tmp_path, capsys):
    """The same on the shared synthetic class made by mad.synthesize (read-only; outputs in tmp)."""
    output_root = tmp_path / "outputs"
    write_perfect_maps(output_root / tiny_data_root.name / tiny_class_dir.name, tiny_class_dir)
    assert auroc_test.main(_args(tiny_data_root, output_root, "--obj", tiny_class_dir.name)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "pixel AUROC: 1.000" in lines and "image AUROC: 1.000" in lines
    metrics = json.loads((output_root / tiny_data_root.name / tiny_class_dir.name / "metrics.json").read_text())
    assert set(metrics["per_defect"]) == {"Burrs", "Missing", "Stains"}


def test_prediction_overlay_marks_predicted_red_and_truth_outline_green():
    from evaluation.plots import prediction_overlay

    image = np.ones((20, 20, 3), dtype=np.float32)
    truth = np.zeros((20, 20), dtype=bool)
    truth[5:15, 5:15] = True
    predicted = np.zeros((10, 10), dtype=bool)          # a map at half the image's resolution (official protocol)
    predicted[4:6, 4:6] = True                          # -> image pixels 8..11
    out = prediction_overlay(image, predicted, truth)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert tuple(out[9, 9]) == (230, 30, 30)            # predicted: red
    assert tuple(out[5, 10]) == (40, 220, 40)           # on the truth's outline: green
    assert out[0, 0, 0] == out[0, 0, 1] == out[0, 0, 2] < 200   # elsewhere: the dimmed image, grey
