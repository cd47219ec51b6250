"""`TestConfusionMatrix`: at test time, a confusion-matrix image and per-class accuracy to TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix


def confusion_image(matrix: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """Row-normalised confusion matrix as a (3, H, W) image: white = 0, dark blue = 1.

    Drawn with tensors so the runtime needs no plotting library."""
    rows = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    big = rows.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    low, high = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.03, 0.19, 0.42])
    image = low[:, None, None] + (high - low)[:, None, None] * big[None]
    image[:, ::cell, :] = 0.8  # grid lines
    image[:, :, ::cell] = 0.8
    return image.clamp(0, 1)


class TestConfusionMatrix(Callback):
    """Collect test predictions; log the matrix image and ``test/acc_class/<name>`` scalars."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "test":
            self.matrix = MulticlassConfusionMatrix(pl_module.hparams.num_classes).to(pl_module.device)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if isinstance(outputs, dict) and "logits" in outputs:
            self.matrix.update(outputs["logits"].argmax(-1), batch["target"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = self.matrix.compute().cpu()  # synced across ranks by torchmetrics
        self.matrix.reset()
        names = pl_module.hparams.get("class_names") or [str(k) for k in range(matrix.shape[0])]
        per_class = matrix.diag().float() / matrix.sum(dim=1).clamp(min=1)
        for name, acc in zip(names, per_class.tolist()):
            pl_module.log(f"test/acc_class/{name}", acc, sync_dist=False)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                logger.experiment.add_image("test/confusion_matrix", confusion_image(matrix), trainer.global_step)
