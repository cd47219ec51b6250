"""Helpers shared by the Lightning-side benchmark suites: a Trainer as users run it, epoch timers."""

from __future__ import annotations

import tempfile
import time
import warnings
from typing import Callable

import lightning as L
import torch


class EpochTimer(L.Callback):
    """Wall and process CPU time of each training epoch (``on_train_epoch_start`` -> ``_end``).

    CPU time (all threads of the process) is the steadier figure on a machine shared with other
    jobs: it counts the work done, not the time spent waiting for a core."""

    def __init__(self, skip_batches: int = 0):
        self.epochs: list[float] = []
        self.skip_batches = skip_batches
        self.after_skip: list[float] = []  # time from batch ``skip_batches`` to epoch end
        self.epochs_cpu: list[float] = []
        self.after_skip_cpu: list[float] = []
        self._start = self._mark = self._start_cpu = self._mark_cpu = 0.0
        self.batches = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = self._mark = time.perf_counter()
        self._start_cpu = self._mark_cpu = time.process_time()
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.skip_batches and self.batches == self.skip_batches:
            self._sync(pl_module)
            self._mark, self._mark_cpu = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        now, now_cpu = time.perf_counter(), time.process_time()
        self.epochs.append(now - self._start)
        self.after_skip.append(now - self._mark)
        self.epochs_cpu.append(now_cpu - self._start_cpu)
        self.after_skip_cpu.append(now_cpu - self._mark_cpu)

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


def user_trainer(max_epochs: int = 1, callbacks: list | None = None, accelerator: str = "cpu",
                 progress: bool = True, logger: bool = True, **kwargs) -> L.Trainer:
    """A Trainer as ``lit-effdl fit`` builds it: its Rich progress bar, TensorBoard logger, checkpoint
    callback and model summary on; validation off (the plain loops have none)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from lit_effdl.callbacks.progress import ThrottledRichProgressBar

    callbacks = list(callbacks or [])
    if progress:
        callbacks.append(ThrottledRichProgressBar())
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


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu
