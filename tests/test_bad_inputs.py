"""The bad-input catalogue: each bad config or input through the real CLI, in its own process.

For each: a non-zero exit, a message naming the bad value, and no Python traceback on stderr.
The cases run as forked children of one runner process (tests/cli_runner.py), so the catalogue
pays for one interpreter start-up.
"""

import os
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from cli_runner import run_in_runner


BASE = """
seed_everything: 0
trainer: {max_epochs: 1, accelerator: cpu, devices: 1, enable_progress_bar: false, enable_model_summary: false}
model:
  class_path: lit_effdl.methods.Supervised
  init_args: {backbone: small_cnn_w16}
data:
  class_path: lit_effdl.data.SyntheticDataModule
  init_args: {num_classes: 3, num_train: 60, num_test: 12, batch_size: 16}
"""

FOLDER = BASE.replace(
    "class_path: lit_effdl.data.SyntheticDataModule\n  init_args: {num_classes: 3, num_train: 60, num_test: 12, batch_size: 16}",
    "class_path: lit_effdl.data.ImageFolderDataModule\n  init_args: {root: images, image_size: 16, batch_size: 4, val_fraction: 0.0}",
)
assert "ImageFolderDataModule" in FOLDER


def build_inputs(root: Path) -> None:
    (root / "base.yaml").write_text(BASE)
    (root / "folder.yaml").write_text(FOLDER)
    for name in ("a", "b"):
        (root / "images" / name).mkdir(parents=True)
        for i in range(6):
            write_png(torch.full((3, 16, 16), 30 * i, dtype=torch.uint8), str(root / "images" / name / f"{i}.png"))
    (root / "images" / "b" / "broken.png").write_bytes(b"\x89PNG this is not an image")
    (root / "empty").mkdir()
    (root / "garbage.ckpt").write_bytes(os.urandom(256))
    from lit_effdl.models import create_backbone

    torch.save(create_backbone("small_cnn_w64", 3).state_dict(), root / "w64.pt")
    (root / "readonly_file").write_text("a file, not a folder")


CASES = {
    "unknown method": (["--model.class_path", "lit_effdl.methods.Nope"], "Nope"),
    "unknown data module": (["--data.class_path", "lit_effdl.data.Nowhere"], "Nowhere"),
    "unknown backbone": (["--model.init_args.backbone", "resnet_18"], "resnet_18"),
    "typo in a key": (["--model.init_args.lrr", "0.1"], "lrr"),
    "wrong type": (["--model.init_args.lr", "fast"], "fast"),
    "negative lr": (["--model.init_args.lr", "-0.1"], "lr=-0.1"),
    "budget too large": (["--data.init_args.num_labels_per_class", "500"], "num_labels_per_class=500"),
    "threshold out of range": (["--model.class_path", "lit_effdl.methods.FixMatch", "--model.init_args.threshold", "1.5",
                                "--data.init_args.num_labels_per_class", "4", "--data.init_args.unlabeled_ratio", "2"], "1.5"),
    "temperature <= 0": (["--model.class_path", "lit_effdl.methods.Distill", "--model.init_args.temperature", "0"], "temperature"),
    "checkpoint of another architecture": (["--model.class_path", "lit_effdl.methods.Finetune",
                                            "--model.init_args.checkpoint_path", "w64.pt"], "w64.pt"),
    "unreadable checkpoint": (["--ckpt_path", "garbage.ckpt"], "garbage.ckpt"),
    "checkpoint that does not exist": (["--ckpt_path", "missing.ckpt"], "missing.ckpt"),
    "missing dataset offline": (["--data.class_path", "lit_effdl.data.CIFAR10DataModule", "--data.init_args.root", "nowhere"],
                                "cifar-10-batches-py"),
    "more devices than exist": (["--trainer.devices", "512"], "devices=512"),
    "accelerator not present": (["--trainer.accelerator", "gpu"], "gpu"),
    "output folder not writable": (["--trainer.default_root_dir", "readonly_file/runs"], "readonly_file"),
    "empty unlabeled folder": (["--config", "folder.yaml", "--data.init_args.unlabeled_root", "empty"], "empty"),
    "corrupted image file": (["--config", "folder.yaml"], "broken.png"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    build_inputs(root)
    cases = []
    for args, _ in CASES.values():
        config = [] if "--config" in args else ["--config", "base.yaml"]
        cases.append({"args": ["fit", *config, *args], "cwd": str(root)})
    return dict(zip(CASES, run_in_runner(cases, root)))


def test_catalogue_is_large_enough():
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly(results, case):
    result = results[case]
    _, needle = CASES[case]
    assert result["returncode"] != 0, f"{case}: exited 0\n{result['stderr'][-1500:]}"
    assert needle in result["stderr"], f"{case}: '{needle}' not in stderr:\n{result['stderr'][-1500:]}"
    assert "Traceback" not in result["stderr"], f"{case}: traceback on stderr:\n{result['stderr'][-3000:]}"
