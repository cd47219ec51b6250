"""`GradualUnfreeze`: a fine-tuned backbone's body trains only from a given epoch (Lightning ``BaseFinetuning``)."""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning


def after_start(step: int, start: int, schedule: Callable[[int], float]) -> float:
    """LR factor 0 before optimizer step ``start``, then ``schedule`` counted from it."""
    return 0.0 if step < start else schedule(step - start)


class GradualUnfreeze(BaseFinetuning):
    """The body of ``Finetune(mode="full")`` (backbone minus head) is held for its first
    ``unfreeze_epoch`` epochs (LP-FT's probe phase), BatchNorm statistics included, then trains.

    The body's parameter groups are in the optimizer from the start, at LR 0 until ``unfreeze_epoch``
    by their own schedule (``Finetune.lr_factor`` with ``after_start``), instead of being added by
    ``unfreeze_and_add_param_group``, whose group has no weight-decay split and no place in the LR
    scheduler. So the freeze happens at the start of each epoch before ``unfreeze_epoch`` (the
    optimizer is built by then), not in ``freeze_before_training``. On one device the body is frozen
    (no gradients: its backward is skipped); under DDP it is not, as DDP only syncs the parameters
    that needed gradients when it wrapped the model: the LR of 0 and BatchNorm in eval mode
    (``Finetune.train``) hold it unchanged.

    The module needs ``freeze_body()``, ``body_modules()`` and ``body_frozen``.
    """

    def __init__(self, unfreeze_epoch: int):
        super().__init__()
        self.unfreeze_epoch = unfreeze_epoch

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        """Nothing yet: the optimizer must see the body's parameters (see the class docstring)."""

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if epoch < self.unfreeze_epoch:
            if pl_module.trainer.world_size == 1:
                pl_module.freeze_body()
        elif pl_module.body_frozen:
            self.make_trainable(pl_module.body_modules())
