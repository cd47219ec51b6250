"""PseudoLabel: online ramp-up and masking; offline teacher -> file -> student trains on it."""

import lightning as L
import pytest
import torch

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import PseudoLabel, Supervised
from lit_effdl.pseudo_labels import load_pseudo_labels


def _dm(**kw):
    args = dict(num_classes=4, image_size=16, channels=3, num_train=96, num_test=16, num_labels_per_class=4,
                batch_size=8, unlabeled_ratio=2, labeled_samples_per_epoch=32, eval_batch_size=32)
    return SyntheticDataModule(**{**args, **kw})


def test_online_weight_ramps_up_and_hidden_labels_are_unused(fast_trainer_kwargs):
    model = PseudoLabel(num_classes=4, in_chans=3, mode="online", threshold=0.3, rampup_epochs=2)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=1, **fast_trainer_kwargs)
    trainer.fit(model, datamodule=_dm())
    steps = trainer.num_training_batches
    assert model.global_step == steps
    assert model.unlabeled_weight() == pytest.approx(0.5)  # one of two ramp-up epochs done
    assert "train/mask_rate" in trainer.callback_metrics
    model = PseudoLabel(num_classes=4, in_chans=3, mode="online", threshold=0.05, rampup_epochs=0)
    dm = _dm()
    dm.setup("fit")
    L.seed_everything(0)
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    torch.manual_seed(0)
    loss = model.training_step(batch, 0)
    assert model.unlabeled_weight() == 1.0
    batch["unlabeled"]["hidden_target"] = (batch["unlabeled"]["hidden_target"] + 1) % 4
    torch.manual_seed(0)
    assert torch.equal(loss, model.training_step(batch, 0))


@pytest.mark.parametrize("student_view", ["weak", "strong"])
def test_offline_student_learns_from_the_teachers_file(tmp_path, fast_trainer_kwargs, student_view):
    L.seed_everything(0)
    teacher = Supervised(num_classes=4, in_chans=3, backbone="small_cnn_w8")
    kwargs = {**fast_trainer_kwargs, "enable_checkpointing": True}
    trainer = L.Trainer(max_epochs=2, limit_val_batches=1, **kwargs)
    trainer.fit(teacher, datamodule=_dm(unlabeled_ratio=0))
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)
    path = tmp_path / "labels.pt"
    student = PseudoLabel(num_classes=4, in_chans=3, backbone="small_cnn_w8", mode="offline", threshold=0.3,
                          teacher_checkpoint=str(ckpt), pseudo_label_file=str(path), student_view=student_view)
    views, augment = [], student.augment_batch
    student.augment_batch = lambda images, view: views.append(view) or augment(images, view)
    dm = _dm(unlabeled_strong_augment="strong_noflip")
    L.Trainer(max_epochs=1, limit_val_batches=1, **fast_trainer_kwargs).fit(student, datamodule=dm)
    assert set(views) == {"labeled", student_view}  # the pseudo-labeled images come through that view only
    labels = load_pseudo_labels(path)
    assert labels.targets.ndim == 1 and (labels.confidence >= 0.3).all()  # hard labels above threshold
    assert torch.equal(student.pl_weights.cpu(), labels.weights())
    assert 0.0 <= student.pseudo_stats["hidden_acc"] <= 1.0


def test_bad_input_messages():
    with pytest.raises(UserError, match="threshold"):
        PseudoLabel(num_classes=4, threshold=0.0)
    with pytest.raises(UserError, match="mode"):
        PseudoLabel(num_classes=4, mode="sometimes")
    with pytest.raises(UserError, match="student_view='noisy'"):
        PseudoLabel(num_classes=4, mode="offline", student_view="noisy")
    with pytest.raises(UserError, match="FixMatch"):
        PseudoLabel(num_classes=4, mode="online", student_view="strong")
    with pytest.raises(UserError, match="teacher_checkpoint"):
        from lit_effdl.methods.pseudo_label import load_teacher

        load_teacher("/nonexistent/teacher.ckpt")
