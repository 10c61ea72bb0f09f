"""Shared fixtures: one tiny synthetic class in the MAD layout, generated once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

# Parameters of the tiny class (tests may import these to know what to expect).
TINY_CLASS = "tiny"
TINY_SEED = 0
TINY_SIZE = 32
TINY_N_TRAIN = 12
TINY_N_TEST_GOOD = 2
TINY_N_TEST_DEFECT = 2  # per defect type (Burrs, Missing, Stains)
TINY_SUPERSAMPLE = 2


def generate_tiny(data_root: Path, overwrite: bool = False, **overrides) -> Path:
    """The tiny class under data_root; `overrides` are generator options without their synth_ prefix."""
    from mad.options import SynthOptions
    from mad.synth.generate import generate_class

    options = {"seed": TINY_SEED, "size": TINY_SIZE, "n_train": TINY_N_TRAIN, "n_test_good": TINY_N_TEST_GOOD,
                   "n_test_defect": TINY_N_TEST_DEFECT, "supersample": TINY_SUPERSAMPLE, "workers": 1}
    options.update(overrides)
    opts = SynthOptions(**{f"synth_{k}": v for k, v in options.items()})
    return generate_class(data_root, TINY_CLASS, opts, overwrite=overwrite, progress=False)


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """Tiny tensor ops run fastest on one thread; on a small shared machine more threads thrash."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A dataset root `<tmp>/synthetic` holding the class `tiny` (see tiny_class_dir)."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_tiny(root)
    return root


@pytest.fixture(scope="session")
def tiny_class_dir(tiny_data_root) -> Path:
    """A tiny synthetic class in the MAD layout (32x32 RGB on white, 12 train views with poses,
    2 test/good + 2 per defect type Burrs/Missing/Stains with masks, test_poses.json). Read-only:
    copy it before modifying anything."""
    return tiny_data_root / TINY_CLASS
