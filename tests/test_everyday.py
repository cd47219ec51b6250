"""Everyday use: predictions export and the metadata checkpoints carry (the non-finite loss guard:
tests/test_base_method.py)."""

import csv

import torch
from torchvision.io import write_png

from lit_effdl.cli import main
from lit_effdl.data.sources import synthetic_images

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
    assert saved["lit_effdl"]["image_size"] == 16  # what lit-effdl select checks a checkpoint against
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



def test_predict_from_a_fit_checkpoint_hides_only_the_checkpoint_callback_warnings(tmp_path, monkeypatch, recwarn):
    """The fit's checkpoint callbacks (their state, their old folder) mean nothing to predict; a real
    problem (here: fp16 AMP asked for on a CPU, which Lightning replaces by bf16) still warns."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(CONFIG.replace("max_epochs: 2", "max_epochs: 1"))
    main(["fit", "--config", "c.yaml"])
    run = tmp_path / "lightning_logs" / "version_0"
    (tmp_path / "unlabeled").mkdir()
    write_png(synthetic_images(1, 4, 16, 3, seed=5).images[0], str(tmp_path / "unlabeled" / "img.png"))
    recwarn.clear()
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
          "--data.init_args.predict_root", "unlabeled", "--trainer.precision", "16-mixed"])
    messages = [str(w.message) for w in recwarn]
    assert (tmp_path / "lightning_logs" / "version_1" / "predictions.csv").is_file()
    assert not [m for m in messages if "callbacks used to create the checkpoint" in m or "dirpath has changed" in m]
    assert [m for m in messages if "AMP with fp16 is not supported on CPU" in m]
