"""BaseMethod plumbing: EMA warm-up, parameter groups, schedule, checkpoint round trip, the
non-finite loss guard, logging through public API, the callbacks package."""

import csv
import inspect
import pkgutil
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

import lit_effdl
import lit_effdl.callbacks
from lit_effdl.callbacks.nonfinite import NonFiniteGuard
from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import NonFiniteLossError, UserError
from lit_effdl.methods import Supervised
from lit_effdl.methods.base import warmup_cosine
from lit_effdl.models.ema import WeightEMA


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
    assert ema.get_decay(10_000) == 0.999 and not any(p.requires_grad for p in ema.module.parameters())


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
    state = torch.load(path, weights_only=True)["state_dict"]
    assert any(k.startswith("ema.module.") for k in state)  # weight loading and teachers read these keys
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


# ---------------------------------------------------------------------- non-finite loss guard
class NaNAtStep(Supervised):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log_train("doubled", 2 * loss.detach(), batch_size=8)
        return loss * float("nan") if self.global_step == 2 else loss


def _nan_fit(model, kwargs, max_steps=5, **trainer_kwargs):
    trainer = L.Trainer(max_steps=max_steps, **{**kwargs, **trainer_kwargs})
    trainer.fit(model, datamodule=SyntheticDataModule(num_classes=4, num_train=256, batch_size=32))
    return trainer


def test_nonfinite_loss_stops_naming_step_batch_and_terms(fast_trainer_kwargs):
    model = NaNAtStep(num_classes=4, backbone="small_cnn_w16")
    with pytest.raises(NonFiniteLossError, match=r"global step 2 \(epoch 0, batch 2\).*train/loss=.*train/doubled="):
        _nan_fit(model, fast_trainer_kwargs)


def test_deferred_nonfinite_check_names_the_first_bad_step(fast_trainer_kwargs):
    """The accelerator mode on the CPU: recorded on the device, read on a logging step."""
    model = NaNAtStep(num_classes=4, backbone="small_cnn_w16")
    with pytest.raises(NonFiniteLossError, match=r"global step 2 \(seen at step 4"):
        _nan_fit(model, fast_trainer_kwargs, max_steps=8, log_every_n_steps=4,
                 callbacks=[NonFiniteGuard(check_every_step=False)])  # the Trainer's guard wins


def test_skip_nonfinite_skips_the_update_and_counts(fast_trainer_kwargs):
    model = NaNAtStep(num_classes=4, backbone="small_cnn_w16", skip_nonfinite=True)
    weights = {}

    class Watch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            weights[trainer.global_step] = [p.detach().clone() for p in pl_module.backbone.parameters()]

    trainer = _nan_fit(model, fast_trainer_kwargs, max_steps=4, callbacks=[Watch()])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights[2], weights[3]))  # step 2 moved nothing (momentum too)
    assert not all(torch.equal(a, b) for a, b in zip(weights[1], weights[2]))
    assert float(trainer.callback_metrics["train/skipped_steps"]) == 1.0


class TwoTerms(Supervised):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log_train("doubled", 2 * loss.detach(), batch_size=8)
        return loss


def test_terms_off_the_progress_bar_are_logged_on_the_loggers_steps(tmp_path, fast_trainer_kwargs):
    """``log_train`` decides a logging step from public values; the logger writes exactly those rows."""
    model = TwoTerms(num_classes=4, backbone="small_cnn_w16")
    kwargs = {**fast_trainer_kwargs, "logger": CSVLogger(str(tmp_path), name="csv")}
    trainer = _nan_fit(model, kwargs, max_steps=7, log_every_n_steps=3, limit_val_batches=0)
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    loss_steps = [r["step"] for r in rows if r.get("train/loss_step")]
    term_steps = [r["step"] for r in rows if r.get("train/doubled_step")]
    assert loss_steps == ["2", "5"] and term_steps == loss_steps
    for row in rows:  # this step's value, not one logged on an earlier step
        if row.get("train/doubled_step"):
            assert float(row["train/doubled_step"]) == pytest.approx(2 * float(row["train/loss_step"]), rel=1e-6)
    assert any(r.get("train/doubled_epoch") for r in rows)


def test_no_private_lightning_api_or_subclass_hooks_in_the_package():
    root = Path(lit_effdl.__file__).parent
    hits = [f"{p}:{n}" for p in root.rglob("*.py") for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"_logger_connector|__init_subclass__", line)]
    assert hits == []


def test_callbacks_package_exports_every_callback_it_has():
    package = Path(lit_effdl.callbacks.__file__).parent
    defined = set()
    for info in pkgutil.iter_modules([str(package)]):
        module = __import__(f"lit_effdl.callbacks.{info.name}", fromlist=["_"])
        defined |= {name for name, obj in vars(module).items() if inspect.isclass(obj)
                    and issubclass(obj, Callback) and obj.__module__ == module.__name__}
    assert set(lit_effdl.callbacks.__all__) == defined
    assert all(hasattr(lit_effdl.callbacks, name) for name in defined)
