"""The `lit-effdl` command end to end, in subprocesses (as users run it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC_CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 2
  accelerator: cpu
  devices: 1
  log_every_n_steps: 2
model:
  class_path: lit_effdl.methods.Supervised
  init_args:
    backbone: small_cnn_w16
    lr: 0.05
data:
  class_path: lit_effdl.data.SyntheticDataModule
  init_args:
    num_classes: 5
    num_train: 160
    num_test: 40
    batch_size: 32
    num_labels_per_class: 20
"""


def run_cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lit_effdl.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "synthetic.yaml"
    path.write_text(SYNTHETIC_CONFIG)
    return path


def test_fit_with_test_after_fit_writes_a_complete_run(tmp_path, config):
    result = run_cli("fit", "--config", str(config), "--test_after_fit", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout
    assert "ckpt_path" not in result.stderr  # Lightning's "no last checkpoint" warnings on a new run folder
    run = tmp_path / "lightning_logs" / "version_0"
    assert json.loads((run / "run_status.json").read_text())["status"] == "completed"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert any(p.name.startswith("best-") for p in (run / "checkpoints").iterdir())
    split = json.loads((run / "label_split.json").read_text())
    assert len(split["labeled"]) == 5 * 20
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard events missing"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val/acc", "val/loss", "val/acc_top5", "test/acc"} <= tags
    assert any(t.startswith("train/loss") for t in tags)


def test_print_config_exits_zero():
    result = run_cli("fit", "--config", "configs/digits/supervised.yaml", "--print_config", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "class_path: lit_effdl.methods.Supervised" in result.stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.init_args.backbone", "resnet_18"], "unknown backbone 'resnet_18'"),
        (["--data.init_args.num_labels_per_class", "500"], "num_labels_per_class=500"),
        (["--model.init_args.bogus_key", "1"], "bogus_key"),
    ],
)
def test_bad_input_is_one_message_without_traceback(tmp_path, config, extra, message):
    result = run_cli("fit", "--config", str(config), *extra, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    for status in tmp_path.glob("lightning_logs/*/run_status.json"):
        assert json.loads(status.read_text())["status"] != "completed"
    assert not list(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt")), "a bad input left a checkpoint"


def test_test_after_fit_tests_the_final_weights_unless_told_best(tmp_path, config):
    """The default tested checkpoint is last.ckpt (best-by-val/acc on a small validation split picks
    noise); ``--test_checkpoint best`` still tests the best val/acc file."""
    from lit_effdl.experiment import run_fit

    tiny = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1"]
    last = run_fit(str(config), tiny, tmp_path / "last")
    assert Path(last["tested_checkpoint"]).name == "last.ckpt" and Path(last["tested_checkpoint"]).is_file()
    assert last["test_acc"] is not None and last["global_step"] == 4
    assert json.loads((Path(last["log_dir"]) / "run_status.json").read_text())["status"] == "completed"
    best = run_fit(str(config), [*tiny, "--test_checkpoint", "best"], tmp_path / "best")
    assert best["tested_checkpoint"] == best["best_model_path"] and Path(best["best_model_path"]).name.startswith("best-")


def test_rounds_subcommand_runs_the_rounds_driver(monkeypatch):
    import lit_effdl.rounds
    from lit_effdl.cli import main

    calls = []
    monkeypatch.setattr(lit_effdl.rounds, "main", calls.append)
    main(["rounds", "--config", "c.yaml", "--out", "runs/x", "--seed_everything", "1"])
    assert calls == [["--config", "c.yaml", "--out", "runs/x", "--seed_everything", "1"]]
