"""Everyday use: predictions export, the non-finite loss guard, metadata carried by checkpoints."""

import csv

import lightning as L
import pytest
import torch
from torchvision.io import write_png

from lit_effdl.cli import main
from lit_effdl.data import SyntheticDataModule
from lit_effdl.data.sources import synthetic_images
from lit_effdl.errors import NonFiniteLossError
from lit_effdl.methods import Supervised

CONFIG = """
seed_everything: 0
trainer: {max_epochs: 2, accelerator: cpu, devices: 1, enable_progress_bar: false, enable_model_summary: false}
model:
  class_path: lit_effdl.methods.Supervised
  init_args: {backbone: small_cnn_w16, lr: 0.05}
data:
  class_path: lit_effdl.data.SyntheticDataModule
  init_args: {num_classes: 4, num_train: 256, num_test: 32, batch_size: 32}
"""


def test_predict_writes_one_csv_row_per_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(CONFIG)
    main(["fit", "--config", "c.yaml"])
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["lit_effdl"]["class_names"] == [f"class_{k}" for k in range(4)]
    assert "SyntheticDataModule" in saved["lit_effdl"]["config"] and saved["lit_effdl"]["label_split_fingerprint"]
    images = synthetic_images(7, 4, 16, 3, seed=5)
    (tmp_path / "unlabeled" / "nested").mkdir(parents=True)
    expected = set()
    for i in range(7):
        path = tmp_path / "unlabeled" / ("nested" if i % 2 else "") / f"img{i}.png"
        write_png(images.images[i], str(path))
        expected.add(str(path.relative_to(tmp_path)))
    main(["predict", "--config", "c.yaml", "--ckpt_path", str(ckpt), "--data.init_args.predict_root", "unlabeled"])
    rows = list(csv.DictReader(open(tmp_path / "lightning_logs" / "version_1" / "predictions.csv")))
    assert {row["path"] for row in rows} == expected and len(rows) == 7
    for row in rows:
        assert row["label"] in {f"class_{k}" for k in range(4)}
        assert 0.0 < float(row["confidence"]) <= 1.0
        top = row["top5"].split()
        assert len(top) == 4 and top[0].startswith(row["label"] + ":")


class NaNAtStep(Supervised):
    """Supervised whose loss turns NaN at global step 2."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == 2 else loss


def test_nonfinite_loss_stops_naming_step_and_terms(fast_trainer_kwargs):
    model = NaNAtStep(num_classes=4, backbone="small_cnn_w16")
    trainer = L.Trainer(max_steps=5, **fast_trainer_kwargs)
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*train/loss="):
        trainer.fit(model, datamodule=SyntheticDataModule(num_classes=4, num_train=256, batch_size=32))


class DeferredNaNAtStep(NaNAtStep):
    """The accelerator path on the CPU: the guard records on the device and reads when logging."""

    def checks_loss_each_step(self, loss):
        return False


def test_deferred_nonfinite_check_names_the_first_bad_step(fast_trainer_kwargs):
    model = DeferredNaNAtStep(num_classes=4, backbone="small_cnn_w16")
    kwargs = {**fast_trainer_kwargs, "log_every_n_steps": 4}
    trainer = L.Trainer(max_steps=8, **kwargs)
    with pytest.raises(NonFiniteLossError, match=r"global step 2 \(seen at step 4"):
        trainer.fit(model, datamodule=SyntheticDataModule(num_classes=4, num_train=256, batch_size=32))


def test_skip_nonfinite_skips_and_counts(fast_trainer_kwargs):
    model = NaNAtStep(num_classes=4, backbone="small_cnn_w16", skip_nonfinite=True)
    trainer = L.Trainer(max_steps=5, **fast_trainer_kwargs)
    trainer.fit(model, datamodule=SyntheticDataModule(num_classes=4, num_train=256, batch_size=32))
    assert model.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
