"""`RunStatus`: marks a run folder ``failed`` on an exception and ``completed`` when the CLI is done;
`SnapshotOnException`: Lightning's exception checkpoint, without a file for a config mistake."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, OnExceptionCheckpoint

from lit_effdl.errors import UserError
from lit_effdl.io import write_json_atomic

RUN_STATUS_FILE = "run_status.json"


def write_run_status(trainer: L.Trainer, status: str, error: str | None = None) -> None:
    """Write ``run_status.json`` atomically in the run folder (rank 0 only)."""
    log_dir = trainer.log_dir
    if not log_dir or not trainer.is_global_zero:
        return
    os.makedirs(log_dir, exist_ok=True)
    payload = {"status": status, "global_step": trainer.global_step, "epoch": trainer.current_epoch}
    if error:
        payload["error"] = error
    write_json_atomic(Path(log_dir) / RUN_STATUS_FILE, payload)


class RunStatus(Callback):
    """A partial run folder never looks like a finished one: it says ``failed`` and why."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        write_run_status(trainer, "failed", f"{type(exception).__name__}: {exception}")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_run_status(trainer, "running")


class RunMetadata(Callback):
    """Checkpoints carry what predicting from them needs: class names, the label split's
    fingerprint, the image size and the full resolved config (plain strings and lists: ``weights_only`` safe)."""

    def __init__(self, config_yaml: str | None = None):
        self.config_yaml = config_yaml

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        datamodule = trainer.datamodule
        split = getattr(datamodule, "split", None)
        checkpoint["lit_effdl"] = {
            "class_names": list(pl_module.hparams.get("class_names") or []),
            "label_split_fingerprint": split.fingerprint() if split is not None else None,
            "image_size": getattr(datamodule, "image_size", None),  # what lit-effdl select checks
            "config": self.config_yaml,
        }


class SnapshotOnException(OnExceptionCheckpoint):
    """Saves ``on_exception.ckpt`` when a fit dies (SIGTERM, a crash), to resume from; a bad input
    caught before the first step (a ``UserError``) has trained nothing, so it leaves no file."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not (isinstance(exception, UserError) and trainer.global_step == 0):
            super().on_exception(trainer, pl_module, exception)
