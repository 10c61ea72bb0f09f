"""The options machinery (common.options + omniposead.config): config file and command-line precedence, list
and yes/no values, unknown options, per-class configs and the defaults in --help. The entry-point form of an
unknown key in a config file is in tests/test_reliability.py."""
from __future__ import annotations

import argparse
import re

import pytest

from common.options import str2bool
from omniposead.config import build_parser, parse_config


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "class.txt"
    path.write_text("# a comment\ndata_root = data/LEGO-3D\nclass_name = 01Gorilla\nN_samples = 16\n"
                    "netdepth = 4\nscore_stages = [2, 3]\nskips = []\nwhite_bkgd = no\n")
    return path


def _fails(argv, capsys) -> list[str]:
    with pytest.raises(SystemExit) as exc:
        parse_config(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


def test_the_file_sets_values_and_a_flag_overrides_it(config_file):
    cfg = parse_config(["--config", str(config_file), "--N_samples", "8"])
    assert cfg.nerf.N_samples == 8                     # the command line wins over the file
    assert cfg.nerf.netdepth == 4                      # the file wins over the default
    assert cfg.run.class_name == "01Gorilla" and cfg.run.white_bkgd is False
    assert cfg.nerf.netwidth == parse_config([]).nerf.netwidth  # untouched: the default
    assert parse_config(["--N_samples", "8", "--config", str(config_file)]).nerf.N_samples == 8  # order is free


def test_list_options_from_the_file_and_the_command_line(config_file):
    cfg = parse_config(["--config", str(config_file)])
    assert cfg.score.score_stages == (2, 3) and cfg.nerf.skips == ()
    cfg = parse_config(["--config", str(config_file), "--score_stages", "1", "4", "5", "--skips"])
    assert cfg.score.score_stages == (1, 4, 5) and cfg.nerf.skips == ()


@pytest.mark.parametrize("words, value", [(("1", "true", "Yes", "y", "ON"), True),
                                          (("0", "False", "no", "n", "off"), False)])
def test_yes_no_words(words, value):
    assert all(str2bool(w) is value for w in words)
    assert parse_config(["--save_overlays", words[2]]).evaluation.save_overlays is value


def test_a_bare_flag_means_yes_and_a_bad_word_is_one_line(capsys):
    assert parse_config(["--allow_random_backbone"]).backbone.allow_random_backbone is True
    with pytest.raises(argparse.ArgumentTypeError, match="expected a boolean, got 'maybe'"):
        str2bool("maybe")
    assert _fails(["--white_bkgd", "maybe"], capsys) == [
        "error: argument --white_bkgd: expected a boolean, got 'maybe'"]


def test_unknown_options_are_named_with_the_closest_key(tmp_path, capsys):
    assert _fails(["--N_sampls", "3"], capsys) == ["error: unknown option --N_sampls (did you mean 'N_samples'?)"]
    config = tmp_path / "bad.txt"
    config.write_text("zzz_nothing_like_it = 1\n")
    assert _fails(["--config", str(config)], capsys) == [f"error: {config}: unknown key 'zzz_nothing_like_it'"]


def test_for_class_changes_the_class_and_its_folders_only(config_file):
    cfg = parse_config(["--config", str(config_file), "--ckpt_root", "ck", "--output_root", "out"])
    other = cfg.for_class("02Unicorn")
    assert other.run.class_name == "02Unicorn" and cfg.run.class_name == "01Gorilla"
    assert other.run.ckpt_dir.parts[-3:] == ("ck", "LEGO-3D", "02Unicorn")
    assert other.run.output_dir.parts[-3:] == ("out", "LEGO-3D", "02Unicorn")
    assert other.run.replace(class_name="01Gorilla") == cfg.run
    assert all(getattr(other, stage) == getattr(cfg, stage) for stage in ("nerf", "train", "score", "inerf"))


def test_help_lists_each_option_with_its_default():
    text = re.sub(r"\s+", " ", build_parser().format_help())
    assert re.search(r"--N_samples N_SAMPLES [^-]+ \(default: 64\)", text)
    assert "--score_stages [SCORE_STAGES ...]" in text and "(default: [1, 2, 3, 4, 5])" in text
    assert "--config CONFIG" in text
