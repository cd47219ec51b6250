"""`TestConfusionMatrix`: at test time, a confusion-matrix figure and per-class accuracy to TensorBoard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_CLASSES_WITH_COUNTS = 30  # beyond this the cells are too small to hold a number


def confusion_figure(matrix: torch.Tensor, names: list[str]) -> Figure:
    """The confusion matrix as a matplotlib ``Figure``: true classes down, predicted across, both named;
    each cell coloured by its row share (the part of that true class predicted so) and, up to
    ``MAX_CLASSES_WITH_COUNTS`` classes, labelled with its count. Drawn by torchmetrics'
    ``plot_confusion_matrix``, which colours and writes one matrix: the counts are written here."""
    from matplotlib.figure import Figure  # not pyplot: no backend or global figure state
    from torchmetrics.utilities.plot import plot_confusion_matrix

    counts = matrix.long().cpu()
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = counts.shape[0]
    side = min(20.0, 3.0 + 0.6 * n)
    figure = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    ax = figure.subplots()
    plot_confusion_matrix(shares, ax=ax, add_text=False, labels=list(names), cmap="Blues")
    image = ax.images[0]
    image.set_clim(0.0, 1.0)
    figure.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"test confusion matrix ({int(counts.sum())} images)")
    if n <= MAX_CLASSES_WITH_COUNTS:
        for row in range(n):
            for col in range(n):
                ax.text(col, row, str(int(counts[row, col])), ha="center", va="center", fontsize=10 if n <= 12 else 7,
                        color="white" if shares[row, col] > 0.5 else "black")
    return figure


class TestConfusionMatrix(Callback):
    """Collect test predictions; log the matrix figure (``test/confusion_matrix``) and
    ``test/acc_class/<name>`` scalars."""

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
                figure = confusion_figure(matrix, names)
                logger.experiment.add_figure("test/confusion_matrix", figure, trainer.global_step)
