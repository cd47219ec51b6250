"""Cluster-style runs: torchrun with 2 CPU processes, resume after SIGKILL, SIGTERM checkpoint, determinism."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_effdl.data import SyntheticDataModule
from lit_effdl.methods import Supervised

HERE = Path(__file__).resolve().parent
CONFIG = """
seed_everything: 0
trainer: {{max_epochs: {epochs}, accelerator: cpu, devices: 1, enable_progress_bar: false, enable_model_summary: false,
          log_every_n_steps: 5}}
model:
  class_path: lit_effdl.methods.{method}
  init_args: {{backbone: small_cnn_w16, lr: 0.05 {extra}}}
data:
  class_path: lit_effdl.data.SyntheticDataModule
  init_args: {{num_classes: 4, num_train: {num_train}, num_test: 32, batch_size: 16, num_labels_per_class: 16,
              unlabeled_ratio: {mu}}}
"""


def write_config(path: Path, method="Supervised", epochs=2, extra="", num_train=160, mu=0) -> Path:
    path.write_text(CONFIG.format(method=method, epochs=epochs, extra=extra, num_train=num_train, mu=mu))
    return path


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("method, extra, mu", [
    ("Supervised", "", 0),
    ("FixMatch", ", threshold: 0.5", 2),
    ("Distill", ", teacher_backbone: small_cnn_w16, teacher_checkpoint: teacher.pt", 2),
])
def test_torchrun_two_cpu_processes_agree(tmp_path, method, extra, mu):
    from lit_effdl.models import create_backbone

    torch.save(create_backbone("small_cnn_w16", 4).state_dict(), tmp_path / "teacher.pt")
    config = write_config(tmp_path / "c.yaml", method, epochs=1, extra=extra, mu=mu)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
        "-m", "lit_effdl.cli", "fit", "--config", str(config), "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.callbacks+", "rank_metrics.RankMetrics", "--trainer.callbacks.folder", str(tmp_path / "ranks"),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert "val/acc" in ranks[0]
    assert ranks[0] == ranks[1]


def run_fit(tmp_path, *extra, wait_for=None, send=None):
    command = [sys.executable, "-m", "lit_effdl.cli", "fit", "--config", str(tmp_path / "c.yaml"), *extra]
    process = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait_for is not None:
        deadline = time.time() + 300
        while not wait_for.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(send)
    out, err = process.communicate(timeout=400)
    return process.returncode, out, err


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    write_config(tmp_path / "c.yaml", epochs=4, num_train=640)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    code, _, _ = run_fit(tmp_path, wait_for=last, send=signal.SIGKILL)
    assert code == -signal.SIGKILL
    code, _, err = run_fit(tmp_path, "--ckpt_path", "last")
    assert code == 0, err[-3000:]
    assert not (tmp_path / "lightning_logs" / "version_1").exists(), "resume must log into the same run"
    resumed = torch.load(last, weights_only=True, map_location="cpu")
    steps_per_epoch = 4 * 16 // 16  # 16 labels per class, 4 classes, batch 16
    assert resumed["epoch"] == 4 - 1  # the last finished epoch (0-based)
    assert resumed["global_step"] == 4 * steps_per_epoch
    status = json.loads((last.parent.parent / "run_status.json").read_text())
    assert status["status"] == "completed"


def test_sigterm_saves_a_checkpoint_before_exit(tmp_path):
    write_config(tmp_path / "c.yaml", epochs=20, num_train=640)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    code, _, err = run_fit(tmp_path, wait_for=last, send=signal.SIGTERM)
    assert code != 0
    assert (last.parent / "on_exception.ckpt").is_file(), err[-2000:]
    assert json.loads((last.parent.parent / "run_status.json").read_text())["status"] == "failed"


def test_same_seed_same_weights_on_cpu(tmp_path, fast_trainer_kwargs):
    def fit_once():
        L.seed_everything(0, workers=True)
        dm = SyntheticDataModule(num_classes=3, num_train=96, batch_size=16)
        model = Supervised(num_classes=3, backbone="small_cnn_w16", drop_rate=0.2)
        L.Trainer(max_steps=8, deterministic=True, **fast_trainer_kwargs).fit(model, datamodule=dm)
        return model.state_dict()

    first, second = fit_once(), fit_once()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_slurm_template_parses():
    template = HERE.parent / "scripts" / "slurm" / "fit.sbatch"
    assert subprocess.run(["bash", "-n", str(template)]).returncode == 0
    text = template.read_text()
    assert "srun lit-effdl fit" in text and "--trainer.num_nodes" in text and "bf16-mixed" in text
