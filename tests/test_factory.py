"""The backbone factory: local nets, timm by name, torchvision GoogLeNet, clear errors."""

import pytest
import torch

from lit_effdl.errors import UserError
from lit_effdl.models import create_backbone


@pytest.mark.parametrize("name", ["small_cnn", "small_cnn_w16", "wrn_28_2", "cifar_resnet18", "resnet18"])
def test_backbones_give_logits(name):
    model = create_backbone(name, num_classes=7, in_chans=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert model.get_classifier().out_features == 7


def test_parameter_counts_of_kd_pair():
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert 20_000 < count(create_backbone("small_cnn_w16", 10, in_chans=1)) < 30_000
    assert 340_000 < count(create_backbone("small_cnn_w64", 10, in_chans=1)) < 400_000
    assert 1_400_000 < count(create_backbone("wrn_28_2", 10)) < 1_550_000


def test_timm_options_reach_the_model():
    model = create_backbone("resnet18", num_classes=3, drop_rate=0.3, drop_path_rate=0.1)
    assert model.drop_rate == 0.3
    assert any(type(m).__name__ == "DropPath" for m in model.modules())


def test_googlenet_from_torchvision():
    model = create_backbone("googlenet", num_classes=4).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_unknown_name_lists_closest():
    with pytest.raises(UserError, match=r"unknown backbone 'resnet_18'.*closest valid names:.*resnet18"):
        create_backbone("resnet_18", num_classes=10)


def test_pretrained_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="checkpoint_path"):
        create_backbone("resnet18", num_classes=10, pretrained=True)
