"""Supervised: cross-entropy on the labeled images (with label smoothing); the baseline of every curve."""

from __future__ import annotations

import torch

from lit_effdl.augment.mix import Mix
from lit_effdl.errors import UserError
from lit_effdl.methods.base import BaseMethod


class Supervised(BaseMethod):
    """Train on labeled images only; unlabeled batches, if the data module gives any, are ignored.

    Args:
        label_smoothing: weight of the uniform distribution mixed into the targets.
        mixup_alpha: Mixup's Beta(alpha, alpha) (e.g. 0.8); 0 turns Mixup off.
        cutmix_alpha: CutMix's Beta(alpha, alpha) (e.g. 1.0); 0 turns CutMix off.
        mix_prob: probability that a labeled batch is mixed.
        mix_switch_prob: probability of CutMix rather than Mixup when both are on.
        **kwargs: everything ``BaseMethod`` takes (backbone, optimizer, schedule, EMA...).

    Example::

        lit-effdl fit --config configs/digits/supervised.yaml --data.num_labels_per_class 5
    """

    def __init__(self, label_smoothing: float = 0.0, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 mix_prob: float = 1.0, mix_switch_prob: float = 0.5, **kwargs):
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing={label_smoothing} is not valid: use a value in [0, 1)")
        super().__init__(**kwargs)
        self.mix = Mix(mixup_alpha, cutmix_alpha, mix_prob, mix_switch_prob)

    AUGMENTED_VIEWS = ("labeled",)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labeled = self.labeled_part(batch)
        images, targets = labeled["image"], labeled["target"]
        if self.mix.active:  # soft targets; the loss composes label smoothing with them
            images, targets = self.mix(images, targets, self.hparams.num_classes)
        output = self(images)  # GoogLeNet / Inception add auxiliary logits in training
        loss = self.classification_loss(output, targets, self.hparams.label_smoothing)
        self.log_train("loss", loss, batch_size=labeled["image"].shape[0], prog_bar=True)
        return loss
