"""Helpers shared by the Lightning-side benchmark suites: a Trainer as users run it, epoch timers."""

from __future__ import annotations

import tempfile
import time
import warnings

import lightning as L
import torch


class EpochTimer(L.Callback):
    """Wall time of each training epoch (``on_train_epoch_start`` -> ``on_train_epoch_end``)."""

    def __init__(self, skip_batches: int = 0):
        self.epochs: list[float] = []
        self.skip_batches = skip_batches
        self.after_skip: list[float] = []  # time from batch ``skip_batches`` to epoch end
        self._start = self._mark = 0.0
        self.batches = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = self._mark = time.perf_counter()
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.skip_batches and self.batches == self.skip_batches:
            self._sync(pl_module)
            self._mark = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        now = time.perf_counter()
        self.epochs.append(now - self._start)
        self.after_skip.append(now - self._mark)

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


def user_trainer(max_epochs: int = 1, callbacks: list | None = None, accelerator: str = "cpu",
                 progress: bool = True, logger: bool = True, **kwargs) -> L.Trainer:
    """A Trainer as ``lit-effdl fit`` builds it: Rich progress bar, TensorBoard logger, checkpoint
    callback and model summary on; validation off (the plain loops have none)."""
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    callbacks = list(callbacks or [])
    if progress:
        callbacks.append(RichProgressBar())
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*val_dataloader.*")
    defaults = dict(
        max_epochs=max_epochs, accelerator=accelerator, devices=1, callbacks=callbacks,
        logger=TensorBoardLogger(tempfile.mkdtemp(prefix="lit_effdl_bench_")) if logger else False,
        default_root_dir=tempfile.mkdtemp(prefix="lit_effdl_bench_"),
        enable_progress_bar=progress, limit_val_batches=0, num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)
