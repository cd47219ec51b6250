"""Losses as pure functions on logits or embeddings (computed in float32 whatever the autocast precision)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lit_effdl.errors import UserError


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy in float32 against class indices or probability vectors (rows sum to 1,
    e.g. Mixup / CutMix); ``label_smoothing`` mixes the uniform distribution into either."""
    soft = targets.ndim == logits.ndim
    return F.cross_entropy(logits.float(), targets.float() if soft else targets, label_smoothing=label_smoothing)


def hard_pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidence, label)``: the softmax maximum and argmax of ``logits``, with no gradient."""
    return logits.detach().float().softmax(dim=-1).max(dim=-1)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` against hard ``targets`` averaged over **all** rows, rows with
    ``mask`` 0 counting as zero (FixMatch's normalisation)."""
    return (F.cross_entropy(logits.float(), targets, reduction="none") * mask).mean()


def confidence_masked_cross_entropy(
    logits_target: torch.Tensor, logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FixMatch's unlabeled loss: hard pseudo-labels from ``logits_target`` (no gradient) kept where
    their softmax confidence is >= ``threshold``; ``masked_cross_entropy`` of ``logits`` against them.

    Returns ``(loss, mask, pseudo_labels)``; ``mask`` is float 0/1 per row.
    """
    confidence, pseudo = hard_pseudo_labels(logits_target)
    mask = (confidence >= threshold).float()
    return masked_cross_entropy(logits, pseudo, mask), mask, pseudo


def fairness_loss(logits: torch.Tensor, mask: torch.Tensor, class_probs: torch.Tensor,
                  label_hist: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness term ``-H(SumNorm(p_t / h_t), SumNorm(p_bar / h_bar))`` =
    ``sum_c target_c * log(pred_c)``, to be minimised.

    ``p_bar`` / ``h_bar``: the mean probability and the argmax histogram of the kept rows
    (``mask``) of ``logits`` (the strong view); ``p_t`` / ``h_t``: the EMA state (no gradient).
    A zero histogram entry gives a zero scale (as USB). 0 when no row is kept, without a host sync.
    """
    probs = logits.float().softmax(dim=-1)
    kept = mask.float().unsqueeze(1)
    count = kept.sum()
    mean_probs = (probs * kept).sum(0) / count.clamp(min=1.0)
    hist = (F.one_hot(probs.argmax(-1), probs.shape[1]).float() * kept).sum(0) / count.clamp(min=1.0)
    target = _sum_norm(class_probs.detach().float() * _inverse_or_zero(label_hist.detach().float()))
    pred = _sum_norm(mean_probs * _inverse_or_zero(hist))
    return (count > 0).float() * (target * torch.log(pred + 1e-12)).sum()


def _inverse_or_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, 1.0 / x.clamp(min=1e-30), torch.zeros_like(x))


def _sum_norm(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum().clamp(min=1e-30)


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


# ---------------------------------------------------------------------- contrastive (SimCLR)
def check_temperature(temperature: float, example: float = 0.2, owner: str = "") -> None:
    """A softmax temperature must be positive (``UserError`` naming ``owner`` and an ``example`` otherwise)."""
    if not temperature > 0:
        raise UserError(f"{owner + ' ' if owner else ''}temperature={temperature} is not valid: use a positive "
                        f"value (e.g. {example:g})")


def gather_with_grad(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(every rank's z stacked rank by rank, offset of this rank's rows)``, gradients flowing back to
    each rank's rows (``torch.distributed.nn.functional.all_gather``); ``(z, 0)`` in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z.contiguous())), dist.get_rank() * z.shape[0]


def nt_xent_loss(z: torch.Tensor, temperature: float, candidates: torch.Tensor | None = None,
                 offset: int = 0) -> torch.Tensor:
    """SimCLR's NT-Xent, mean over the rows of ``z``, in float32.

    ``z`` (2n, d) holds two views of n images, ``[view 1; view 2]``: row i's positive is row
    ``(i + n) mod 2n``. ``candidates`` (M, d): the rows every row is contrasted with (default ``z``;
    under DDP every rank's ``z``, see :func:`gather_with_grad`), ``z`` lying at rows ``offset ..
    offset + 2n``. For row i: ``-log(exp(s_ip / T) / sum_{j != i} exp(s_ij / T))``, ``s`` the cosine.
    """
    check_temperature(temperature)
    candidates = z if candidates is None else candidates
    rows, n = z.shape[0], z.shape[0] // 2
    if rows % 2 or candidates.shape[0] < 4:
        raise UserError(f"NT-Xent needs two views of at least 2 images in a step (the other images are the "
                        f"negatives); got {candidates.shape[0]} views: raise data.batch_size x unlabeled_ratio")
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, candidates = F.normalize(z.float(), dim=1), F.normalize(candidates.float(), dim=1)
        logits = z @ candidates.T / temperature
        own = torch.arange(rows, device=z.device)
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[own, own + offset] = True
        return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), (own + n) % rows + offset)
