"""FixMatch (Sohn et al. 2020): the weak view pseudo-labels the strong view above a confidence threshold.

The step is shared with the adaptive-threshold methods (``FlexMatch``, ``FreeMatch``): they override
``pseudo_label_mask`` (which weak-view predictions become pseudo-labels) and ``unlabeled_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from lit_effdl.errors import UserError
from lit_effdl.losses import hard_pseudo_labels, masked_cross_entropy
from lit_effdl.methods.base import BaseMethod
from lit_effdl.pseudo_labels import hidden_label_hits


def check_threshold(threshold: float, name: str = "threshold") -> None:
    """``threshold`` must lie in (0, 1]: it is a softmax confidence."""
    if not 0.0 < threshold <= 1.0:
        raise UserError(f"{name}={threshold} is not valid: use a confidence in (0, 1] (e.g. 0.95)")


class FixMatch(BaseMethod):
    """Supervised CE + ``lambda_u`` x CE(strong view, argmax(weak view)) on confident unlabeled images.

    Needs the semi-supervised batch (``data.unlabeled_ratio`` = mu > 0, 7 in the paper). Labeled,
    weak and strong images go through the backbone in one concatenated forward (one BatchNorm
    pass). The unlabeled loss is the mean over all mu x B unlabeled images, unconfident ones
    counting as zero. Evaluation uses an EMA of the weights (``ema_decay``, 0.999 by default).
    Logged: ``train/sup_loss``, ``train/unsup_loss``, ``train/mask_rate`` (share of unlabeled
    images above threshold) and ``train/pseudo_acc`` (accuracy of the kept pseudo-labels against
    the hidden true labels: diagnostics only, never part of a loss).

    Args:
        threshold: softmax confidence a weak-view prediction needs to become a pseudo-label, in (0, 1].
        lambda_u: weight of the unlabeled loss.
        ema_decay: EMA of weights for evaluation; 0 turns it off.
        **kwargs: everything ``BaseMethod`` takes (backbone, optimizer, schedule...).

    Example::

        lit-effdl fit --config configs/digits/fixmatch.yaml --test_after_fit true
    """

    def __init__(self, threshold: float = 0.95, lambda_u: float = 1.0, ema_decay: float = 0.999, **kwargs):
        check_threshold(threshold)
        if lambda_u < 0:
            raise UserError(f"lambda_u={lambda_u} is not valid: use 0 or more")
        super().__init__(ema_decay=ema_decay, **kwargs)
        self.pseudo_acc = MeanMetric()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "unlabeled" not in batch:
            raise UserError(
                f"{type(self).__name__} needs unlabeled batches: set data.unlabeled_ratio (mu) above 0, e.g. 7"
            )
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        n_lab, n_unl = labeled["image"].shape[0], unlabeled["weak"].shape[0]
        logits = self(torch.cat([labeled["image"], unlabeled["weak"], unlabeled["strong"]]))
        logits_lab, logits_weak, logits_strong = logits.split([n_lab, n_unl, n_unl])
        sup = F.cross_entropy(logits_lab.float(), labeled["target"])
        unsup, mask, pseudo = self.unlabeled_loss(logits_weak, logits_strong, unlabeled["index"])
        loss = sup + unsup
        self.log_diagnostics(mask, pseudo, unlabeled["hidden_target"], n_unl)
        self.log_train("loss", loss, n_lab, prog_bar=True)
        self.log_train("sup_loss", sup, n_lab)
        return loss

    def pseudo_label_mask(self, logits_weak: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask, pseudo_labels)`` of the weak view: kept (float 1) where confidence >= ``threshold``.
        ``index``: the images' positions in the unlabeled pool (unused here)."""
        confidence, pseudo = hard_pseudo_labels(logits_weak)
        return (confidence >= self.hparams.threshold).float(), pseudo

    def unlabeled_loss(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor,
                       index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lambda_u x masked CE(strong view, pseudo-labels), mask, pseudo_labels)``; logs ``unsup_loss``."""
        mask, pseudo = self.pseudo_label_mask(logits_weak, index)
        unsup = masked_cross_entropy(logits_strong, pseudo, mask)
        self.log_train("unsup_loss", unsup, logits_weak.shape[0])
        return self.hparams.lambda_u * unsup, mask, pseudo

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The rows of ``tensor`` from every DDP rank, rank by rank (as is with one process or no Trainer)."""
        try:
            world_size = self.trainer.world_size
        except RuntimeError:  # not attached to a Trainer (a step called by hand)
            return tensor
        return self.all_gather(tensor).flatten(0, 1) if world_size > 1 else tensor

    @torch.no_grad()
    def log_class_thresholds(self, thresholds: torch.Tensor) -> None:
        """``train/threshold/<class index>`` on logging steps (adaptive-threshold methods)."""
        if self.is_logging_step():
            self.log_dict({f"train/threshold/{c}": t for c, t in enumerate(thresholds)}, on_step=True, on_epoch=False)

    @torch.no_grad()
    def log_diagnostics(self, mask: torch.Tensor, pseudo: torch.Tensor, hidden: torch.Tensor, n: int) -> None:
        """``mask_rate``; the kept pseudo-labels' hits on hidden labels for ``pseudo_acc`` (no host sync)."""
        self.log_train("mask_rate", mask.mean(), n, prog_bar=True)
        correct, measured = hidden_label_hits(pseudo, hidden, mask)
        self.pseudo_acc.update(correct / measured.clamp(min=1), measured)

    def on_train_epoch_end(self) -> None:
        """``train/pseudo_acc`` of the epoch, when there was something to measure (loose files have
        no hidden label: nothing is logged rather than NaN)."""
        super().on_train_epoch_end()
        if self.pseudo_acc.update_called:
            accuracy = self.pseudo_acc.compute()  # over all ranks; NaN when no kept image had a label
            if not torch.isnan(accuracy):
                self.log("train/pseudo_acc", accuracy)
            self.pseudo_acc.reset()
