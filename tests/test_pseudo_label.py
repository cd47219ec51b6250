"""PseudoLabel (online ramp-up and masking) and OfflinePseudoLabel (teacher -> file -> student)."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import OfflinePseudoLabel, PseudoLabel, Supervised
from lit_effdl.pseudo_labels import load_pseudo_labels


def _dm(**kw):
    args = dict(num_classes=4, image_size=16, channels=3, num_train=96, num_test=16, num_labels_per_class=4,
                batch_size=8, unlabeled_ratio=2, labeled_samples_per_epoch=32, eval_batch_size=32)
    return SyntheticDataModule(**{**args, **kw})


def _first_batch(dm):
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return batch[0] if isinstance(batch, tuple) else batch


@pytest.mark.parametrize("accumulate", [1, 2])
def test_online_weight_ramps_over_optimizer_steps(fast_trainer_kwargs, accumulate):
    """After one of two ramp-up epochs the weight is half, with gradient accumulation too (it counts
    optimizer steps: batches / accumulate per epoch, not batches)."""
    model = PseudoLabel(num_classes=4, in_chans=3, threshold=0.3, rampup_epochs=2)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=1, accumulate_grad_batches=accumulate, **fast_trainer_kwargs)
    trainer.fit(model, datamodule=_dm())
    assert model.global_step == trainer.num_training_batches // accumulate
    assert model.unlabeled_weight() == pytest.approx(0.5)
    assert "train/mask_rate" in trainer.callback_metrics


def test_online_weight_waits_for_the_delay_then_ramps(fast_trainer_kwargs):
    """Lee 2013's alpha(t): 0 for ``rampup_delay_epochs``, then linear to ``lambda_u`` over
    ``rampup_epochs``, then flat; here 2 optimizer steps per epoch, delay 1 epoch, ramp 2 epochs."""
    seen = {}

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen[trainer.global_step] = module.unlabeled_weight()

    model = PseudoLabel(num_classes=4, in_chans=3, threshold=0.3, lambda_u=2.0, rampup_delay_epochs=1,
                        rampup_epochs=2)
    trainer = L.Trainer(max_epochs=4, limit_train_batches=2, limit_val_batches=0, callbacks=[Record()],
                        **fast_trainer_kwargs)
    trainer.fit(model, datamodule=_dm())
    assert seen == pytest.approx({0: 0.0, 1: 0.0, 2: 0.0, 3: 0.5, 4: 1.0, 5: 1.5, 6: 2.0, 7: 2.0})


def test_online_hidden_labels_are_unused():
    model = PseudoLabel(num_classes=4, in_chans=3, threshold=0.05, rampup_epochs=0)
    L.seed_everything(0)
    batch = _first_batch(_dm())
    torch.manual_seed(0)
    loss = model.training_step(batch, 0)
    assert model.unlabeled_weight() == 1.0
    batch["unlabeled"]["hidden_target"] = (batch["unlabeled"]["hidden_target"] + 1) % 4
    torch.manual_seed(0)
    assert torch.equal(loss, model.training_step(batch, 0))


def _teacher_checkpoint(tmp_path, fast_trainer_kwargs):
    L.seed_everything(0)
    teacher = Supervised(num_classes=4, in_chans=3, backbone="small_cnn_w8")
    trainer = L.Trainer(max_epochs=2, limit_val_batches=1, **{**fast_trainer_kwargs, "enable_checkpointing": True})
    trainer.fit(teacher, datamodule=_dm(unlabeled_ratio=0))
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.mark.parametrize("student_view", ["weak", "strong"])
def test_offline_student_learns_from_the_teachers_file(tmp_path, fast_trainer_kwargs, student_view):
    ckpt = _teacher_checkpoint(tmp_path, fast_trainer_kwargs)
    path = tmp_path / "labels.pt"
    student = OfflinePseudoLabel(num_classes=4, in_chans=3, backbone="small_cnn_w8", threshold=0.3,
                                 teacher_checkpoint=str(ckpt), pseudo_label_file=str(path), student_view=student_view)
    dm = _dm(unlabeled_strong_augment="strong_noflip")
    L.Trainer(max_epochs=1, limit_val_batches=1, **fast_trainer_kwargs).fit(student, datamodule=dm)
    labels = load_pseudo_labels(path)
    assert labels.targets.ndim == 1 and (labels.confidence >= 0.3).all()  # hard labels above threshold
    assert torch.equal(student.pl_weights.cpu(), labels.weights())
    assert 0.0 <= student.pseudo_stats["hidden_acc"] <= 1.0
    seen = []  # the pseudo-labeled images come through that view only
    student.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    batch = _first_batch(dm)
    student.trainer = None  # a step outside the fit: nothing to log to
    student.training_step(batch, 0)
    n_lab = batch["labeled"]["image"].shape[0]
    assert torch.equal(seen[0][n_lab:], student.prepare(batch["unlabeled"][student_view]))


def test_offline_student_loss_is_labeled_ce_plus_weighted_ce_on_the_file(tmp_path, fast_trainer_kwargs):
    ckpt = _teacher_checkpoint(tmp_path, fast_trainer_kwargs)
    student = OfflinePseudoLabel(num_classes=4, in_chans=3, backbone="small_cnn_w8", threshold=0.3, lambda_u=0.5,
                                 teacher_checkpoint=str(ckpt), ema_decay=0.0)
    dm = _dm()
    L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, **fast_trainer_kwargs).fit(student, dm)
    batch = _first_batch(dm)
    student.trainer = None  # a step outside the fit: nothing to log to
    student.eval()  # no dropout: two forwards give the same logits
    labeled, unlabeled = batch["labeled"], batch["unlabeled"]
    weights = student.pl_weights[unlabeled["index"]]
    per_row = F.cross_entropy(student(unlabeled["weak"]), student.pl_targets[unlabeled["index"]], reduction="none")
    expected = F.cross_entropy(student(labeled["image"]), labeled["target"]) \
        + 0.5 * (weights * per_row).sum() / (len(weights) * student.pl_weights.mean())
    assert torch.allclose(student.training_step(batch, 0), expected, atol=1e-5)


def test_round_zero_teacher_is_plain_cross_entropy():
    """The rounds recipes' teacher (Supervised, no smoothing, a plain backbone) computes the loss the
    labels-only teacher always had: F.cross_entropy on the labeled batch."""
    model = Supervised(num_classes=4, in_chans=3, backbone="small_cnn_w8").eval()
    batch = _first_batch(_dm(unlabeled_ratio=0))
    expected = F.cross_entropy(model(batch["image"]).float(), batch["target"])
    assert torch.equal(model.training_step(batch, 0), expected)


def test_bad_input_messages(fast_trainer_kwargs):
    with pytest.raises(UserError, match="threshold"):
        PseudoLabel(num_classes=4, threshold=0.0)
    with pytest.raises(UserError, match="rampup_epochs=-1"):
        PseudoLabel(num_classes=4, rampup_epochs=-1)
    with pytest.raises(UserError, match="rampup_delay_epochs=-2"):
        PseudoLabel(num_classes=4, rampup_delay_epochs=-2)
    with pytest.raises(UserError, match="student_view='noisy'"):
        OfflinePseudoLabel(num_classes=4, student_view="noisy")
    with pytest.raises(UserError, match="unlabeled_ratio"):
        PseudoLabel(num_classes=4, in_chans=3).training_step(_first_batch(_dm(unlabeled_ratio=0)), 0)
    with pytest.raises(UserError, match="teacher_checkpoint"):
        student = OfflinePseudoLabel(num_classes=4, in_chans=3, backbone="small_cnn_w8")
        L.Trainer(max_epochs=1, limit_train_batches=1, **fast_trainer_kwargs).fit(student, _dm())
    with pytest.raises(UserError, match="teacher_checkpoint"):
        student = OfflinePseudoLabel(num_classes=4, in_chans=3, teacher_checkpoint="/nonexistent/teacher.ckpt")
        L.Trainer(max_epochs=1, limit_train_batches=1, **fast_trainer_kwargs).fit(student, _dm())
