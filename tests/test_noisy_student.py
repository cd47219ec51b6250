"""NoisyStudent and the rounds driver: a run killed in round 2 resumes in round 2, round 1's files
stay untouched; the shipped rounds recipes train a step in every round with their settings."""

import hashlib
import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from lit_effdl import rounds
from lit_effdl.errors import UserError
from lit_effdl.methods import NoisyStudent
from lit_effdl.models import create_backbone

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
STUDENT = """
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
RECIPE = """
config: student.yaml
rounds:
  - args: [--model, lit_effdl.methods.Supervised]
  - args: []
  - args: []
"""


def _recipe(tmp_path, recipe=RECIPE, student=STUDENT) -> Path:
    (tmp_path / "student.yaml").write_text(student)
    (tmp_path / "recipe.yaml").write_text(recipe)
    return tmp_path / "recipe.yaml"


class SimulatedKill(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of the driver can swallow it
    (a KeyboardInterrupt would also stop pytest itself)."""


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_in_round_2_resumes_in_round_2(tmp_path, monkeypatch):
    recipe, out = _recipe(tmp_path), tmp_path / "run"
    real_fit, calls = rounds.run_fit, []

    def killed_in_round_2(config, overrides, run_dir, quiet=True, ckpt_path=None):
        calls.append((Path(run_dir).name, ckpt_path))
        if Path(run_dir).name == "round_2" and ckpt_path is None:
            real_fit(config, overrides + ["--trainer.max_epochs", "1"], run_dir, quiet=quiet, ckpt_path=ckpt_path)
            raise SimulatedKill("killed during round 2")  # after one epoch and its last.ckpt
        return real_fit(config, overrides, run_dir, quiet=quiet, ckpt_path=ckpt_path)

    monkeypatch.setattr(rounds, "run_fit", killed_in_round_2)
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO)
    with pytest.raises(SimulatedKill):
        rounds.run_rounds(recipe, out)
    assert (out / "round_1" / "metrics.json").exists() and not (out / "round_2" / "metrics.json").exists()
    assert not (out / "round_0" / "pseudo_labels.pt").exists()  # the first teacher learns the labels only
    labels_2 = out / "round_2" / "pseudo_labels.pt"
    assert labels_2.exists()
    round_0, round_1 = _digest(out / "round_0"), _digest(out / "round_1")
    labels_2_digest = hashlib.sha256(labels_2.read_bytes()).hexdigest()

    calls.clear()
    results = rounds.run_rounds(recipe, out)
    assert logging.getLogger("lightning.pytorch").level == logging.INFO  # quiet for its fits only
    assert [c[0] for c in calls] == ["round_2"]  # finished rounds are not redone
    assert calls[0][1] is not None and calls[0][1].endswith("last.ckpt")  # resumed inside round 2
    assert [p.name for p in (out / "round_2" / "lightning_logs").iterdir()] == ["version_0"]  # same run folder
    assert results[2]["global_step"] == 4  # 2 steps before the kill + 2 after
    assert _digest(out / "round_0") == round_0 and _digest(out / "round_1") == round_1
    assert hashlib.sha256(labels_2.read_bytes()).hexdigest() == labels_2_digest  # reused, not relabeled
    metrics = json.loads((out / "round_2" / "metrics.json").read_text())
    assert metrics["teacher_checkpoint"] == results[1]["tested_checkpoint"]
    pseudo = torch.load(labels_2, weights_only=True)
    assert pseudo["targets"].ndim == 2  # soft labels
    counts = torch.bincount(pseudo["targets"].argmax(-1), minlength=4)
    assert len(set(counts[counts > 0].tolist())) == 1  # classes balanced


@pytest.mark.parametrize("which", ["best", "last"])
def test_test_checkpoint_picks_the_tested_weights_and_the_next_teacher(tmp_path, which):
    """``test_checkpoint: last`` tests the final weights and hands them to the next round; ``best``
    the best val/acc file. ``mode: min`` makes the two files differ."""
    recipe = _recipe(tmp_path, RECIPE.replace("  - args: []\n  - args: []\n", "  - args: []\n"),
                     STUDENT.replace("max_epochs: 2", "max_epochs: 3"))
    results = rounds.run_rounds(recipe, tmp_path / "run", ["--test_checkpoint", which, "--checkpoint.mode", "min"])
    tested = results[0]["tested_checkpoint"]
    assert results[1]["teacher_checkpoint"] == tested
    if which == "best":
        assert tested == results[0]["best_model_path"] and Path(tested).name.startswith("best-")
    else:
        assert Path(tested).name == "last.ckpt" and tested != results[0]["best_model_path"]
        assert torch.load(tested, weights_only=True)["global_step"] == 6  # 3 epochs x 2 steps: the final weights


