"""`AugmentPreview`: logs a grid of original and augmented training images to TensorBoard at fit start."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from lit_effdl.augment.preview import preview_grid, preview_images, view_pipelines


class AugmentPreview(Callback):
    """At the start of fit, one image per training view (``augment/labeled``, ``augment/weak``,
    ``augment/strong``): the first row originals, then ``rows`` augmented rows.

    Args:
        num_images: images per row.
        rows: augmented rows under the originals.

    YAML::

        trainer:
          callbacks:
            - class_path: lit_effdl.callbacks.preview.AugmentPreview
    """

    def __init__(self, num_images: int = 8, rows: int = 3):
        self.num_images, self.rows = num_images, rows
        self.logged: list[str] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if datamodule is None or not loggers or not trainer.is_global_zero:
            return
        images = preview_images(datamodule, self.num_images)
        for view, (pipeline, batched, _spec) in view_pipelines(datamodule).items():
            grid = preview_grid(images, pipeline, self.rows, batched=batched)
            for logger in loggers:
                logger.experiment.add_image(f"augment/{view}", grid, global_step=trainer.global_step)
            self.logged.append(view)
