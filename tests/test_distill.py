"""Distill: the teacher stays frozen and out of checkpoints, the cache matches online KD, bad input."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import Distill
from lit_effdl.methods import distill as distill_module
from lit_effdl.models import create_backbone

STUDENT = dict(backbone="small_cnn_w8", num_classes=4, in_chans=3, lr=0.05)


def make_trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    limit_val_batches=1)
    return L.Trainer(**{**defaults, **kwargs})


def data(**kwargs) -> SyntheticDataModule:
    defaults = dict(num_labels_per_class=8, unlabeled_ratio=1, batch_size=8, image_size=16, num_train=128)
    return SyntheticDataModule(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A plain state_dict of a small_cnn_w16 teacher with dropout (untrained is enough here)."""
    torch.manual_seed(0)
    net = create_backbone("small_cnn_w16", 4, in_chans=3)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(net.state_dict(), path)
    return path


def distill(teacher_file, **kwargs) -> Distill:
    args = dict(teacher_backbone="small_cnn_w16", teacher_checkpoint=str(teacher_file),
                teacher_backbone_kwargs={"drop_rate": 0.5}, **STUDENT)
    return Distill(**{**args, **kwargs})


class TeacherWatch(Callback):
    """Records, at every training step, whether any teacher module is in train mode."""

    def __init__(self):
        self.modes, self.student_modes = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.modes.append(any(m.training for m in module.teacher.modules()))
        self.student_modes.append(module.backbone.training)

    def on_before_backward(self, trainer, module, loss):
        self.modes.append(any(m.training for m in module.teacher.modules()))


def test_teacher_eval_frozen_and_unchanged(teacher_file):
    model = distill(teacher_file)
    watch = TeacherWatch()
    trainer = make_trainer(max_steps=6, max_epochs=3, limit_train_batches=2, callbacks=[watch])
    trainer.fit(model, data())
    assert len(watch.modes) == 12 and not any(watch.modes), "teacher left eval mode during fit"
    assert all(watch.student_modes)
    reference = torch.load(teacher_file, weights_only=True)
    after = model.teacher.net.state_dict()
    assert set(after) == set(reference)
    for key, value in reference.items():  # weights and BatchNorm statistics, bitwise
        assert torch.equal(after[key], value), key
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in model.teacher.parameters()}
    assert "val/teacher_acc" in trainer.callback_metrics


def test_teacher_accuracy_is_measured_once(teacher_file):
    model = distill(teacher_file)
    calls = []

    class CountValidationForwards(Callback):
        def on_train_start(self, trainer, module):
            module.teacher.register_forward_pre_hook(lambda m, args: calls.append(trainer.current_epoch)
                                                     if trainer.validating else None)

    trainer = make_trainer(max_steps=-1, max_epochs=2, limit_train_batches=1,
                           callbacks=[CountValidationForwards()])
    trainer.fit(model, data())
    assert calls and set(calls) == {0}, "the frozen teacher's accuracy is measured at the first validation only"
    assert 0.0 <= float(trainer.callback_metrics["val/teacher_acc"]) <= 1.0


def test_student_checkpoint_loads_without_teacher_file(teacher_file, tmp_path):
    teacher_copy = tmp_path / "t.pt"
    teacher_copy.write_bytes(teacher_file.read_bytes())
    for save_teacher in (False, True):
        model = distill(teacher_copy, save_teacher=save_teacher)
        trainer = make_trainer(max_steps=2)
        trainer.fit(model, data(unlabeled_ratio=0))
        ckpt = tmp_path / f"student_{save_teacher}.ckpt"
        trainer.save_checkpoint(ckpt)
        stored = torch.load(ckpt, weights_only=True)
        assert any(k.startswith("teacher.") for k in stored["state_dict"]) == save_teacher
        n_student = len(list(model.backbone.parameters()))
        assert len(stored["optimizer_states"][0]["state"]) == n_student
        assert all(isinstance(v, (str, int, float, bool, tuple, list, dict, type(None)))
                   for v in stored["hyper_parameters"].values())
        teacher_copy.unlink()
        loaded = Distill.load_from_checkpoint(ckpt, map_location="cpu")
        x = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
        model.eval(), loaded.eval()
        assert torch.allclose(loaded(x), model(x))
        assert (loaded.teacher is not None) == save_teacher
        teacher_copy.write_bytes(teacher_file.read_bytes())


