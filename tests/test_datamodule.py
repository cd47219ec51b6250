"""The label-budget data module: loaders, the semi-supervised batch, the split file."""

import json

import lightning as L
import numpy as np
import pytest
import torch

from lit_effdl.data import DigitsDataModule, SyntheticDataModule
from lit_effdl.data.datamodule import SPLIT_FILE
from lit_effdl.errors import UserError


def test_semi_supervised_batch_has_labeled_and_unlabeled_views():
    dm = SyntheticDataModule(num_train=200, num_labels_per_class=5, batch_size=4, unlabeled_ratio=3)
    dm.setup()
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"labeled", "unlabeled"}
    assert batch["labeled"]["image"].shape == (4, 3, 16, 16)
    unlabeled = batch["unlabeled"]
    assert unlabeled["weak"].shape == unlabeled["strong"].shape == (12, 3, 16, 16)
    assert set(unlabeled) == {"weak", "strong", "index", "hidden_target"}


def test_labeled_samples_per_epoch_sets_epoch_length():
    dm = DigitsDataModule(num_labels_per_class=2, batch_size=8, labeled_samples_per_epoch=64)
    dm.setup()
    assert len(dm.train_dataloader()) == 8


def test_labeled_samples_per_epoch_caps_a_longer_unlabeled_pool():
    dm = DigitsDataModule(num_labels_per_class=2, batch_size=4, unlabeled_ratio=2, labeled_samples_per_epoch=16)
    dm.setup()
    assert len(dm.unlabeled_source) // 8 > 4  # the pool alone would make a much longer epoch
    epochs = [[batch["unlabeled"]["index"] for batch, *_ in iter(dm.train_dataloader())] for _ in range(2)]
    assert [len(e) for e in epochs] == [4, 4]  # 16 labeled samples / batch 4: both loaders stop there
    assert all(len(idx) == 8 and len(set(idx.tolist())) == 8 for e in epochs for idx in e)
    assert set(torch.cat(epochs[0]).tolist()) != set(torch.cat(epochs[1]).tolist())  # a fresh subset each epoch


def test_test_split_untouched_by_budget():
    a = DigitsDataModule(num_labels_per_class=2)
    b = DigitsDataModule(num_labels_per_class=9, split_seed=4)
    a.setup(), b.setup()
    assert np.array_equal(a.sources.test.targets, b.sources.test.targets)
    assert len(a.val_source) == len(b.val_source)


def test_empty_unlabeled_split_is_refused_for_semi_supervised():
    dm = SyntheticDataModule(unlabeled_ratio=2)  # no budget: every image labeled
    dm.setup()
    with pytest.raises(UserError, match="unlabeled split is empty"):
        dm.train_dataloader()


def test_split_file_written_into_run_folder(tmp_path):
    dm = SyntheticDataModule(num_labels_per_class=3)
    trainer = L.Trainer(default_root_dir=str(tmp_path), logger=L.pytorch.loggers.CSVLogger(str(tmp_path)))
    dm.trainer = trainer
    dm.setup("fit")
    saved = json.loads((tmp_path / "lightning_logs" / "version_0" / SPLIT_FILE).read_text())
    assert saved["labeled"] == dm.split.labeled.tolist()
    assert saved["fingerprint"] == dm.split.fingerprint()


def test_public_interface_for_methods():
    dm = SyntheticDataModule(num_train=96, num_labels_per_class=4, labeled_augment="strong",
                             unlabeled_weak_augment="none", unlabeled_strong_augment="rand-n2-m9")
    dm.setup("fit")
    assert dm.train_specs() == {"labeled": "strong", "weak": "none", "strong": "rand-n2-m9"}
    plain = dm.inference_dataset("unlabeled")
    assert len(plain) == len(dm.unlabeled_inference_dataset()) == len(dm.unlabeled_hidden_targets())
    assert set(plain[0]) == {"image", "index"} and plain[0]["image"].dtype == torch.uint8
    assert torch.equal(plain[3]["image"], dm.unlabeled_inference_dataset()[3]["image"])
    assert torch.equal(dm.inference_dataset("unlabeled", "weak")[3]["image"], plain[3]["image"])  # spec none
    torch.manual_seed(0)
    strong = [dm.inference_dataset("labeled", "labeled")[0]["image"] for _ in range(4)]
    assert not all(torch.equal(s, dm.inference_dataset("labeled")[0]["image"]) for s in strong)
    assert dm.unlabeled_hidden_targets().dtype == torch.long
    assert torch.equal(dm.unlabeled_hidden_targets(), torch.as_tensor(dm.unlabeled_source.targets))
    with pytest.raises(UserError, match="part='test'"):
        dm.inference_dataset("test")
    with pytest.raises(UserError, match="view='medium'"):
        dm.inference_dataset("labeled", "medium")