def _hparams(out: Path, r: int) -> dict:
    path = json.loads((out / f"round_{r}" / "metrics.json").read_text())["tested_checkpoint"]
    return torch.load(path, weights_only=True)["hyper_parameters"]


@pytest.mark.parametrize("recipe, backbones", [("digits/pseudo_label.yaml", ["small_cnn", "small_cnn"]),
                                               ("digits/noisy_student.yaml", ["small_cnn", "small_cnn_w48", "small_cnn_w64"])])
def test_shipped_recipes_train_every_round_with_their_settings(tmp_path, recipe, backbones):
    one_step = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
                "--trainer.limit_test_batches", "1", "--trainer.accelerator", "cpu"]
    results = rounds.run_rounds(CONFIGS / recipe, tmp_path, one_step)
    assert [r["global_step"] for r in results] == [1] * len(backbones)
    teacher, students = _hparams(tmp_path, 0), [_hparams(tmp_path, r) for r in range(1, len(backbones))]
    assert [teacher["backbone"], *(s["backbone"] for s in students)] == backbones
    assert teacher["label_smoothing"] == 0.0 and "teacher_checkpoint" not in teacher  # Supervised, plain CE
    for key in ("lr", "ema_decay", "drop_rate", "optimizer", "weight_decay", "scheduler"):
        assert teacher[key] == students[0][key], key  # the teacher trains as its students do
    assert all(s["teacher_checkpoint"] == results[r]["tested_checkpoint"] for r, s in enumerate(students))


def test_recipe_detection_and_bad_recipes(tmp_path):
    assert rounds.is_rounds_config(CONFIGS / "digits/noisy_student.yaml")
    assert not rounds.is_rounds_config(CONFIGS / "digits/noisy_student_student.yaml")
    assert rounds.config_files(CONFIGS / "digits/pseudo_label.yaml") == [
        CONFIGS / "digits/pseudo_label.yaml", CONFIGS / "digits/pseudo_label_student.yaml"]
    with pytest.raises(UserError, match="'rounds' must list"):
        rounds.run_rounds(_recipe(tmp_path, "rounds: []\n"), tmp_path / "run")
    with pytest.raises(UserError, match="missing.yaml is not a file"):
        rounds.run_rounds(_recipe(tmp_path, "rounds:\n  - config: missing.yaml\n"), tmp_path / "run")
    with pytest.raises(UserError, match=r"round 0 has \['backbone'\]"):
        rounds.run_rounds(_recipe(tmp_path, "config: student.yaml\nrounds:\n  - backbone: x\n"), tmp_path / "run")


def test_smaller_student_warns_and_bad_knobs_refused():
    with pytest.raises(UserError, match="min_confidence"):
        NoisyStudent(num_classes=4, min_confidence=1.5)
    with pytest.raises(UserError, match="temperature"):
        NoisyStudent(num_classes=4, temperature=0)
    with pytest.raises(UserError, match="per_class"):
        NoisyStudent(num_classes=4, per_class=-1)
    student = NoisyStudent(num_classes=4, in_chans=3, backbone="small_cnn_w8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        student.check_teacher(create_backbone("small_cnn_w16", 4))
    assert any("smaller than its teacher" in str(w.message) for w in caught)


def test_the_student_learns_from_the_strong_view_through_the_cli_parser_too():
    """The CLI fills every inherited argument with its own default: NoisyStudent's must be 'strong'
    (the noise), not the shared student's 'weak'."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(NoisyStudent, "model")
    config = parser.parse_args(["--model.num_classes", "10"])
    assert config.model.student_view == "strong"
    assert NoisyStudent(**config.model.as_dict()).hparams.student_view == "strong"
