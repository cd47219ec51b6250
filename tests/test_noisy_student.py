"""NoisyStudent rounds: a run killed in round 2 resumes in round 2; round 1's files stay untouched."""

import hashlib
import importlib.util
import json
import logging
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import NoisyStudent

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 2
  accelerator: cpu
  devices: 1
  limit_train_batches: 2
  limit_val_batches: 1
  limit_test_batches: 1
  log_every_n_steps: 1
model:
  class_path: lit_effdl.methods.NoisyStudent
  init_args:
    backbones: [small_cnn_w8, small_cnn_w8, small_cnn_w8]
    backbone: small_cnn_w8
    drop_rate: 0.3
    min_confidence: 0.0
    per_class: 0
    ema_decay: 0.9
data:
  class_path: lit_effdl.data.SyntheticDataModule
  init_args:
    num_classes: 4
    image_size: 16
    num_train: 96
    num_test: 16
    num_labels_per_class: 4
    batch_size: 8
    unlabeled_ratio: 2
    eval_batch_size: 32
    unlabeled_strong_augment: crop
"""


class SimulatedKill(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of the driver can swallow it
    (a KeyboardInterrupt would also stop pytest itself)."""


def _driver():
    spec = importlib.util.spec_from_file_location("ns_driver", ROOT / "scripts" / "noisy_student.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))
    spec.loader.exec_module(module)
    return module


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_in_round_2_resumes_in_round_2(tmp_path, monkeypatch):
    config = tmp_path / "ns.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    driver = _driver()
    real_fit = driver.fit_and_test
    calls = []

    def killed_in_round_2(cfg, overrides, root_dir, quiet=True, ckpt_path=None):
        calls.append((Path(root_dir).name, ckpt_path))
        if Path(root_dir).name == "round_2" and ckpt_path is None:
            real_fit(cfg, overrides + ["--trainer.max_epochs", "1"], root_dir, quiet, ckpt_path)
            raise SimulatedKill("killed during round 2")  # after one epoch and its last.ckpt
        return real_fit(cfg, overrides, root_dir, quiet, ckpt_path)

    monkeypatch.setattr(driver, "fit_and_test", killed_in_round_2)
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO)
    with pytest.raises(SimulatedKill):
        driver.run_rounds(str(config), out)
    assert (out / "round_1" / "metrics.json").exists() and not (out / "round_2" / "metrics.json").exists()
    labels_2 = out / "round_2" / "pseudo_labels.pt"
    assert labels_2.exists()
    round_0, round_1 = _digest(out / "round_0"), _digest(out / "round_1")
    labels_2_digest = hashlib.sha256(labels_2.read_bytes()).hexdigest()

    calls.clear()
    results = driver.run_rounds(str(config), out)
    assert logging.getLogger("lightning.pytorch").level == logging.INFO  # quiet for its fits only
    assert [c[0] for c in calls] == ["round_2"]  # finished rounds are not redone
    assert calls[0][1] is not None and calls[0][1].endswith("last.ckpt")  # resumed inside round 2
    assert [p.name for p in (out / "round_2" / "lightning_logs").iterdir()] == ["version_0"]  # same run folder
    assert results[2]["global_step"] == 4  # 2 steps before the kill + 2 after
    assert _digest(out / "round_0") == round_0 and _digest(out / "round_1") == round_1
    assert hashlib.sha256(labels_2.read_bytes()).hexdigest() == labels_2_digest  # reused, not relabeled
    metrics = json.loads((out / "round_2" / "metrics.json").read_text())
    assert metrics["teacher_checkpoint"] == results[1]["best_model_path"]
    pseudo = torch.load(labels_2, weights_only=True)
    assert pseudo["targets"].ndim == 2  # soft labels
    counts = torch.bincount(pseudo["targets"].argmax(-1), minlength=4)
    assert len(set(counts[counts > 0].tolist())) == 1  # classes balanced


def test_smaller_student_warns_and_bad_knobs_refused():
    with pytest.raises(UserError, match="min_confidence"):
        NoisyStudent(num_classes=4, min_confidence=1.5)
    with pytest.raises(UserError, match="temperature"):
        NoisyStudent(num_classes=4, temperature=0)
    student = NoisyStudent(num_classes=4, in_chans=3, backbone="small_cnn_w8")
    from lit_effdl.models import create_backbone

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        student.check_teacher(create_backbone("small_cnn_w16", 4))
    assert any("smaller than its teacher" in str(w.message) for w in caught)


@pytest.mark.parametrize("which", ["best", "last"])
def test_test_checkpoint_picks_the_tested_weights_and_the_next_teacher(tmp_path, which):
    """``test_checkpoint: last`` tests the final weights (the in-memory model at the end of fit) and hands
    them to the next round; ``best`` the best val/acc file. ``mode: min`` makes the two files differ."""
    config = tmp_path / "ns.yaml"
    config.write_text(CONFIG.replace("backbones: [small_cnn_w8, small_cnn_w8, small_cnn_w8]", "backbones: [small_cnn_w8, small_cnn_w8]")
                      .replace("max_epochs: 2", "max_epochs: 3"))
    driver = _driver()
    results = driver.run_rounds(str(config), tmp_path / "run", ["--test_checkpoint", which, "--checkpoint.mode", "min"])
    tested = results[0]["tested_checkpoint"]
    assert results[1]["teacher_checkpoint"] == tested
    if which == "best":
        assert tested == results[0]["best_model_path"] and Path(tested).name.startswith("best-")
    else:
        assert Path(tested).name == "last.ckpt" and tested != results[0]["best_model_path"]
        assert torch.load(tested, weights_only=True)["global_step"] == 6  # 3 epochs x 2 steps: the final weights


def test_the_student_learns_from_the_strong_view_through_the_cli_parser_too():
    """The CLI fills every inherited argument with its own default: NoisyStudent's must be 'strong'
    (the noise), not PseudoLabel's 'weak'."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(NoisyStudent, "model")
    config = parser.parse_args(["--model.num_classes", "10"])
    assert config.model.student_view == "strong"
    assert NoisyStudent(**config.model.as_dict()).student_view == "strong"


def test_a_plain_fit_of_a_rounds_config_says_it_is_one_round(fast_trainer_kwargs, caplog):
    model = NoisyStudent(num_classes=4, in_chans=3, backbone="small_cnn_w8",
                         backbones=["small_cnn_w8", "small_cnn_w8", "small_cnn_w8"])
    data = SyntheticDataModule(num_classes=4, image_size=16, num_train=48, num_test=8, num_labels_per_class=4,
                               batch_size=8, unlabeled_ratio=0)
    with caplog.at_level("INFO", logger="lightning.pytorch"):  # Lightning's own logger, whatever an earlier test left
        L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, **fast_trainer_kwargs).fit(model, data)
    said = [r.getMessage() for r in caplog.records if "round 0" in r.getMessage()]
    assert said and "of rounds 0-2" in said[0] and "scripts/noisy_student.py" in said[0]
