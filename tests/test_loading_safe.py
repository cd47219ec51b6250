"""Safe loading: weights_only everywhere, pickles refused, foreign key maps and load-by-order."""

import ast
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import lit_effdl
from lit_effdl.errors import UserError
from lit_effdl.models.loading import (
    load_pretrained,
    load_weights,
    map_by_order,
    read_state_dict,
    remap_keys,
)


def _torch_load_calls(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                yield node


def test_torch_load_is_never_called_without_weights_only_true():
    package = Path(lit_effdl.__file__).parent
    calls = [(p, c) for p in package.rglob("*.py") for c in _torch_load_calls(p)]
    assert calls, "expected at least one torch.load in the package (loading.py)"
    for path, call in calls:
        flags = {kw.arg: kw.value for kw in call.keywords}
        ok = "weights_only" in flags and isinstance(flags["weights_only"], ast.Constant) and flags["weights_only"].value is True
        assert ok, f"{path}:{call.lineno} calls torch.load without weights_only=True"


def test_read_state_dict_passes_weights_only(tmp_path, monkeypatch):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert torch.equal(read_state_dict(tmp_path / "w.pt")["w"], torch.ones(2))
    assert seen.get("weights_only") is True


class Evil:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_pickle_needing_code_is_refused_clearly(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": Evil()}, path)
    with pytest.raises(UserError, match="refusing to load .*arbitrary code"):
        read_state_dict(path)
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(UserError):
        read_state_dict(tmp_path / "evil.pkl")


def test_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    net = nn.Linear(3, 2)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    other = nn.Linear(3, 2)
    load_weights(other, read_state_dict(tmp_path / "w.safetensors"), drop_classifier=False)
    assert torch.equal(other.weight, net.weight)


class Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)


def _foreign(classes=1000):
    """The same tensors as ``Net`` under another code base's names (and no BN counter)."""
    net = Net(classes)
    names = {"stem": "_conv_stem", "bn": "_bn0", "fc": "_fc"}
    state = OrderedDict(
        (names[k.split(".")[0]] + "." + k.split(".", 1)[1], v)
        for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")
    )
    return net, state


def test_explicit_prefix_map_renames_keys():
    net, state = _foreign(10)
    renamed = remap_keys(state, {"_conv_stem": "stem", "_bn0": "bn", "_fc": "fc"})
    target = Net(10)
    report = load_weights(target, renamed)
    assert report.clean and torch.equal(target.stem.weight, net.stem.weight)
    assert remap_keys({"_bn0x.w": torch.ones(1)}, {"_bn0": "bn"}) == {"_bn0x.w": torch.ones(1)}


def test_load_by_order_drops_only_a_differing_classifier():
    net, state = _foreign(1000)
    target = Net(10)
    mapped = map_by_order(target, state)
    assert "fc.weight" not in mapped and torch.equal(mapped["bn.running_var"], net.bn.running_var)
    report = load_weights(target, mapped)
    assert report.dropped_classifier and report.clean


def test_load_by_order_refuses_any_other_shape_difference(tmp_path):
    _, state = _foreign(10)
    state["_conv_stem.weight"] = torch.zeros(4, 3, 5, 5)
    with pytest.raises(UserError, match=r"shapes differ at _conv_stem.weight \(4, 3, 5, 5\) -> stem.weight"):
        map_by_order(Net(10), state)
    del state["_conv_stem.bias"]
    torch.save(state, tmp_path / "f.pt")
    with pytest.raises(UserError, match="holds 7 tensors, the named architecture 8"):
        load_pretrained(Net(10), tmp_path / "f.pt", key_map="by_order")


def test_mismatch_is_reported_by_name():
    state = Net(10).state_dict()
    state["extra.weight"] = torch.ones(1)
    del state["bn.weight"]
    with pytest.raises(UserError, match="missing: bn.weight.*unexpected: extra.weight"):
        load_weights(Net(10), state)


def test_pretrained_without_network_fails_fast_with_a_hint(monkeypatch):
    import socket
    import time

    from lit_effdl.models import create_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set: pass checkpoint_path"):
        create_backbone("resnet10t", 4, pretrained=True)

    def unreachable(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(UserError, match="cannot be reached.*pass checkpoint_path"):
        create_backbone("resnet10t", 4, pretrained=True)
    assert time.perf_counter() - start < 20  # no hub retries


def _lit_checkpoint(path: Path, with_ema: bool) -> dict[str, nn.Module]:
    """A lit-effdl-style checkpoint: backbone (and EMA) weights plus the run's hyper-parameters."""
    from lit_effdl.models import create_backbone

    torch.manual_seed(0)
    nets = {"backbone": create_backbone("small_cnn_w8", 3, in_chans=3), "ema": create_backbone("small_cnn_w8", 3, in_chans=3)}
    state = {f"backbone.{k}": v for k, v in nets["backbone"].state_dict().items()}
    if with_ema:
        state.update({f"ema.module.{k}": v for k, v in nets["ema"].state_dict().items()})
    hparams = {"backbone": "small_cnn_w8", "num_classes": 3, "in_chans": 3,
               "input_mean": (0.2, 0.3, 0.4), "input_std": (0.5, 0.6, 0.7)}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return nets


@pytest.mark.parametrize("with_ema", [True, False])
def test_evaluated_network_is_the_ema_copy_normalised_as_its_run_and_frozen(tmp_path, with_ema):
    from lit_effdl.models.teacher import load_evaluated_network

    nets = _lit_checkpoint(tmp_path / "run.ckpt", with_ema)
    expected = (nets["ema"] if with_ema else nets["backbone"]).eval()
    net = load_evaluated_network(tmp_path / "run.ckpt").train()  # stays in eval mode
    assert not any(m.training for m in net.modules()) and not any(p.requires_grad for p in net.parameters())
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    mean, std = torch.tensor((0.2, 0.3, 0.4)).view(1, -1, 1, 1), torch.tensor((0.5, 0.6, 0.7)).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.equal(net(images), expected((images.float() / 255.0 - mean) / std))
        assert torch.equal(net(images.float() / 255.0), net(images))  # float 0..1 images: the same inputs
    # the wrapper adds no state: fingerprints of pseudo-labels (hash of state_dict) keep their keys
    assert set(net.state_dict()) == {f"net.{k}" for k in expected.state_dict()}


def test_evaluated_network_bad_files_are_named(tmp_path):
    from lit_effdl.models.teacher import load_evaluated_network

    with pytest.raises(UserError, match="teacher_checkpoint .*missing.ckpt is not a file"):
        load_evaluated_network(tmp_path / "missing.ckpt")
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="plain.pt is not a lit-effdl checkpoint"):
        load_evaluated_network(tmp_path / "plain.pt")


def test_normalise_images_takes_sequences_or_per_channel_tensors():
    from lit_effdl.models.inputs import normalise_images

    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = torch.tensor((0.2, 0.3, 0.4)).view(1, -1, 1, 1), torch.tensor((0.5, 0.6, 0.7)).view(1, -1, 1, 1)
    expected = (images.float() / 255.0 - mean) / std
    assert torch.equal(normalise_images(images, mean, std), expected)
    assert torch.equal(normalise_images(images, (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)), expected)
    assert torch.equal(normalise_images(images, (0.5,), (0.5,)), (images.float() / 255.0 - 0.5) / 0.5)
