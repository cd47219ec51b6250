"""FixMatch (Sohn et al. 2020): the weak view pseudo-labels the strong view above a confidence threshold."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from lit_effdl.errors import UserError
from lit_effdl.losses import confidence_masked_cross_entropy
from lit_effdl.methods.base import BaseMethod


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
                "FixMatch needs unlabeled batches: set data.unlabeled_ratio (mu) above 0, e.g. 7"
            )
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        n_lab, n_unl = labeled["image"].shape[0], unlabeled["weak"].shape[0]
        logits = self(torch.cat([labeled["image"], unlabeled["weak"], unlabeled["strong"]]))
        logits_lab, logits_weak, logits_strong = logits.split([n_lab, n_unl, n_unl])
        sup = F.cross_entropy(logits_lab.float(), labeled["target"])
        unsup, mask, pseudo = confidence_masked_cross_entropy(logits_weak, logits_strong, self.hparams.threshold)
        loss = sup + self.hparams.lambda_u * unsup
        self.log_diagnostics(mask, pseudo, unlabeled["hidden_target"], n_unl)
        self.log_train("loss", loss, n_lab, prog_bar=True)
        self.log_train("sup_loss", sup, n_lab)
        self.log_train("unsup_loss", unsup, n_unl)
        return loss

    @torch.no_grad()
    def log_diagnostics(self, mask: torch.Tensor, pseudo: torch.Tensor, hidden: torch.Tensor, n: int) -> None:
        """``mask_rate`` and ``pseudo_acc`` (weighted by the kept count, no host sync)."""
        self.log_train("mask_rate", mask.mean(), n, prog_bar=True)
        known = mask * (hidden >= 0).float()
        correct = (known * (pseudo == hidden).float()).sum() / known.sum().clamp(min=1.0)
        self.pseudo_acc(correct, known.sum())
        self.log("train/pseudo_acc", self.pseudo_acc, on_step=False, on_epoch=True)
