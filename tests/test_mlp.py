"""MLP backbones (``mlp_<w>_<w>``): shapes, parameter counts, dropout, the max-norm constraint in a fit."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_effdl.callbacks import MaxNormConstraint
from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import Supervised
from lit_effdl.models import create_backbone
from lit_effdl.models.mlp import MLP, mlp_widths


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names_give_widths_and_the_papers_sizes():
    assert mlp_widths("mlp_1200_1200") == (1200, 1200)
    assert mlp_widths("mlp_30") == (30,)
    assert mlp_widths("small_cnn") is None and mlp_widths("mlp_") is None
    teacher = create_backbone("mlp_1200_1200", 10, in_chans=1)
    assert count(teacher) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    student = create_backbone("mlp_800_800", 10, in_chans=1).eval()
    assert count(student) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    assert student(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert student.get_classifier().in_features == 800
    three = create_backbone("mlp_30_20_10", 4, in_chans=3, image_size=8).eval()
    assert three(torch.rand(2, 3, 8, 8)).shape == (2, 4)


def test_bad_names_and_options_are_refused():
    with pytest.raises(UserError, match="width 0"):
        create_backbone("mlp_0_10", 10, in_chans=1)
    with pytest.raises(UserError, match="no residual branches"):
        create_backbone("mlp_10", 10, in_chans=1, drop_path_rate=0.1)
    with pytest.raises(UserError, match="input_drop_rate=1.0"):
        create_backbone("mlp_10", 10, in_chans=1, input_drop_rate=1.0)
    with pytest.raises(UserError, match="max_norm=0"):
        create_backbone("mlp_10", 10, in_chans=1, max_norm=0)
    with pytest.raises(UserError, match="784 input values.*image_size"):
        create_backbone("mlp_10", 10, in_chans=1).eval()(torch.rand(1, 1, 32, 32))


def test_dropout_on_inputs_and_hidden_units_only_in_training():
    mlp = MLP((64, 64), 10, in_chans=1, image_size=8, drop_rate=0.5, input_drop_rate=0.5)
    drops = [m.p for m in mlp.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5, 0.5]  # inputs, between the hidden layers, before the classifier
    x = torch.rand(4, 1, 8, 8)
    assert not torch.equal(mlp.train()(x), mlp(x))
    assert torch.equal(mlp.eval()(x), mlp(x))


def test_max_norm_without_its_callback_is_an_error():
    mlp = MLP((16,), 4, in_chans=1, image_size=8, max_norm=1.0).train()
    with pytest.raises(UserError, match="MaxNormConstraint"):
        mlp(torch.rand(2, 1, 8, 8))


def _fit(max_norm: float | None) -> Supervised:
    L.seed_everything(0)
    dm = SyntheticDataModule(num_classes=4, image_size=8, channels=1, num_train=128, num_test=16, batch_size=32,
                             labeled_augment="none")
    model = Supervised(backbone="mlp_32", num_classes=4, in_chans=1, lr=2.0, weight_decay=0.0,
                       backbone_kwargs={"image_size": 8, "max_norm": max_norm})
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[MaxNormConstraint()])
    trainer.fit(model, dm)
    return model


def test_max_norm_bounds_every_units_incoming_weights_after_each_step():
    free = _fit(None)  # the same fit unconstrained: its weights leave the ball
    bound = 0.3
    linear_norms = lambda m: [l.weight.norm(dim=1).max().item() for l in m.backbone.modules()
                              if isinstance(l, torch.nn.Linear)]
    assert max(linear_norms(free)) > 2 * bound
    constrained = _fit(bound)
    assert max(linear_norms(constrained)) <= bound + 1e-5
    assert not constrained.backbone.max_norm_enforced  # released when the fit ends
