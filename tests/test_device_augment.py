"""One owner for augmentation: with ``augment_on: device`` the data module augments training batches
after the transfer, every method's training step receives the augmented views, and no method
writes to the data module (its specs are the same after ``fit``)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import (Distill, Finetune, FixMatch, NoisyStudent, OfflinePseudoLabel, PseudoLabel,
                               Supervised)
from lit_effdl.models.factory import create_backbone

SPECS = dict(labeled_augment="flip+crop+rand-n2-m10", unlabeled_weak_augment="flip+crop",
             unlabeled_strong_augment="strong")
NET = dict(num_classes=4, in_chans=3, backbone="small_cnn_w8")


def _trainer(**kw) -> L.Trainer:
    args = dict(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1)
    return L.Trainer(**{**args, **kw})


def _dm(unlabeled_ratio: int = 1, augment_on: str = "device") -> SyntheticDataModule:
    return SyntheticDataModule(num_classes=4, image_size=16, num_train=96, num_test=16, num_labels_per_class=4,
                               batch_size=8, unlabeled_ratio=unlabeled_ratio, labeled_samples_per_epoch=32,
                               eval_batch_size=32, augment_on=augment_on, **SPECS)


def _images(batch: dict) -> dict[str, torch.Tensor]:
    if "labeled" not in batch:
        return {"labeled": batch["image"]}
    return {"labeled": batch["labeled"]["image"], **{v: batch["unlabeled"][v] for v in ("weak", "strong")}}


class StepInputs(Callback):
    """The views of each training batch as the training step receives them."""

    def __init__(self):
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append({k: v.clone() for k, v in _images(batch).items()})


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, str]:
    """A plain state_dict (Distill) and a lit-effdl checkpoint (pseudo-label students) of a teacher."""
    folder = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    net = create_backbone("small_cnn_w8", 4, in_chans=3)
    torch.save(net.state_dict(), folder / "teacher.pt")
    trainer = _trainer(max_steps=1)
    trainer.fit(Supervised(**NET), datamodule=_dm(0, "loader"))
    trainer.save_checkpoint(folder / "teacher.ckpt")
    return {"state_dict": str(folder / "teacher.pt"), "checkpoint": str(folder / "teacher.ckpt")}


METHODS = {
    "supervised": (0, lambda t, tmp: Supervised(**NET, mixup_alpha=0.0)),
    "finetune": (0, lambda t, tmp: Finetune(mode="full", lr=0.1, **NET)),
    "fixmatch": (1, lambda t, tmp: FixMatch(threshold=0.5, **NET)),
    "pseudo_label": (1, lambda t, tmp: PseudoLabel(threshold=0.3, **NET)),
    "offline_pseudo_label": (1, lambda t, tmp: OfflinePseudoLabel(
        threshold=0.3, teacher_checkpoint=t["checkpoint"], pseudo_label_file=str(tmp / "pl.pt"), **NET)),
    "noisy_student": (1, lambda t, tmp: NoisyStudent(
        min_confidence=0.0, require_larger_student=False, teacher_checkpoint=t["checkpoint"],
        pseudo_label_file=str(tmp / "ns.pt"), **NET)),
    "distill": (1, lambda t, tmp: Distill(teacher_backbone="small_cnn_w8", teacher_checkpoint=t["state_dict"], **NET)),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_device_augmentation_is_the_data_modules_and_reaches_the_step(name, teachers, tmp_path):
    ratio, make = METHODS[name]
    dm = _dm(ratio)
    before = dm.train_specs()
    plain, augmented = [], []
    transfer = dm.on_after_batch_transfer

    def spy(batch, dataloader_idx):
        training = dm.trainer.training
        raw = {k: v.clone() for k, v in _images(batch).items()}
        out = transfer(batch, dataloader_idx)
        if training:
            plain.append(raw)
            augmented.append({k: v.clone() for k, v in _images(out).items()})
        else:  # validation: untouched
            assert all(torch.equal(v, raw[k]) for k, v in _images(out).items())
        return out

    dm.on_after_batch_transfer = spy
    inputs = StepInputs()
    torch.manual_seed(0)
    model = make(teachers, tmp_path)
    _trainer(callbacks=[inputs]).fit(model, datamodule=dm)
    assert dm.train_specs() == before == {"labeled": SPECS["labeled_augment"],
                                          "weak": SPECS["unlabeled_weak_augment"],
                                          "strong": SPECS["unlabeled_strong_augment"]}, f"{name} wrote the specs"
    assert dm.augment_on == "device"
    assert len(inputs.seen) == len(augmented) == 2
    for seen, raw, aug in zip(inputs.seen, plain, augmented):
        assert set(seen) == set(aug) == {"labeled"} | ({"weak", "strong"} if ratio else set())
        read = set(model.augmented_views())  # the views the step reads: augmented; the others left as they came
        assert "labeled" in read and read <= set(seen)
        for view in seen:
            assert torch.equal(seen[view], aug[view]), view  # the step got the data module's output
            assert torch.equal(seen[view], raw[view]) is (view not in read), view  # augmented iff read


def test_device_augmentation_only_while_training_and_loaders_stay_plain():
    dm = _dm(1)
    dm.setup("fit")
    raw = dm.unlabeled_dataset()[0]
    assert torch.equal(raw["weak"], raw["strong"])  # the loader leaves the views to the device
    batch = next(iter(dm.train_dataloader()))[0]
    images = {k: v.clone() for k, v in _images(batch).items()}
    dm.trainer = None
    assert dm.on_after_batch_transfer(batch, 0) is batch and torch.equal(batch["labeled"]["image"], images["labeled"])
    assert set(dm.device_pipelines()) == {"labeled", "weak", "strong"}
    assert dm.device_pipelines() is dm.device_pipelines()  # built once
    loader = _dm(1, "loader")
    loader.setup("fit")
    item = loader.unlabeled_dataset()[0]
    assert not torch.equal(item["weak"], item["strong"]) and loader.device_pipelines() == {}
    with pytest.raises(UserError, match="gpu"):
        _dm(1, "gpu")


@pytest.mark.parametrize("make, order", [
    (lambda: FixMatch(**NET), ["labeled", "weak", "strong"]),
    (lambda: PseudoLabel(**NET), ["weak", "labeled"]),
    (lambda: NoisyStudent(teacher_checkpoint="t.ckpt", **NET), ["strong", "labeled"]),
    (lambda: Distill(teacher_backbone="small_cnn_w8", teacher_checkpoint="t.pt", unlabeled_view="strong", **NET),
     ["labeled", "strong"]),
    (lambda: Supervised(**NET), ["labeled"]),
])
def test_views_are_augmented_in_the_order_the_method_reads_them(make, order):
    """The random draws of each view come in the method's own order (the one its step had before the
    data module took augmentation over), and a view the step never reads costs nothing."""
    from types import SimpleNamespace

    dm, called = _dm(1), []
    dm.device_pipelines = lambda: {v: (lambda x, v=v: called.append(v) or x + 1) for v in ("labeled", "weak", "strong")}
    dm.trainer = SimpleNamespace(training=True, lightning_module=make())
    batch = {"labeled": {"image": torch.zeros(2, 3, 4, 4)},
             "unlabeled": {"weak": torch.zeros(2, 3, 4, 4), "strong": torch.zeros(2, 3, 4, 4)}}
    out = dm.on_after_batch_transfer(batch, 0)
    assert called == order
    assert {v for v, x in _images(out).items() if x.sum() > 0} == set(order)
