"""Supervised: cross-entropy on the labeled images (with label smoothing); the baseline of every curve."""

from __future__ import annotations

from functools import partial

import torch

from lit_effdl.losses import classification_loss
from lit_effdl.models.auxiliary import loss_with_aux
from lit_effdl.methods.base import BaseMethod


class Supervised(BaseMethod):
    """Train on labeled images only; unlabeled batches, if the data module gives any, are ignored.

    Args:
        label_smoothing: weight of the uniform distribution mixed into the targets.
        **kwargs: everything ``BaseMethod`` takes (backbone, optimizer, schedule, EMA...).

    Example::

        lit-effdl fit --config configs/digits/supervised.yaml --data.num_labels_per_class 5
    """

    def __init__(self, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            from lit_effdl.errors import UserError

            raise UserError(f"label_smoothing={label_smoothing} is not valid: use a value in [0, 1)")
        self.label_smoothing = label_smoothing

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labeled = self.labeled_part(batch)
        output = self(labeled["image"])  # GoogLeNet / Inception add auxiliary logits in training
        loss_fn = partial(classification_loss, label_smoothing=self.label_smoothing)
        loss, _ = loss_with_aux(output, labeled["target"], loss_fn, self.hparams.aux_weight)
        self.log_train("loss", loss, batch_size=labeled["image"].shape[0], prog_bar=True)
        return loss
