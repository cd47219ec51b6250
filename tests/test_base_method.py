"""BaseMethod plumbing: EMA warm-up, parameter groups, schedule, checkpoint round trip."""

import lightning as L
import pytest
import torch

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import Supervised
from lit_effdl.methods.base import WeightEMA, warmup_cosine


def test_ema_warmup_decay_and_buffers_copied():
    live = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(live, decay=0.999)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        live[0].weight.add_(1.0)
        live[1].running_mean.fill_(5.0)
    ema.update(live, step=0)  # decay_0 = min(0.999, 1/10) = 0.1
    expected = 0.1 * before + 0.9 * live[0].weight
    assert torch.allclose(ema.module[0].weight, expected)
    assert torch.equal(ema.module[1].running_mean, live[1].running_mean)


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10) == 0.1
    assert warmup_cosine(9, 100, 10) == 1.0
    assert abs(warmup_cosine(55, 100, 10) - 0.5) < 1e-9
    assert warmup_cosine(100, 100, 10) == 0.0


def test_norms_and_biases_have_no_weight_decay():
    model = Supervised(num_classes=4, weight_decay=1e-3)
    groups = {g["name"]: g for g in model.param_groups()}
    assert groups["backbone"]["weight_decay"] == 1e-3 and groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in groups["backbone"]["params"])
    assert all(p.ndim <= 1 for p in groups["backbone_no_decay"]["params"])


def test_fit_then_checkpoint_reload_gives_same_predictions(tmp_path, fast_trainer_kwargs):
    dm = SyntheticDataModule(num_classes=4, num_train=384, batch_size=32)
    model = Supervised(num_classes=4, in_chans=3, ema_decay=0.9, lr=0.05)
    trainer = L.Trainer(max_epochs=3, **fast_trainer_kwargs)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = Supervised.load_from_checkpoint(path, weights_only=True).eval()
    model.eval()
    images = dm.sources.test.images[:16]
    with torch.no_grad():
        assert torch.equal(model.eval_logits(images), reloaded.eval_logits(images))
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert set(result) >= {"test/acc", "test/loss"}
    assert result["test/acc"] > 0.5  # 4 classes: chance is 0.25


def test_warmup_counts_epochs_when_the_run_is_set_in_steps(fast_trainer_kwargs):
    """max_steps with max_epochs=-1: one warm-up epoch is one epoch of batches, not the whole run."""
    dm = SyntheticDataModule(num_classes=3, image_size=16, channels=3, num_train=32, num_test=8, batch_size=8)
    model = Supervised(num_classes=3, in_chans=3, backbone="small_cnn_w8", warmup_epochs=1)
    trainer = L.Trainer(max_steps=12, max_epochs=-1, limit_val_batches=0, **fast_trainer_kwargs)
    trainer.fit(model, dm)
    batches_per_epoch = trainer.num_training_batches
    assert trainer.global_step == 12 and batches_per_epoch < 12
    factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert factor(batches_per_epoch - 1) == warmup_cosine(batches_per_epoch - 1, 12, batches_per_epoch) == 1.0


def test_a_run_without_length_is_refused_for_a_schedule(fast_trainer_kwargs):
    dm = SyntheticDataModule(num_classes=3, image_size=16, channels=3, num_train=32, num_test=8, batch_size=8)
    model = Supervised(num_classes=3, in_chans=3, backbone="small_cnn_w8", scheduler="cosine")
    trainer = L.Trainer(max_epochs=-1, max_time={"seconds": 5}, limit_val_batches=0, **fast_trainer_kwargs)
    with pytest.raises(UserError, match="max_steps"):
        trainer.fit(model, dm)