def test_unlabeled_kd_ignores_hidden_target_and_alpha_zero_needs_no_labels(teacher_file):
    model = distill(teacher_file, alpha=0.0)
    model.teacher = model.new_teacher()
    dm = data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    model.train()
    torch.manual_seed(0)
    first = model.compute_losses(batch)
    batch["unlabeled"]["hidden_target"] = torch.full_like(batch["unlabeled"]["hidden_target"], 99)
    batch["labeled"]["target"] = torch.full_like(batch["labeled"]["target"], -5)  # alpha 0: never read
    second = model.compute_losses(batch)
    assert torch.equal(first["loss"], second["loss"]) and first["loss_kd_unlabeled"] > 0
    assert first["loss_ce"] == 0


def test_cached_logits_give_the_online_loss(teacher_file, tmp_path):
    cache = tmp_path / "logits.pt"
    model = distill(teacher_file, cache_teacher_logits=True, teacher_cache_file=str(cache),
                    teacher_backbone_kwargs=None)
    dm = data(labeled_augment="none", unlabeled_weak_augment="none")
    make_trainer(max_steps=1).fit(model, dm)
    stored = torch.load(cache, weights_only=True)
    assert stored["labeled"].dtype == torch.float16
    assert stored["unlabeled"].shape[0] == len(dm.inference_dataset("unlabeled"))
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    model.train()
    cached = model.compute_losses(batch)
    model.logit_cache.logits = None  # online: the teacher runs on the batch
    online = model.compute_losses(batch)
    for key in ("loss", "loss_ce", "loss_kd", "loss_kd_unlabeled"):
        assert cached[key].item() == pytest.approx(online[key].item(), rel=2e-3, abs=1e-4), key
    # a second fit reuses the file instead of running the teacher again
    mtime = cache.stat().st_mtime_ns
    again = distill(teacher_file, cache_teacher_logits=True, teacher_cache_file=str(cache), teacher_backbone_kwargs=None)
    make_trainer(max_steps=1).fit(again, dm)
    assert cache.stat().st_mtime_ns == mtime and again.logit_cache.logits is not None


