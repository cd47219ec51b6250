"""Pseudo-labeling (Lee 2013): online (the current model labels each unlabeled batch) or offline
(a trained teacher labels the whole unlabeled set once; a fresh model trains on labels + those)."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.losses import confidence_masked_cross_entropy, weighted_cross_entropy
from lit_effdl.methods.base import BaseMethod
from lit_effdl.methods.fixmatch import check_threshold
from lit_effdl.models import create_backbone
from lit_effdl.pseudo_labels import (
    PseudoLabelSet,
    dist_info,
    load_pseudo_labels,
    make_pseudo_labels,
    model_fingerprint,
    predict_probs,
    save_pseudo_labels,
)


class _Normalised(nn.Module):
    """A network that takes the loader's uint8 images, normalised as its training run did."""

    def __init__(self, net: nn.Module, mean: Any, std: Any):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        return self.net((x - self.mean) / self.std)


def load_teacher(path: str) -> nn.Module:
    """The evaluated network (EMA copy when the run had one) of a lit-effdl checkpoint, un-noised."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"teacher_checkpoint '{path}' does not exist: give a lit-effdl checkpoint (.ckpt)")
    hp = ckpt.get("hyper_parameters", {})
    net = create_backbone(hp["backbone"], hp["num_classes"], in_chans=hp.get("in_chans", 3),
                          **(hp.get("backbone_kwargs") or {}))
    state = ckpt["state_dict"]
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else "backbone."
    net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return _Normalised(net, hp.get("input_mean", (0.5,)), hp.get("input_std", (0.5,))).eval()


class PseudoLabel(BaseMethod):
    """Labeled CE + ``lambda_u`` x CE on pseudo-labeled unlabeled images.

    ``online``: each step the current model labels the unlabeled (weak view) batch, hard labels
    kept above ``threshold``; the unlabeled weight ramps up linearly over ``rampup_epochs``.
    ``offline``: ``teacher_checkpoint`` labels the whole unlabeled set once at fit start (sharded
    over ranks, gathered by index; saved to ``pseudo_label_file`` with the teacher's fingerprint
    and reused on resume); without a teacher the run is the round-0 supervised teacher itself.
    ``scripts/noisy_student.py`` drives teacher then student with a ``backbones`` list.
    Both need ``data.unlabeled_ratio`` > 0 (except an offline round without teacher).

    Args:
        mode: ``online`` or ``offline``.
        threshold: confidence a pseudo-label needs, in (0, 1].
        lambda_u: weight of the unlabeled loss (after ramp-up).
        rampup_epochs: epochs over which the unlabeled weight grows linearly from 0 (online).
        teacher_checkpoint: offline: checkpoint of the model that labels the unlabeled set.
        pseudo_label_file: offline: where the pseudo-labels are saved / reused (.pt).
        backbones: rounds driver: one backbone per round, teacher first.
        round_index: rounds driver: which round this run is.
        student_view: the unlabeled view the student learns from: ``weak`` (Lee 2013) or ``strong``
            (RandAugment noise on the pseudo-labeled images; offline on digits: 0.938 -> 0.965).
        **kwargs: everything ``BaseMethod`` takes.
    """

    def __init__(
        self,
        mode: Literal["online", "offline"] = "online",
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        rampup_epochs: float = 5.0,
        teacher_checkpoint: str | None = None,
        pseudo_label_file: str | None = None,
        backbones: list[str] | None = None,
        round_index: int = 0,
        student_view: Literal["weak", "strong"] = "weak",
        **kwargs,
    ):
        if mode not in ("online", "offline"):
            raise UserError(f"mode='{mode}' is not valid: use 'online' or 'offline'")
        if student_view not in ("weak", "strong"):
            raise UserError(f"student_view='{student_view}' is not valid: use 'weak' or 'strong'")
        if mode == "online" and student_view != "weak":
            raise UserError(f"student_view='{student_view}' with mode='online' is not valid: online pseudo-labels "
                            "come from the view the model learns (weak); weak labels for a strong view is FixMatch")
        check_threshold(threshold)
        if lambda_u < 0 or rampup_epochs < 0:
            raise UserError(f"lambda_u={lambda_u}, rampup_epochs={rampup_epochs}: use values >= 0")
        super().__init__(**kwargs)
        self.mode, self.threshold, self.lambda_u, self.rampup_epochs = mode, threshold, lambda_u, rampup_epochs
        self.student_view = student_view
        self.pseudo: PseudoLabelSet | None = None
        self.pseudo_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ offline labels
    @property
    def is_student(self) -> bool:
        return self.mode == "offline" and bool(self.hparams.teacher_checkpoint)

    def select(self, predictions: dict[str, torch.Tensor], fingerprint: str) -> PseudoLabelSet:
        """Which teacher predictions become targets (hard labels above ``threshold`` here)."""
        return make_pseudo_labels(predictions, fingerprint, min_confidence=self.threshold, soft=False)

    def on_fit_start(self) -> None:
        rounds = self.hparams.backbones or []
        if len(rounds) > 1:  # `lit-effdl fit` on a rounds config trains one round: say so, and what runs them all
            r = self.hparams.round_index
            rank_zero_info(
                f"{type(self).__name__}: this fit is round {r} ({self.hparams.backbone}"
                f"{', the teacher' if r == 0 else ''}) of rounds 0-{len(rounds) - 1}; "
                "`python scripts/noisy_student.py --config CONFIG` runs every round in turn and resumes"
            )
        if not self.is_student:
            return
        datamodule = self.trainer.datamodule
        dataset = datamodule.unlabeled_inference_dataset()
        teacher = load_teacher(self.hparams.teacher_checkpoint).to(self.device)
        self.check_teacher(teacher)
        fingerprint = model_fingerprint(teacher)
        path = self.hparams.pseudo_label_file
        if path and os.path.exists(path):  # resume: reuse, after checking who made it
            self.pseudo = load_pseudo_labels(path, fingerprint, len(dataset))
        else:
            predictions = predict_probs(teacher, dataset, datamodule.eval_batch_size, self.device)
            self.pseudo = self.select(predictions, fingerprint)
            if path and dist_info()[0] == 0:
                save_pseudo_labels(path, self.pseudo)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
        del teacher
        self.register_targets(self.pseudo, datamodule)

    def check_teacher(self, teacher: nn.Module) -> None:
        """Hook for subclasses (NoisyStudent warns about a smaller student)."""

    def register_targets(self, pseudo: PseudoLabelSet, datamodule) -> None:
        n_cls = self.hparams.num_classes
        self.pl_targets = pseudo.dense_targets(n_cls).to(self.device)
        weights = pseudo.weights().to(self.device)
        self.pl_weights = weights
        self.pl_weight_mean = weights.mean().clamp(min=1e-8)
        hidden = torch.as_tensor(datamodule.unlabeled_source.targets)
        labels = pseudo.hard_labels
        known = hidden[pseudo.index] >= 0
        self.pseudo_stats = {
            "kept_share": float((weights > 0).float().mean()),
            "selected": int(len(pseudo.index)),
            # diagnostics only: accuracy of the selected pseudo-labels against the hidden labels
            "hidden_acc": float((labels[known] == hidden[pseudo.index][known]).float().mean()) if known.any() else -1.0,
        }
        if self.trainer.is_global_zero:
            print(f"pseudo-labels: {self.pseudo_stats}", flush=True)

    # ------------------------------------------------------------------ training
    def unlabeled_weight(self) -> float:
        if self.mode == "offline" or not self.rampup_epochs:
            return self.lambda_u
        per_epoch = max(1, int(self.trainer.num_training_batches)) if self._trainer else 1
        return self.lambda_u * min(1.0, self.global_step / (self.rampup_epochs * per_epoch))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labeled = self.labeled_part(batch)
        n_lab = labeled["image"].shape[0]
        if self.mode == "offline" and not self.is_student:  # round 0: the teacher, labels only
            loss = F.cross_entropy(self(self.augment_batch(labeled["image"], "labeled")).float(), labeled["target"])
            self.log_train("loss", loss, n_lab, prog_bar=True)
            return loss
        if "unlabeled" not in batch:
            raise UserError(f"{type(self).__name__} needs unlabeled batches: set data.unlabeled_ratio above 0")
        unlabeled = batch["unlabeled"]
        view = self.augment_batch(unlabeled[self.student_view], self.student_view)
        logits = self(torch.cat([self.augment_batch(labeled["image"], "labeled"), view]))
        logits_lab, logits_unl = logits.split([n_lab, view.shape[0]])
        sup = F.cross_entropy(logits_lab.float(), labeled["target"])
        if self.is_student:
            idx = unlabeled["index"].to(self.pl_weights.device)
            weights = self.pl_weights[idx]
            targets = self.pl_targets[idx]  # probability rows (one-hot for hard labels)
            unsup = weighted_cross_entropy(logits_unl, targets, weights, view.shape[0] * self.pl_weight_mean)
            self.log_train("selected_rate", (weights > 0).float().mean(), view.shape[0])
        else:
            unsup, mask, _ = confidence_masked_cross_entropy(logits_unl, logits_unl, self.threshold)
            self.log_train("mask_rate", mask.mean(), view.shape[0], prog_bar=True)
        loss = sup + self.unlabeled_weight() * unsup
        self.log_train("loss", loss, n_lab, prog_bar=True)
        self.log_train("sup_loss", sup, n_lab)
        self.log_train("unsup_loss", unsup, view.shape[0])
        return loss
