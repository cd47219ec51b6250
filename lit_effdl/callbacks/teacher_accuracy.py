"""`TeacherAccuracy`: a frozen teacher's validation accuracy, logged once as ``val/teacher_acc``."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MulticlassAccuracy


class TeacherAccuracy(Callback):
    """Logs ``val/teacher_acc`` at the first validation after the sanity check: the teacher is
    frozen, so later epochs would measure the same number. Needs ``pl_module.teacher`` (None: skipped)
    and ``pl_module.prepare``."""

    def __init__(self, num_classes: int):
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.logged = False

    def _active(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        return not self.logged and not trainer.sanity_checking and getattr(pl_module, "teacher", None) is not None

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._active(trainer, pl_module):
            with trainer.precision_plugin.val_step_context():  # the precision the step itself runs in
                logits = pl_module.teacher(pl_module.prepare(batch["image"]))
            self.accuracy.to(logits.device).update(logits, batch["target"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer, pl_module):
            if self.accuracy.update_called:
                pl_module.log("val/teacher_acc", self.accuracy.compute(), sync_dist=True)
            self.accuracy.reset()
            self.logged = True
