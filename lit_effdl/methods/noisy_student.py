"""Noisy Student (Xie et al. 2020): an un-noised teacher labels the unlabeled set; an equal-or-larger
student learns labeled + pseudo-labeled images under noise; the student is the next teacher."""

from __future__ import annotations

import warnings
from typing import Literal

from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.methods.pseudo_label import PseudoLabel
from lit_effdl.pseudo_labels import PseudoLabelSet, make_pseudo_labels


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class NoisyStudent(PseudoLabel):
    """One round of Noisy Student; ``scripts/noisy_student.py`` runs the rounds.

    Round 0 (no ``teacher_checkpoint``) trains the teacher on the labels. In round r >= 1 the
    teacher (round r-1's best checkpoint, in eval mode: no dropout, no augmentation) labels the
    whole unlabeled set; rows under ``min_confidence`` are dropped; with ``per_class`` the classes
    are balanced (rare classes duplicated, common ones truncated to their most confident images).
    Duplicates count as sample weights: each unlabeled image in a batch is weighted by how many
    times it is in the balanced set, which in expectation equals drawing from the duplicated set.
    The student learns from the **strong** unlabeled view (RandAugment) with ``drop_rate``
    dropout and, on residual backbones, ``drop_path_rate`` stochastic depth.

    Args:
        soft_labels: train on the teacher's probabilities (True) or its argmax (False).
        temperature: softmax temperature of the teacher's soft labels.
        min_confidence: drop pseudo-labels whose top probability is below this, in [0, 1).
        per_class: balance to this many images per class; 0 = the mean kept count; None = off.
        require_larger_student: warn when the student has fewer parameters than its teacher.
        student_view: the unlabeled view the student learns from; ``strong`` (RandAugment) is the noise.
        **kwargs: ``PseudoLabel``'s (``lambda_u``, ``teacher_checkpoint``, ``backbones``...) and
            ``BaseMethod``'s (``drop_rate``, ``drop_path_rate``, optimizer...) arguments.

    Example::

        python scripts/noisy_student.py --config configs/digits/noisy_student.yaml --out runs/ns
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
        if temperature <= 0:
            raise UserError(f"temperature={temperature} is not valid: use a positive value")
        if not 0.0 <= min_confidence < 1.0:
            raise UserError(f"min_confidence={min_confidence} is not valid: use a value in [0, 1)")
        if per_class is not None and per_class < 0:
            raise UserError(f"per_class={per_class} is not valid: use a positive count, 0 (mean) or null (off)")
        kwargs["mode"] = "offline"
        kwargs.setdefault("threshold", 1.0)  # unused: min_confidence filters here
        super().__init__(student_view=student_view, **kwargs)

    def select(self, predictions: dict, fingerprint: str) -> PseudoLabelSet:
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
