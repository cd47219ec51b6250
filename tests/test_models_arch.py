"""Classic architectures by name on small inputs; GoogLeNet auxiliary losses and heads; deformable swap."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from lit_effdl.errors import UserError
from lit_effdl.methods import Finetune, Supervised
from lit_effdl.models import create_backbone
from lit_effdl.models.auxiliary import DEFAULT_AUX_WEIGHT, classifier_heads, loss_with_aux, split_aux
from lit_effdl.models.loading import classifier_keys
from lit_effdl.models.deformable import DeformableConv2d, swap_deformable


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "seresnet18", "efficientnet_b0"])
def test_architectures_by_name_run_on_small_inputs(name):
    model = create_backbone(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5)


def test_efficientnet_compound_scaling_grows_width_depth_and_resolution():
    import timm

    sizes, params = [], []
    for k in range(4):
        model = create_backbone(f"efficientnet_b{k}", num_classes=10)
        params.append(sum(p.numel() for p in model.parameters()))
        sizes.append(timm.get_pretrained_cfg(f"efficientnet_b{k}").input_size[-1])
    assert params == sorted(params) and len(set(params)) == 4
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def _googlenet_batch():
    torch.manual_seed(0)
    return {"image": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), "target": torch.tensor([1, 3])}


def test_googlenet_training_loss_is_main_plus_weighted_aux():
    model = Supervised(backbone="googlenet", num_classes=4, in_chans=3)
    model.train()
    batch = _googlenet_batch()
    torch.manual_seed(1)
    loss = model.training_step(batch, 0)
    torch.manual_seed(1)  # same dropout draws
    out = model.backbone(model.prepare(batch["image"]))
    main, aux = split_aux(out)
    assert len(aux) == 2
    expected = F.cross_entropy(main, batch["target"]) + 0.3 * (
        F.cross_entropy(out.aux_logits1, batch["target"]) + F.cross_entropy(out.aux_logits2, batch["target"])
    )
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-6)
    model.eval()
    with torch.no_grad():
        logits = model(batch["image"])
    assert type(logits) is torch.Tensor and logits.shape == (2, 4)


def test_one_head_lookup_for_finetune_and_weight_loading():
    net = create_backbone("googlenet", num_classes=4, in_chans=3)
    heads = classifier_heads(net)
    assert heads[0] is net.fc and net.aux1 in heads and net.aux2 in heads
    assert classifier_keys(net) == {k for k, _ in net.named_parameters() if k.startswith(("fc.", "aux1.", "aux2."))}
    assert classifier_heads(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))) == []


def test_aux_weight_default_is_written_once():
    from lit_effdl.methods.base import BaseMethod

    default = inspect.signature(BaseMethod.__init__).parameters["aux_weight"].default
    assert default is DEFAULT_AUX_WEIGHT  # the same object, not a second 0.3
    assert inspect.signature(loss_with_aux).parameters["aux_weight"].default is DEFAULT_AUX_WEIGHT


def test_googlenet_aux_weight_and_finetune_new_heads():
    model = Finetune(mode="linear_probe", backbone="googlenet", num_classes=4, in_chans=3, aux_weight=0.5)
    assert len(model.heads) == 3  # fc + two auxiliary classifiers train, the body is frozen
    model.train()
    assert not any(m.training for m in model.body_norms())
    loss = model.training_step(_googlenet_batch(), 0)
    loss.backward()
    assert model.backbone.aux1.fc2.weight.grad is not None
    assert all(p.grad is None for p in model.body_parameters())


def test_timm_inception_v3_aux_logits_are_split():
    out = (torch.randn(2, 3), torch.randn(2, 3))
    loss, logits = loss_with_aux(out, torch.tensor([0, 1]), F.cross_entropy, 0.3)
    expected = F.cross_entropy(out[0], torch.tensor([0, 1])) + 0.3 * F.cross_entropy(out[1], torch.tensor([0, 1]))
    assert torch.allclose(loss, expected) and logits is out[0]
    model = create_backbone("inception_v3", num_classes=3, aux_logits=True)
    assert hasattr(model, "AuxLogits")


@pytest.mark.parametrize("name", ["resnet18", "cifar_resnet18"])
def test_deformable_swap_starts_as_the_same_function(name):
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=4).eval()
    x = torch.randn(2, 3, 32 if name == "resnet18" else 16, 32 if name == "resnet18" else 16)
    with torch.no_grad():
        before = model(x)
    swapped = swap_deformable(model)
    assert swapped >= 4 and isinstance(model.layer4[0].conv1, DeformableConv2d)
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max() < 1e-5
    # offsets are learnable: the offset predictor gets a gradient
    model.train()
    model(x).sum().backward()
    assert model.layer4[0].conv1.offset.weight.grad is not None


def test_deformable_option_of_the_factory_and_its_refusal():
    model = create_backbone("resnet18", num_classes=4, deformable=True)
    assert any(isinstance(m, DeformableConv2d) for m in model.modules())
    with pytest.raises(UserError, match="layer4"):
        create_backbone("small_cnn", num_classes=4, deformable=True)
