"""Pseudo-labeling (Lee 2013): the model's own confident predictions on unlabeled images become
hard labels. ``PseudoLabel``: online, the current model labels each batch. ``OfflinePseudoLabel``:
a trained teacher labels the whole unlabeled set once and a fresh model learns from it."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lit_effdl.errors import UserError
from lit_effdl.losses import confidence_masked_cross_entropy
from lit_effdl.methods.base import BaseMethod
from lit_effdl.methods.fixmatch import check_threshold
from lit_effdl.methods.self_training import SelfTrainingStudent, unlabeled_part
from lit_effdl.pseudo_labels import PseudoLabelSet, make_pseudo_labels


class PseudoLabel(BaseMethod):
    """Labeled CE + w(t) x CE(weak view, its own argmax) on unlabeled images above ``threshold``.

    Each step the current model labels the weak view of the unlabeled batch (no gradient through the
    labels); rows under ``threshold`` count as zero. The weight w(t) is 0 for the first
    ``rampup_delay_epochs`` epochs, then grows linearly to ``lambda_u`` over ``rampup_epochs`` epochs
    (Lee 2013's alpha(t): 0 before T1, linear to alpha_f at T2), counted in optimizer steps (so gradient
    accumulation does not stretch the ramp). Needs ``data.unlabeled_ratio`` > 0.

    Args:
        threshold: softmax confidence a prediction needs to become a pseudo-label, in (0, 1].
        lambda_u: weight of the unlabeled loss after the ramp-up.
        rampup_epochs: epochs over which the unlabeled weight grows from 0 (0: full weight at once).
        rampup_delay_epochs: epochs on the labels alone (weight 0) before the ramp starts.
        **kwargs: everything ``BaseMethod`` takes (backbone, optimizer, schedule, EMA...).

    Example::

        lit-effdl fit --config configs/digits/pseudo_label_online.yaml --test_after_fit true
    """

    def __init__(self, threshold: float = 0.95, lambda_u: float = 1.0, rampup_epochs: float = 5.0,
                 rampup_delay_epochs: float = 0.0, **kwargs):
        check_threshold(threshold)
        if min(lambda_u, rampup_epochs, rampup_delay_epochs) < 0:
            raise UserError(f"lambda_u={lambda_u}, rampup_epochs={rampup_epochs}, rampup_delay_epochs="
                            f"{rampup_delay_epochs}: use values >= 0")
        super().__init__(**kwargs)
        self.delay_steps = self.rampup_steps = 0.0  # set at train start, when the epoch length is known

    def on_train_start(self) -> None:
        if self.hparams.rampup_epochs or self.hparams.rampup_delay_epochs:
            steps_per_epoch = self.optimizer_steps_per_epoch(self.total_optimizer_steps())
            self.delay_steps = self.hparams.rampup_delay_epochs * steps_per_epoch
            self.rampup_steps = self.hparams.rampup_epochs * steps_per_epoch

    def unlabeled_weight(self) -> float:
        """0 during the delay, then ``lambda_u`` x the ramp-up's progress, in optimizer steps (``global_step``)."""
        progress = self.global_step - self.delay_steps
        if progress < 0:
            return 0.0
        if not self.rampup_steps:
            return self.hparams.lambda_u
        return self.hparams.lambda_u * min(1.0, progress / self.rampup_steps)

    AUGMENTED_VIEWS = ("weak", "labeled")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        weak = unlabeled_part(batch, "PseudoLabel")["weak"]
        labeled = batch["labeled"]
        n_lab, n_unl = labeled["image"].shape[0], weak.shape[0]
        logits_lab, logits_unl = self(torch.cat([labeled["image"], weak])).split([n_lab, n_unl])
        sup = F.cross_entropy(logits_lab.float(), labeled["target"])
        unsup, mask, _ = confidence_masked_cross_entropy(logits_unl, logits_unl, self.hparams.threshold)
        loss = sup + self.unlabeled_weight() * unsup
        self.log_train("mask_rate", mask.mean(), n_unl, prog_bar=True)
        self.log_train("loss", loss, n_lab, prog_bar=True)
        self.log_train("sup_loss", sup, n_lab)
        self.log_train("unsup_loss", unsup, n_unl)
        return loss


class OfflinePseudoLabel(SelfTrainingStudent):
    """A fresh model learns the labels + a trained teacher's hard labels above ``threshold``.

    The teacher (``teacher_checkpoint``, e.g. a ``Supervised`` run on the labels: round 0 of
    ``lit-effdl rounds --config configs/digits/pseudo_label.yaml``) labels the whole unlabeled set
    once; see ``SelfTrainingStudent`` for the loss, the file and resuming.

    Args:
        threshold: teacher confidence a pseudo-label needs, in (0, 1].
        student_view: the unlabeled view the student learns from: ``weak`` (Lee 2013) or ``strong``
            (RandAugment on the pseudo-labeled images: better on digits, see docs/label-efficiency.md).
        **kwargs: ``SelfTrainingStudent``'s (``teacher_checkpoint``, ``pseudo_label_file``, ``lambda_u``)
            and ``BaseMethod``'s arguments.
    """

    def __init__(self, threshold: float = 0.95, student_view: Literal["weak", "strong"] = "weak", **kwargs):
        check_threshold(threshold)
        super().__init__(student_view=student_view, **kwargs)

    def select(self, predictions: dict[str, torch.Tensor], fingerprint: str) -> PseudoLabelSet:
        return make_pseudo_labels(predictions, fingerprint, min_confidence=self.hparams.threshold, soft=False)
