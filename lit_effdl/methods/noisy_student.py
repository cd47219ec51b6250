"""Noisy Student (Xie et al. 2020): an un-noised teacher labels the unlabeled set; an equal-or-larger
student learns labeled + pseudo-labeled images under noise; the student is the next teacher."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.losses import check_temperature
from lit_effdl.methods.self_training import SelfTrainingStudent
from lit_effdl.pseudo_labels import PseudoLabelSet, make_pseudo_labels


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class NoisyStudent(SelfTrainingStudent):
    """One student round of Noisy Student; ``lit-effdl rounds`` runs the teacher and the rounds.

    The teacher (the previous round's tested checkpoint, in eval mode: no dropout, no augmentation)
    labels the whole unlabeled set; its probabilities are softened by ``temperature``, rows under
    ``min_confidence`` are dropped, and with ``per_class`` the classes are balanced (rare classes
    duplicated, common ones truncated to their most confident images). A duplicate counts as a
    sample weight, which in expectation equals drawing from the duplicated set. The noise: the
    **strong** unlabeled view (RandAugment), ``drop_rate`` dropout and, on residual backbones,
    ``drop_path_rate`` stochastic depth.

    Args:
        soft_labels: train on the teacher's probabilities (True) or its argmax (False).
        temperature: softmax temperature of the teacher's probabilities (> 1 softens).
        min_confidence: drop pseudo-labels whose top probability is below this, in [0, 1).
        per_class: balance to this many images per class; 0 = the mean kept count; None = off.
        require_larger_student: warn when the student has fewer parameters than its teacher.
        student_view: the unlabeled view the student learns from; ``strong`` (RandAugment) is the noise.
        **kwargs: ``SelfTrainingStudent``'s (``teacher_checkpoint``, ``pseudo_label_file``, ``lambda_u``)
            and ``BaseMethod``'s (``drop_rate``, ``drop_path_rate``, optimizer...) arguments.

    Example::

        lit-effdl rounds --config configs/digits/noisy_student.yaml --out runs/noisy_student
    """

    def __init__(
        self,
        soft_labels: bool = True,
        temperature: float = 1.0,
        min_confidence: float = 0.3,
        per_class: int | None = 0,
        require_larger_student: bool = True,
        student_view: Literal["weak", "strong"] = "strong",
        **kwargs,
    ):
        check_temperature(temperature, example=1)
        if not 0.0 <= min_confidence < 1.0:
            raise UserError(f"min_confidence={min_confidence} is not valid: use a value in [0, 1)")
        if per_class is not None and per_class < 0:
            raise UserError(f"per_class={per_class} is not valid: use a positive count, 0 (mean) or null (off)")
        super().__init__(student_view=student_view, **kwargs)

    def select(self, predictions: dict[str, torch.Tensor], fingerprint: str) -> PseudoLabelSet:
        hp = self.hparams
        probs = predictions["probs"]
        if hp.temperature != 1.0:  # soften (T > 1) or sharpen the teacher's distribution
            probs = (probs.clamp_min(1e-12).log() / hp.temperature).softmax(-1)
        return make_pseudo_labels({"index": predictions["index"], "probs": probs}, fingerprint,
                                  min_confidence=hp.min_confidence, soft=hp.soft_labels, per_class=hp.per_class)

    def check_teacher(self, teacher: nn.Module) -> None:
        student, teach = count_params(self.backbone), count_params(teacher)
        if self.hparams.require_larger_student and student < teach:
            warnings.warn(
                f"the student ({self.hparams.backbone}, {student} parameters) is smaller than its teacher "
                f"({teach}): Noisy Student wants an equal-or-larger student; training anyway",
                stacklevel=2,
            )
