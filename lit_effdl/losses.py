"""Losses as pure functions on logits (computed in float32 whatever the autocast precision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against probability vectors ``targets`` (rows sum to 1)."""
    return -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy for hard (class index) or soft (probability vector) targets, in float32."""
    if targets.ndim == logits.ndim:
        if label_smoothing:
            targets = targets.float() * (1 - label_smoothing) + label_smoothing / logits.shape[-1]
        return soft_target_cross_entropy(logits, targets)
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
