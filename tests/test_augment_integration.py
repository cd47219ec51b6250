"""Augmentation wired into training: the on-device hook, CutMix / Mixup in Supervised, the preview
callback (TensorBoard), the preview script (PNG) and the RandAugment search script."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger

from lit_effdl.callbacks.preview import AugmentPreview
from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import Supervised

ROOT = Path(__file__).resolve().parents[1]


def _trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=3, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def test_device_augmentation_mixing_and_tensorboard_preview(tmp_path):
    torch.manual_seed(0)
    dm = SyntheticDataModule(num_labels_per_class=8, labeled_augment="strong", batch_size=8)
    model = Supervised(num_classes=4, in_chans=3, augment_on="device", mixup_alpha=0.8, cutmix_alpha=1.0)
    seen = []
    real_augment = model.augment_batch
    model.augment_batch = lambda images, view="labeled": seen.append((view, images.shape)) or real_augment(images, view)
    preview = AugmentPreview(num_images=4, rows=2)
    trainer = _trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[preview])
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert dm.labeled_augment == "none"  # the loader hands plain images, the device augments
    assert repr(model._device_augment["labeled"]) == "BatchedPipeline('strong')"
    assert [v for v, _ in seen] == ["labeled"] * 3
    assert preview.logged == ["labeled"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    assert "augment/labeled" in events.Tags()["images"]
    image = events.Images("augment/labeled")[0]
    assert image.width > 0 and image.height > 0


def test_loader_mode_leaves_batches_alone_and_bad_switch_is_an_error():
    model = Supervised(num_classes=4, in_chans=3)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert model.augment_batch(images) is images
    with pytest.raises(UserError, match="gpu"):
        Supervised(num_classes=4, in_chans=3, augment_on="gpu")


def test_preview_script_writes_a_png(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from preview_augment import main

    out = tmp_path / "grid.png"
    assert main(["--config", str(ROOT / "configs/digits/supervised_strong.yaml"), "--out", str(out),
                 "--num-images", "4", "--rows", "2"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from torchvision.io import decode_png

    grid = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    assert grid.shape[0] == 3 and grid.shape[1] > 3 * 16  # originals + 2 augmented rows of 16 px
    assert main(["--config", str(ROOT / "configs/digits/supervised_strong.yaml"), "--out", str(out),
                 "--spec", "rand-n2-mX"]) == 2


def test_randaugment_search_writes_table_csv_and_best_config(tmp_path, monkeypatch):
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "limit_train_batches": 2, "limit_val_batches": 1,
                    "enable_checkpointing": True},
        "model": {"class_path": "lit_effdl.methods.Supervised", "init_args": {"backbone": "small_cnn_w16"}},
        "data": {"class_path": "lit_effdl.data.SyntheticDataModule",
                 "init_args": {"num_labels_per_class": 8, "image_size": 16, "batch_size": 8,
                               "labeled_augment": "weak", "num_train": 64, "num_test": 16}},
    }
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "search"
    monkeypatch.setattr(sys, "argv", ["randaugment_search.py", "--config", str(cfg), "--n", "1", "2",
                                      "--m", "5", "--epochs", "1", "--out", str(out)])
    sys.path.insert(0, str(ROOT / "scripts"))
    from randaugment_search import main

    main()
    table = (out / "results.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "Best: N=" in table
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("n,m,spec,val_acc") and len(rows) == 3
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["data"]["init_args"]["labeled_augment"] in ("flip+crop+rand-n1-m5", "flip+crop+rand-n2-m5")
