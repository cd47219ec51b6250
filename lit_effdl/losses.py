"""Losses as pure functions on logits (computed in float32 whatever the autocast precision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy in float32 against class indices or probability vectors (rows sum to 1,
    e.g. Mixup / CutMix); ``label_smoothing`` mixes the uniform distribution into either."""
    soft = targets.ndim == logits.ndim
    return F.cross_entropy(logits.float(), targets.float() if soft else targets, label_smoothing=label_smoothing)


def confidence_masked_cross_entropy(
    logits_target: torch.Tensor, logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FixMatch's unlabeled loss: hard pseudo-labels from ``logits_target`` (no gradient) kept where
    their softmax confidence is >= ``threshold``; cross-entropy of ``logits`` against them, averaged
    over **all** rows (unconfident rows count as zero, the paper's normalisation).

    Returns ``(loss, mask, pseudo_labels)``; ``mask`` is float 0/1 per row.
    """
    probs = logits_target.detach().float().softmax(dim=-1)
    confidence, pseudo = probs.max(dim=-1)
    mask = (confidence >= threshold).float()
    per_row = F.cross_entropy(logits.float(), pseudo, reduction="none")
    return (per_row * mask).mean(), mask, pseudo


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                           normaliser: torch.Tensor | float) -> torch.Tensor:
    """``sum_i w_i * CE(logits_i, targets_i) / normaliser`` for hard (index) or soft (probability) targets."""
    soft = targets.ndim == logits.ndim
    per_row = F.cross_entropy(logits.float(), targets.float() if soft else targets, reduction="none")
    return (per_row * weights.float()).sum() / normaliser


# ---------------------------------------------------------------------- knowledge distillation
def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation term: ``KL(softmax(t/T) || softmax(s/T)) * T^2``, batch mean, float32.

    The teacher side is detached (gradients reach the student only) and autocast is switched off,
    so bf16 / fp16 logits are upcast before the softmax.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``alpha * CE(targets, student) + (1 - alpha) * kd_kl_loss``; returns (total, ce, kd), float32.

    ``targets`` are class indices or probability vectors (CutMix); with ``alpha == 0`` they are
    never read and may be ``None`` (distillation from the teacher alone).
    """
    kd = kd_kl_loss(student_logits, teacher_logits, temperature)
    if alpha == 0 or targets is None:
        ce = torch.zeros((), device=kd.device)
    else:
        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            ce = classification_loss(student_logits.float(), targets)
    return alpha * ce + (1 - alpha) * kd, ce, kd
