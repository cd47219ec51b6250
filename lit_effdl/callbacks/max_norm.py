"""`MaxNormConstraint`: after each training step, project MLP weights back into their max-norm ball."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_effdl.models.mlp import MLP


class MaxNormConstraint(Callback):
    """Enforce the ``max_norm`` of each :class:`~lit_effdl.models.mlp.MLP` in the trained network
    (``pl_module.backbone``; a frozen teacher and the EMA copy are left alone).

    Runs in ``on_train_batch_end``, after the optimizer step and before the module's own hook (the
    EMA update sees constrained weights). torch optimizers have no constraint option, and Lightning
    has no hook after each optimizer step; with gradient accumulation, the projection of a batch
    without a step leaves the weights unchanged.
    """

    @staticmethod
    def _mlps(pl_module: L.LightningModule) -> list[MLP]:
        return [m for m in pl_module.backbone.modules() if isinstance(m, MLP) and m.max_norm]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for mlp in self._mlps(pl_module):
            mlp.max_norm_enforced = True
            mlp.apply_max_norm()  # the initial weights start inside the ball

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        for mlp in self._mlps(pl_module):
            mlp.apply_max_norm()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for mlp in self._mlps(pl_module):
            mlp.max_norm_enforced = False