def test_bf16_mixed_loss_in_float32(teacher_file):
    model = distill(teacher_file)
    dtypes = {}

    def record(module, inputs, output) -> None:  # a hook returning a value would replace the output
        dtypes["logits"] = output.dtype

    model.backbone.register_forward_hook(record)

    class LossDtype(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            dtypes["loss"] = outputs["loss"].dtype

    make_trainer(max_steps=1, precision="bf16-mixed", callbacks=[LossDtype()]).fit(model, data())
    assert dtypes["logits"] == torch.bfloat16, "autocast was not on"
    assert dtypes["loss"] == torch.float32


@pytest.mark.parametrize("mix", [dict(mixup_alpha=1.0), dict(cutmix_alpha=1.0)])
def test_teacher_and_student_see_the_same_mixed_images(teacher_file, mix, monkeypatch):
    torch.manual_seed(0)
    model = distill(teacher_file, alpha=0.5, **mix)
    model.teacher = model.new_teacher()
    images = torch.rand(8, 3, 16, 16)
    targets = torch.arange(8) % 4
    batch = {"labeled": {"image": images, "target": targets, "index": torch.arange(8)}}
    seen, ce_targets = {}, {}

    def record(name):
        def hook(module, args, output) -> None:
            seen[name] = args[0].clone()
        return hook

    model.backbone.register_forward_hook(record("student"))
    model.teacher.register_forward_hook(record("teacher"))
    original = distill_module.distillation_loss

    def spy(student, teacher, targets, temperature, alpha):
        ce_targets["soft"] = targets
        return original(student, teacher, targets, temperature, alpha)

    monkeypatch.setattr(distill_module, "distillation_loss", spy)
    losses = model.compute_losses(batch)
    assert torch.equal(seen["student"], seen["teacher"])
    assert not torch.allclose(seen["student"], model.prepare(images)), "the batch was not mixed"
    soft = ce_targets["soft"]
    assert soft.shape == (8, 4) and torch.allclose(soft.sum(1), torch.ones(8))
    assert (soft < 1).any(), "the CE targets were not mixed with the images"
    assert torch.isfinite(losses["loss"]) and losses["loss_ce"] > 0
    losses["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())


def first_inputs(seen: dict, name: str):
    """A forward pre-hook keeping the first input ``name``'s module receives."""
    def hook(module, args) -> None:
        seen.setdefault(name, args[0].detach().clone())
    return hook


def test_augment_on_device_teacher_and_student_see_the_augmented_views(teacher_file):
    dm = data(labeled_augment="weak", unlabeled_weak_augment="weak", augment_on="device")
    specs = dm.train_specs()
    model = distill(teacher_file, teacher_backbone_kwargs=None)
    seen, views = {}, {}
    transfer = dm.on_after_batch_transfer

    def spy(batch, dataloader_idx):
        plain = torch.cat([batch["labeled"]["image"], batch["unlabeled"]["weak"]]).clone()
        out = transfer(batch, dataloader_idx)
        views.setdefault("plain", plain)
        views.setdefault("augmented", torch.cat([out["labeled"]["image"], out["unlabeled"]["weak"]]).clone())
        return out

    class Hooks(Callback):
        def on_train_start(self, trainer, module):
            module.teacher.register_forward_pre_hook(first_inputs(seen, "teacher"))
            module.backbone.register_forward_pre_hook(first_inputs(seen, "student"))

    dm.on_after_batch_transfer = spy
    make_trainer(max_steps=1, limit_val_batches=0, callbacks=[Hooks()]).fit(model, dm)
    assert torch.equal(seen["teacher"], seen["student"])
    assert torch.equal(seen["student"], model.prepare(views["augmented"])), "not the data module's views"
    assert not torch.equal(views["augmented"], views["plain"]), "the device pipelines did not augment"
    assert dm.train_specs() == specs  # the model never writes to the data module


def test_teacher_forward_runs_before_the_student(teacher_file):
    """The student's saved activations are not held while the teacher runs (less peak memory)."""
    model = distill(teacher_file)
    model.teacher = model.new_teacher()
    order = []
    model.teacher.register_forward_pre_hook(lambda module, args: order.append("teacher"))
    model.backbone.register_forward_pre_hook(lambda module, args: order.append("student"))
    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    unlabeled = {"weak": images.clone(), "index": torch.arange(4)}
    batch = {"labeled": {"image": images, "target": torch.arange(4), "index": torch.arange(4)}, "unlabeled": unlabeled}
    model.train()
    model.compute_losses(batch)
    assert order == ["teacher", "student"], "one forward each, the teacher's first"


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), "temperature=0.0"),
    (dict(alpha=1.5), "alpha=1.5"),
    (dict(teacher_checkpoint=None), "teacher has no weights"),
    (dict(cache_teacher_logits=True, cutmix_alpha=1.0), "CutMix"),
    (dict(cache_teacher_logits=True, mixup_alpha=0.4), "mixup_alpha=0.4"),
    (dict(mixup_alpha=-1.0), "mixup_alpha=-1.0"),
])
def test_bad_arguments(teacher_file, kwargs, match):
    with pytest.raises(UserError, match=match):
        distill(teacher_file, **kwargs)


def test_bad_teacher_files_and_random_cache(teacher_file, tmp_path):
    other = tmp_path / "five.pt"
    torch.save(create_backbone("small_cnn_w16", 5, in_chans=3).state_dict(), other)
    with pytest.raises(UserError, match="5 classes.*num_classes=4"):
        distill(other).new_teacher()
    with pytest.raises(UserError, match="do not match the named architecture"):
        distill(teacher_file, teacher_backbone="small_cnn_w32").new_teacher()
    with pytest.raises(UserError, match="random pipeline.*labeled_augment"):
        make_trainer(max_steps=1).fit(distill(teacher_file, cache_teacher_logits=True), data())


def test_missing_teacher_file_is_named(tmp_path):
    with pytest.raises(UserError, match="teacher_checkpoint .*missing.pt is not a file"):
        Distill(teacher_checkpoint=str(tmp_path / "missing.pt"), **STUDENT).new_teacher()


def test_digits_config_builds_a_distill_model():
    from pathlib import Path

    from lit_effdl.experiment import make_cli

    config = Path(__file__).resolve().parents[1] / "configs" / "digits" / "distill.yaml"
    cli = make_cli(["--config", str(config), "--trainer.logger", "false"], run=False)
    assert isinstance(cli.model, Distill)
    assert cli.model.hparams.teacher_backbone == "small_cnn_w64" and cli.model.hparams.in_chans == 1
    assert cli.model.teacher is None  # read only when fit starts
