"""``init_from``: every method starts from the backbone body of a lit-effdl checkpoint, never from its heads."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import (Distill, Finetune, FixMatch, FlexMatch, FreeMatch, NoisyStudent, OfflinePseudoLabel,
                               PseudoLabel, Supervised)

NET = dict(backbone="small_cnn_w8", num_classes=4, in_chans=3)
METHODS = {  # constructors only: teachers are read when a fit starts, so their files need not exist here
    "Supervised": Supervised, "Finetune": Finetune, "FixMatch": FixMatch, "FlexMatch": FlexMatch,
    "FreeMatch": FreeMatch, "PseudoLabel": PseudoLabel, "OfflinePseudoLabel": OfflinePseudoLabel,
    "NoisyStudent": NoisyStudent, "Distill": partial(Distill, teacher_backbone="small_cnn_w8", teacher_checkpoint="t.pt"),
}


def source_checkpoint(path, backbone: str = "small_cnn_w8") -> dict[str, torch.Tensor]:
    """A lit-effdl checkpoint laid out as ``Trainer.save_checkpoint`` writes it, with an EMA copy unlike the
    live net (the evaluated network: the one loaded) and a projection head outside the backbone (SimCLR's).
    Returns the EMA copy's state: what ``init_from`` should load, its classifier excepted."""
    torch.manual_seed(1)
    source = Supervised(**{**NET, "backbone": backbone}, ema_decay=0.5)
    with torch.no_grad():
        for p in source.ema.module.parameters():
            p.add_(1.0)
        source.ema.module.fc.weight.fill_(0.5)  # a head of the same shape: loadable, and still not loaded
    state = {**source.state_dict(), "projector.0.weight": torch.ones(16, 32), "projector.0.bias": torch.ones(16)}
    torch.save({"state_dict": state, "hyper_parameters": dict(source.hparams), "epoch": 3}, path)
    return source.ema.module.state_dict()


@pytest.mark.parametrize("name", list(METHODS))
def test_init_from_loads_the_backbone_body_only(name, tmp_path):
    expected = source_checkpoint(tmp_path / "source.ckpt")
    model = METHODS[name](init_from=str(tmp_path / "source.ckpt"), **NET)
    for net in (model.backbone, model.eval_backbone):  # the EMA copy (FixMatch...) starts from the loaded body too
        state = net.state_dict()
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            if key.startswith("fc."):
                assert not torch.equal(state[key], value), f"{name} loaded the classifier's {key}"
            else:
                assert torch.equal(state[key], value), f"{name} did not load {key}"


def test_init_from_refuses_another_backbone_naming_the_key_and_both_shapes(tmp_path):
    source_checkpoint(tmp_path / "wide.ckpt", backbone="small_cnn_w16")
    with pytest.raises(UserError, match=r"init_from \S*wide\.ckpt .*wrong shape \(file vs model\): "
                                        r"features\.0\.0\.weight \(16, 3, 3, 3\) vs \(8, 3, 3, 3\)"):
        FixMatch(init_from=str(tmp_path / "wide.ckpt"), **NET)
    state = dict(source_checkpoint(tmp_path / "source.ckpt"))
    del state["features.2.1.running_mean"]
    torch.save(state, tmp_path / "partial.pt")  # a plain state_dict in the backbone's names loads as well
    with pytest.raises(UserError, match=r"init_from \S*partial\.pt .*missing: features\.2\.1\.running_mean"):
        Supervised(init_from=str(tmp_path / "partial.pt"), **NET)
    with pytest.raises(UserError, match=r"init_from \S*absent\.ckpt is not a file"):
        Supervised(init_from=str(tmp_path / "absent.ckpt"), **NET)
    with pytest.raises(UserError, match="checkpoint_path.*init_from.*keep one"):
        Finetune(init_from=str(tmp_path / "source.ckpt"), checkpoint_path=str(tmp_path / "source.ckpt"), **NET)


def test_a_resumed_fit_restores_its_own_weights_not_init_from(tmp_path, fast_trainer_kwargs):
    source = source_checkpoint(tmp_path / "source.ckpt")
    dm = SyntheticDataModule(num_classes=4, image_size=16, num_train=64, batch_size=16)
    model = Supervised(init_from=str(tmp_path / "source.ckpt"), lr=0.1, **NET)
    trainer = L.Trainer(max_steps=2, limit_val_batches=0, **fast_trainer_kwargs)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "trained.ckpt")
    trained = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert not torch.equal(trained["features.0.0.weight"], source["features.0.0.weight"])
    resumed = Supervised(init_from=str(tmp_path / "source.ckpt"), lr=0.1, **NET)  # as the CLI rebuilds it from the config
    L.Trainer(max_steps=2, limit_val_batches=0, **fast_trainer_kwargs).fit(
        resumed, dm, ckpt_path=tmp_path / "trained.ckpt", weights_only=True)
    assert all(torch.equal(value, trained[key]) for key, value in resumed.backbone.state_dict().items())
