"""FixMatch: the loss by hand, no graph on the weak view, hidden labels never reach it, one forward, bad input."""

import math

import lightning as L
import pytest
import torch

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.losses import confidence_masked_cross_entropy
from lit_effdl.methods import FixMatch


def test_loss_equals_hand_computed_value():
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 5.0], [1.0, 1.0, 1.0]])
    strong = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    loss, mask, pseudo = confidence_masked_cross_entropy(weak, strong, threshold=0.9)
    # softmax confidences: row0 e^4/(e^4+2)=0.965 kept (label 0); row1 0.38 dropped;
    # row2 e^5/(e^5+2)=0.987 kept (label 2); row3 1/3 dropped.
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert pseudo[[0, 2]].tolist() == [0, 2]
    ce0 = -(1.0 - math.log(math.exp(1) + math.exp(2) + 1))  # CE([1,2,0], 0)
    ce2 = -(1.0 - math.log(1 + 2 * math.e))  # CE([0,1,1], 2)
    expected = (ce0 + ce2) / 4  # mean over ALL unlabeled rows, unconfident ones count 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def _saved_tensors(weak_requires_grad: bool) -> int:
    """Tensors autograd saves for backward while computing the unlabeled loss."""
    weak = torch.tensor([[4.0, 0.0], [0.0, 0.3]], requires_grad=weak_requires_grad)
    strong = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        loss, _, _ = confidence_masked_cross_entropy(weak, strong, threshold=0.5)
    loss.backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0
    return len(saved)


def test_no_graph_through_the_pseudo_label():
    """Hard pseudo-labels (argmax, threshold) carry no gradient anyway; the detach on the weak view
    is what keeps autograd from building a graph (and saving the softmax) on it. Without it the
    weak view's softmax and max are recorded and this count grows."""
    assert _saved_tensors(weak_requires_grad=True) == _saved_tensors(weak_requires_grad=False)


def test_fixmatch_step_builds_no_graph_on_the_weak_view():
    """In the step, the weak rows of the one forward get exactly zero gradient; the strong rows do not."""
    dm = _data()
    batch = _batch(dm)
    model = FixMatch(num_classes=4, in_chans=3, threshold=0.05)
    grads = {}

    def keep_grad(module, inputs, output):
        output.register_hook(lambda grad: grads.setdefault("g", grad))

    model.backbone.register_forward_hook(keep_grad)
    model.training_step(batch, 0).backward()
    n_lab, n_unl = batch["labeled"]["image"].shape[0], batch["unlabeled"]["weak"].shape[0]
    weak_rows = grads["g"][n_lab:n_lab + n_unl]
    assert torch.count_nonzero(weak_rows) == 0 and torch.count_nonzero(grads["g"][n_lab + n_unl:]) > 0


def _data(**kw):
    dm = SyntheticDataModule(num_classes=4, image_size=16, channels=3, num_train=160, num_test=32,
                             num_labels_per_class=4, batch_size=8, unlabeled_ratio=2, **kw)
    dm.setup("fit")
    return dm


def _batch(dm):
    L.seed_everything(0)
    batch = next(iter(dm.train_dataloader()))
    return batch[0] if isinstance(batch, tuple) else batch


def test_hidden_targets_never_reach_the_loss():
    dm = _data()
    batch = _batch(dm)
    model = FixMatch(num_classes=4, in_chans=3, threshold=0.05)  # low threshold: the mask is on
    model.train()
    torch.manual_seed(1)
    loss = model.training_step(batch, 0)
    shuffled = {**batch, "unlabeled": {**batch["unlabeled"]}}
    hidden = batch["unlabeled"]["hidden_target"]
    shuffled["unlabeled"]["hidden_target"] = (hidden + 1) % 4  # every hidden label changed
    torch.manual_seed(1)
    loss_shuffled = model.training_step(shuffled, 0)
    assert loss.item() > 0
    assert torch.equal(loss, loss_shuffled)


