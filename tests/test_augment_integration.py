"""Augmentation wired into training: the on-device hook, CutMix / Mixup in Supervised, the preview
callback (TensorBoard), the preview script (PNG) and the RandAugment search script."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger

from lit_effdl.callbacks.preview import AugmentPreview
from lit_effdl.data import SyntheticDataModule
from lit_effdl.methods import Supervised

ROOT = Path(__file__).resolve().parents[1]


def _trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=3, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def test_device_augmentation_mixing_and_tensorboard_preview(tmp_path):
    torch.manual_seed(0)
    dm = SyntheticDataModule(num_labels_per_class=8, labeled_augment="strong", batch_size=8, augment_on="device")
    model = Supervised(num_classes=4, in_chans=3, mixup_alpha=0.8, cutmix_alpha=1.0)
    preview = AugmentPreview(num_images=4, rows=2)
    trainer = _trainer(tmp_path, logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=[preview])
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert dm.labeled_augment == "strong"  # the data module's spec, applied by the data module
    assert repr(dm.device_pipelines()["labeled"]) == "BatchedPipeline('strong')"
    assert preview.logged == ["labeled"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    assert "augment/labeled" in events.Tags()["images"]
    image = events.Images("augment/labeled")[0]
    assert image.width > 0 and image.height > 0


def test_preview_shows_the_pipelines_that_train():
    """Device: the data module's batched pipelines (the very objects it applies); loader: per-image."""
    from lit_effdl.augment.batched import BatchedPipeline
    from lit_effdl.augment.pipelines import Pipeline
    from lit_effdl.augment.preview import view_pipelines

    device = SyntheticDataModule(num_labels_per_class=8, unlabeled_ratio=1, augment_on="device")
    views = view_pipelines(device)
    assert set(views) == {"labeled", "weak", "strong"}
    assert all(batched and p is device.device_pipelines()[v] for v, (p, batched, _) in views.items())
    loader = view_pipelines(SyntheticDataModule(num_labels_per_class=8, labeled_augment="strong"))
    assert set(loader) == {"labeled"} and isinstance(loader["labeled"][0], Pipeline)
    assert not loader["labeled"][1] and not isinstance(loader["labeled"][0], BatchedPipeline)


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
