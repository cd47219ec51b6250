"""SLURM requeue, simulated in subprocesses: SIGUSR1 (``#SBATCH --signal=SIGUSR1@120``) saves Lightning's
hpc checkpoint and calls ``scontrol requeue``; the requeued job (same ``SLURM_JOB_ID``) resumes from it in
the same run folder and TensorBoard run, and ends where an uninterrupted job ends. SLURM's signal is
sent by the job to itself at a set step (``SignalAtStep``): a signal from outside can come after the
short fit has ended."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CONFIG = """
seed_everything: 0
trainer: {max_epochs: 4, accelerator: cpu, devices: 1, enable_progress_bar: false, enable_model_summary: false,
          log_every_n_steps: 2}
model:
  class_path: lit_effdl.methods.Supervised
  init_args: {backbone: small_cnn_w16, lr: 0.05}
data:
  class_path: lit_effdl.data.SyntheticDataModule
  init_args: {num_classes: 4, num_train: 640, num_test: 32, batch_size: 16, num_labels_per_class: 16}
"""
STEPS = 4 * (4 * 16 // 16)  # 4 epochs of 16 labels per class x 4 classes in batches of 16
# `scontrol requeue` as SLURM runs it: the job is requeued, and its running processes get SIGTERM
FAKE_SCONTROL = '#!/bin/sh\necho "$@" >> "{log}"\nkill -TERM $PPID\n'


class SignalAtStep(Callback):
    """Sends this process SIGUSR1 in the training step that takes the optimizer to ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def slurm_env(tmp_path: Path, job_id: int) -> dict:
    """What ``sbatch --ntasks-per-node=1`` gives one task, with the fake ``scontrol`` first on PATH."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "scontrol").write_text(FAKE_SCONTROL.format(log=tmp_path / "scontrol.log"))
        (bin_dir / "scontrol").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
            "SLURM_JOB_ID": str(job_id), "SLURM_JOB_NAME": "lit-effdl", "SLURM_NTASKS": "1",
            "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
            "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


def fit(tmp_path: Path, job_id: int, signal_at_step: int | None = None) -> tuple[int, str]:
    """``lit-effdl fit`` as job ``job_id`` (in the tests folder, for ``SignalAtStep``): exit code and output."""
    command = [sys.executable, "-m", "lit_effdl.cli", "fit", "--config", "c.yaml"]
    if signal_at_step is not None:
        command += ["--trainer.callbacks+", "test_slurm_requeue.SignalAtStep", "--trainer.callbacks.step",
                    str(signal_at_step)]
    env = {**slurm_env(tmp_path, job_id), "PYTHONPATH": str(Path(__file__).resolve().parent)}
    result = subprocess.run(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=400)
    return result.returncode, result.stdout


def final_state(run: Path) -> tuple[int, int]:
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    return last["epoch"], last["global_step"]


def test_requeued_job_resumes_its_hpc_checkpoint_in_the_same_run_folder(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG)
    run = tmp_path / "lightning_logs" / "version_4242"
    code, out = fit(tmp_path, 4242, signal_at_step=6)  # in the second epoch
    assert code == 143, out[-3000:]  # the requeue's SIGTERM: on_exception.ckpt saved, exit 143
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert [p.name for p in run.glob("hpc_ckpt_*.ckpt")] == ["hpc_ckpt_1.ckpt"], "no hpc checkpoint in the run folder"
    interrupted_at = torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True, map_location="cpu")["global_step"]
    assert interrupted_at in (5, 6)  # saved in step 6, before or after its optimizer update

    code, out = fit(tmp_path, 4242)  # the requeued job: same job id, same command
    assert code == 0, out[-3000:]
    restored = [line for line in out.splitlines() if line.startswith("Restored all states from the checkpoint at")]
    assert len(restored) == 1 and restored[0].endswith("lightning_logs/version_4242/hpc_ckpt_1.ckpt"), out[-3000:]
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_4242"]
    assert json.loads((run / "run_status.json").read_text())["status"] == "completed"
    writers = {path.name.split(".")[-2] for path in run.glob("events.out.tfevents.*")}  # ...<host>.<pid>.<n>
    assert len(writers) == 2, "both jobs log into the one TensorBoard run"
    events = EventAccumulator(str(run))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss_step")]
    assert steps[0] < interrupted_at < steps[-1] and steps[-1] >= STEPS - 2  # one curve across the requeue

    code, out = fit(tmp_path, 4243)  # another job in the same folder: a fresh run, not 4242's checkpoint
    assert code == 0, out[-3000:]
    assert "Restoring states" not in out
    assert final_state(run) == final_state(tmp_path / "lightning_logs" / "version_4243") == (3, STEPS)