def test_one_concatenated_forward_per_step():
    dm = _data()
    batch = _batch(dm)
    model = FixMatch(num_classes=4, in_chans=3)
    calls = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model.training_step(batch, 0)
    n_lab, n_unl = batch["labeled"]["image"].shape[0], batch["unlabeled"]["weak"].shape[0]
    assert calls == [n_lab + 2 * n_unl]


def test_short_fit_logs_mask_rate_and_uses_ema(fast_trainer_kwargs):
    dm = SyntheticDataModule(num_classes=4, image_size=16, channels=3, num_train=160, num_test=32,
                             num_labels_per_class=4, batch_size=8, unlabeled_ratio=2,
                             labeled_samples_per_epoch=48, augment_on="device")
    model = FixMatch(num_classes=4, in_chans=3, threshold=0.5)
    assert model.ema is not None  # EMA for evaluation is on by default
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=2, **fast_trainer_kwargs)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["train/mask_rate_epoch"]) <= 1.0
    assert "train/pseudo_acc" in metrics and "val/acc" in metrics
    # terms off the progress bar: per-step values on logging steps, batch-weighted epoch means
    assert {"train/sup_loss_step", "train/sup_loss_epoch", "train/unsup_loss_epoch"} <= set(metrics)
    assert torch.isfinite(metrics["train/sup_loss_epoch"]) and float(metrics["train/unsup_loss_epoch"]) >= 0.0


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_bad_threshold_is_refused(threshold):
    with pytest.raises(UserError, match="threshold"):
        FixMatch(num_classes=4, threshold=threshold)


def test_fully_labeled_split_is_refused():
    dm = SyntheticDataModule(num_classes=4, image_size=16, num_train=64, unlabeled_ratio=2)
    dm.setup("fit")
    with pytest.raises(UserError, match="unlabeled split is empty"):
        dm.train_dataloader()


@pytest.mark.parametrize("labels_per_class, measured", [(6, False), (3, True)])
def test_pseudo_acc_logged_only_when_unlabeled_images_have_hidden_labels(tmp_path, fast_trainer_kwargs,
                                                                          labels_per_class, measured):
    """Loose unlabeled files have no hidden label (-1): no ``train/pseudo_acc`` (it was NaN). With
    every class-folder image labeled, the unlabeled set is the loose files alone; with 3 of 6, the
    other 3 keep their hidden labels and the accuracy is logged."""
    from torchvision.io import write_png

    from lit_effdl.data import ImageFolderDataModule

    images = SyntheticDataModule(num_classes=2, image_size=16, num_train=20).sources.train
    for i in range(20):  # 6 images of each class in its folder, the other 8 loose
        labeled = (images.targets[:i] == images.targets[i]).sum() < 6
        folder = tmp_path / (f"train/{images.targets[i]}" if labeled else "loose")
        folder.mkdir(parents=True, exist_ok=True)
        write_png(images.images[i], str(folder / f"{i}.png"))
    dm = ImageFolderDataModule(root=str(tmp_path / "train"), test_root=str(tmp_path / "train"),
                               unlabeled_root=str(tmp_path / "loose"), image_size=16,
                               num_labels_per_class=labels_per_class, val_fraction=0.0, batch_size=4,
                               unlabeled_ratio=2, labeled_samples_per_epoch=12)
    model = FixMatch(num_classes=2, in_chans=3, threshold=0.5)  # two classes: every pseudo-label is kept
    trainer = L.Trainer(max_epochs=2, limit_val_batches=0, **fast_trainer_kwargs)
    trainer.fit(model, datamodule=dm)
    assert "train/mask_rate_epoch" in trainer.callback_metrics
    assert ("train/pseudo_acc" in trainer.callback_metrics) == measured
    if measured:
        assert 0.0 <= float(trainer.callback_metrics["train/pseudo_acc"]) <= 1.0
