"""Self-training students: a frozen teacher labels the whole unlabeled set once, the student learns
the labels plus the teacher's targets. ``OfflinePseudoLabel`` and ``NoisyStudent`` differ only in
which teacher predictions become targets (``select``)."""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.losses import weighted_cross_entropy
from lit_effdl.methods.base import BaseMethod
from lit_effdl.models.teacher import load_evaluated_network
from lit_effdl.pseudo_labels import (
    PseudoLabelSet,
    hidden_label_hits,
    load_pseudo_labels,
    model_fingerprint,
    predict_probs,
    save_pseudo_labels,
)

STUDENT_VIEWS = ("weak", "strong")


def unlabeled_part(batch: dict, method: str) -> dict:
    """The unlabeled sub-batch; a clear message when the data module gives none."""
    if "unlabeled" not in batch:
        raise UserError(f"{method} needs unlabeled batches: set data.init_args.unlabeled_ratio above 0")
    return batch["unlabeled"]


class SelfTrainingStudent(BaseMethod):
    """Labeled CE + ``lambda_u`` x CE on the targets a frozen teacher gave the unlabeled set.

    At fit start the evaluated network of ``teacher_checkpoint`` (un-noised: eval mode, images
    without augmentation) labels the whole unlabeled set, sharded over ranks and gathered by sample
    index; ``select`` (each subclass) turns its probabilities into targets. They are saved to
    ``pseudo_label_file`` with the teacher's fingerprint and reused on resume. Each step, an
    unlabeled image seen through ``student_view`` is weighted by how many times ``select`` kept it
    (0: dropped); the weighted loss is normalised by the batch size times the mean weight.

    Args:
        teacher_checkpoint: the lit-effdl checkpoint whose evaluated network labels the unlabeled set.
        pseudo_label_file: where the targets are saved and reused (.pt); None keeps them in memory.
        lambda_u: weight of the pseudo-labeled loss.
        student_view: the unlabeled view the student learns from: ``weak`` or ``strong`` (RandAugment).
        **kwargs: everything ``BaseMethod`` takes (backbone, optimizer, schedule, EMA, dropout...).
    """

    def __init__(self, teacher_checkpoint: str | None = None, pseudo_label_file: str | None = None,
                 lambda_u: float = 1.0, student_view: Literal["weak", "strong"] = "weak", **kwargs):
        if student_view not in STUDENT_VIEWS:
            raise UserError(f"student_view='{student_view}' is not valid: use 'weak' or 'strong'")
        if lambda_u < 0:
            raise UserError(f"lambda_u={lambda_u} is not valid: use 0 or more")
        super().__init__(**kwargs)
        self.pseudo: PseudoLabelSet | None = None
        self.pseudo_stats: dict[str, float] = {}

    def select(self, predictions: dict[str, torch.Tensor], fingerprint: str) -> PseudoLabelSet:
        """Which teacher predictions (``{"index", "probs"}``) become targets, and how."""
        raise NotImplementedError

    def check_teacher(self, teacher: nn.Module) -> None:
        """Called with the loaded teacher before it labels anything; subclasses may warn or refuse."""

    # ------------------------------------------------------------------ the teacher labels, once
    def on_fit_start(self) -> None:
        path = self.hparams.teacher_checkpoint
        if not path:
            raise UserError(f"{type(self).__name__} needs model.init_args.teacher_checkpoint (a lit-effdl .ckpt): "
                            "`lit-effdl rounds` sets it to the previous round's tested checkpoint")
        datamodule = self.trainer.datamodule
        dataset = datamodule.unlabeled_inference_dataset()
        teacher = load_evaluated_network(path).to(self.device)
        self.check_teacher(teacher)
        fingerprint = model_fingerprint(teacher)
        file = self.hparams.pseudo_label_file
        if file and os.path.exists(file):  # resume: reuse, after checking which teacher made it
            self.pseudo = load_pseudo_labels(file, fingerprint, len(dataset))
        else:
            predictions = predict_probs(teacher, dataset, datamodule.eval_batch_size, self.device)
            self.pseudo = self.select(predictions, fingerprint)
            if file and self.trainer.is_global_zero:
                save_pseudo_labels(file, self.pseudo)
            self.trainer.strategy.barrier("pseudo_labels_saved")
        del teacher
        self.pl_targets = self.pseudo.dense_targets(self.hparams.num_classes).to(self.device)
        self.pl_weights = self.pseudo.weights().to(self.device)
        self.pl_weight_mean = self.pl_weights.mean().clamp(min=1e-8)
        self.report_pseudo_labels(datamodule.unlabeled_hidden_targets())

    def report_pseudo_labels(self, hidden: torch.Tensor) -> None:
        """Kept share, count and (diagnostics only, never a loss) accuracy against the hidden labels,
        where some selected image has one."""
        index = self.pseudo.index
        correct, measured = hidden_label_hits(self.pseudo.hard_labels, hidden[index])
        self.pseudo_stats = {"kept_share": float((self.pl_weights > 0).float().mean()), "selected": int(len(index))}
        if measured > 0:
            self.pseudo_stats["hidden_acc"] = float(correct / measured)
        rank_zero_info(f"{type(self).__name__}: pseudo-labels {self.pseudo_stats}")
        if self.logger is not None:
            self.logger.log_metrics({f"pseudo_labels/{k}": v for k, v in self.pseudo_stats.items()}, step=0)

    # ------------------------------------------------------------------ the student learns
    def augmented_views(self) -> tuple[str, ...]:
        return (self.hparams.student_view, "labeled")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        unlabeled, labeled = unlabeled_part(batch, type(self).__name__), batch["labeled"]
        images_u = unlabeled[self.hparams.student_view]
        n_lab, n_unl = labeled["image"].shape[0], images_u.shape[0]
        logits_lab, logits_unl = self(torch.cat([labeled["image"], images_u])).split([n_lab, n_unl])
        sup = F.cross_entropy(logits_lab.float(), labeled["target"])
        index = unlabeled["index"].to(self.pl_weights.device)
        weights = self.pl_weights[index]  # how many times the selection kept each image (0: dropped)
        unsup = weighted_cross_entropy(logits_unl, self.pl_targets[index], weights, n_unl * self.pl_weight_mean)
        loss = sup + self.hparams.lambda_u * unsup
        self.log_train("loss", loss, n_lab, prog_bar=True)
        self.log_train("sup_loss", sup, n_lab)
        self.log_train("unsup_loss", unsup, n_unl)
        self.log_train("selected_rate", (weights > 0).float().mean(), n_unl)
        return loss
