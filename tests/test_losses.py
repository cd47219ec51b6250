"""Classification losses: ``F.cross_entropy`` with probability targets and label smoothing gives the
hand-written soft-target formula's numbers; weighted rows for hard and soft targets."""

import pytest
import torch
import torch.nn.functional as F

from lit_effdl.losses import classification_loss, weighted_cross_entropy

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.0, 4.0, 0.0, 1.0]])
SOFT = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]])


def soft_formula(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The mean of ``-sum_k q_k log p_k`` with ``q = (1 - s) * targets + s / K``, written out."""
    q = targets * (1 - smoothing) + smoothing / logits.shape[-1]
    return -(q * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_soft_targets_with_smoothing_match_the_formula(smoothing):
    assert classification_loss(LOGITS, SOFT, smoothing).item() == pytest.approx(
        soft_formula(LOGITS, SOFT, smoothing).item(), rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_hard_and_one_hot_targets_give_the_same_loss(smoothing):
    hard = torch.tensor([0, 2, 1])
    one_hot = F.one_hot(hard, 4).float()
    assert classification_loss(LOGITS, hard, smoothing).item() == pytest.approx(
        classification_loss(LOGITS, one_hot, smoothing).item(), rel=1e-6)
    assert classification_loss(LOGITS, hard, smoothing).item() == pytest.approx(
        soft_formula(LOGITS, one_hot, smoothing).item(), rel=1e-6)


def test_low_precision_logits_are_computed_in_float32():
    loss = classification_loss(LOGITS.bfloat16(), SOFT, 0.1)
    assert loss.dtype == torch.float32


def test_weighted_rows_for_soft_and_hard_targets():
    weights = torch.tensor([1.0, 0.0, 0.5])
    per_row = -(SOFT * F.log_softmax(LOGITS, dim=-1)).sum(dim=-1)
    expected = (per_row * weights).sum() / 2.0
    assert weighted_cross_entropy(LOGITS, SOFT, weights, 2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    hard = torch.tensor([0, 2, 1])
    assert weighted_cross_entropy(LOGITS, hard, weights, 2.0).item() == pytest.approx(
        weighted_cross_entropy(LOGITS, F.one_hot(hard, 4).float(), weights, 2.0).item(), rel=1e-6)
