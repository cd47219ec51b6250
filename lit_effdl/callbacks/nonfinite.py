"""`NonFiniteGuard`: a NaN or infinite training loss stops the run with a clear message, or skips its step."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_effdl.errors import NonFiniteLossError

NONFINITE_HINT = "Lower the lr or check the inputs; model.init_args.skip_nonfinite: true skips such steps instead"


class NonFiniteGuard(Callback):
    """Check every training loss for NaN / inf before its backward.

    Lightning's ``EarlyStopping(check_finite=True)`` and ``SpikeDetection`` watch a logged metric;
    this guard watches each step's loss, names the global step, epoch, batch and the loss terms the
    method logged (``BaseMethod.last_loss_terms``), and can skip the bad step instead of stopping.
    ``BaseMethod.configure_callbacks`` adds one to every fit; a guard given to the ``Trainer`` wins.

    On the CPU, or when skipping, the loss is read on the host every step (free on the CPU; a skip
    must be decided before the optimizer step). On an accelerator the default records the first
    bad step on the device and reads it on logging steps and at the epoch's end: no host sync per step.

    Args:
        skip: a non-finite step's gradients are dropped (no parameter update, no optimizer state
            change) and the step is counted in ``train/skipped_steps``. With gradient accumulation
            the whole accumulation window is dropped.
        check_every_step: read the loss on the host every step; None: on the CPU or when skipping.
    """

    def __init__(self, skip: bool = False, check_every_step: bool | None = None):
        self.skip = skip
        self.check_every_step = check_every_step
        self.skipped_steps = 0
        self._batch_idx = 0
        self._drop_gradients = False
        self._first_bad_step: torch.Tensor | None = None  # deferred mode: -1 until a bad step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        check_now = self.check_every_step
        if check_now is None:
            check_now = loss.device.type == "cpu" or self.skip
        if not check_now:
            self._record(loss, trainer.global_step)
        elif not bool(torch.isfinite(loss)):
            if not self.skip:
                raise NonFiniteLossError(self._message(trainer, pl_module, loss))
            self.skipped_steps += 1
            self._drop_gradients = True
            pl_module.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._drop_gradients:  # torch optimizers leave a parameter whose grad is None untouched
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None
            self._drop_gradients = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._first_bad_step is not None and trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._raise_recorded(trainer)  # a logging step reads metrics from the device anyway

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_recorded(trainer)

    def _record(self, loss: torch.Tensor, step: int) -> None:
        """Keep the first global step with a non-finite loss on the device (no host sync)."""
        if self._first_bad_step is None or self._first_bad_step.device != loss.device:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = self._first_bad_step
        bad = ~torch.isfinite(loss.detach()) & (first < 0)
        self._first_bad_step = torch.where(bad, torch.full_like(first, step), first)

    def _raise_recorded(self, trainer: L.Trainer) -> None:
        if self._first_bad_step is not None and int(self._first_bad_step) >= 0:
            raise NonFiniteLossError(
                f"non-finite loss at global step {int(self._first_bad_step)} (seen at step {trainer.global_step}, "
                f"epoch {trainer.current_epoch}: on accelerators the check runs when a step is logged). {NONFINITE_HINT}"
            )

    def _message(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> str:
        logged = getattr(pl_module, "last_loss_terms", {})
        terms = ", ".join(f"train/{k}={float(v):.4g}" for k, v in logged.items()) or "none logged"
        return (f"non-finite loss {float(loss.detach())} at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
                f"batch {self._batch_idx}); loss terms: {terms}. {NONFINITE_HINT}")
