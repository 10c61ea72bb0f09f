"""NeRF checkpoints load with weights_only=True: a file carrying a pickled callable is refused in one line
naming the file, and the callable never runs; a damaged file gets one line too."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from common.errors import PadError
from nerf.checkpoint import read_checkpoint


class RunsCode:
    """A pickled object whose loading calls os.mkdir(marker): what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _malicious_checkpoint(path, marker):
    torch.save({"model": {"w": torch.zeros(2)}, "arch": {}, "step": 1, "payload": RunsCode(marker)}, path)


def test_the_payload_does_run_code_when_unpickled(tmp_path):
    """The fixture is real: plain unpickling (what an unsafe torch.load does) executes its callable."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.is_dir()


def test_a_checkpoint_carrying_a_callable_is_refused_and_nothing_runs(tmp_path):
    path, marker = tmp_path / "nerf.pt", tmp_path / "ran"
    _malicious_checkpoint(path, marker)
    with pytest.raises(PadError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"refusing to load NeRF checkpoint {path}: it holds Python objects (")
    assert "mkdir" in message
    assert not marker.exists()


def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "nerf.pt"
    torch.save({"model": {}, "arch": {}}, path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(PadError) as err:
        read_checkpoint(path)
    assert str(err.value).startswith(f"cannot read NeRF checkpoint {path}: the file is damaged")
    assert "\n" not in str(err.value)


def test_a_checkpoint_with_non_finite_weights_is_refused_at_load(tmp_path):
    """A diverged training's NaN weights made NaN maps, and the error then blamed a map (issue 38)."""
    path = tmp_path / "nerf.pt"
    torch.save({"model": {"a": torch.zeros(2), "b": torch.tensor([1.0, float("nan")]), "step": torch.tensor(3)},
                "arch": {}}, path)
    with pytest.raises(PadError) as err:
        read_checkpoint(path)
    assert str(err.value) == (f"NeRF checkpoint {path} has non-finite weights (NaN or inf in b): its training "
                              "diverged; retrain, e.g. with a lower lrate")
    torch.save({"model": {"a": torch.zeros(2), "step": torch.tensor(3)}, "arch": {}}, path)
    assert read_checkpoint(path)["model"]["a"].tolist() == [0.0, 0.0]


def test_check_views_refuses_other_views_and_notes_an_unchecked_checkpoint(tmp_path, capsys):
    from types import SimpleNamespace

    from nerf.checkpoint import check_views

    views = SimpleNamespace(fingerprint="a" * 64, folder=tmp_path / "train")
    check_views(tmp_path / "nerf.pt", {"data": {"views": "a" * 64}}, views)            # the same: silent
    assert capsys.readouterr().out == ""
    with pytest.raises(PadError, match=r"nerf\.pt was trained on other training images or poses than those in "
                                       r".*train \(checkpoint bbbbbbbbbbbb, data aaaaaaaaaaaa\)"):
        check_views(tmp_path / "nerf.pt", {"data": {"views": "b" * 64}}, views)
    check_views(tmp_path / "nerf.pt", {"data": {}}, views)                               # older: a notice
    assert "does not record what it was trained on" in capsys.readouterr().out
