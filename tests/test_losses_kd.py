"""KD losses: hand-computed values, gradients to the student only, float32 under autocast."""

import math

import pytest
import torch

from lit_effdl.losses import distillation_loss, kd_kl_loss

STUDENT = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
TEACHER = [[3.0, 0.0, -2.0], [-1.0, 0.5, 4.0]]
TARGETS = [0, 2]


def softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def hand_kd(t: float) -> float:
    """sum_i sum_c p_t log(p_t / p_s) / B * T^2, written out."""
    total = 0.0
    for s_row, t_row in zip(STUDENT, TEACHER):
        p_s, p_t = softmax(s_row, t), softmax(t_row, t)
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return total / len(STUDENT) * t * t


def hand_ce() -> float:
    return sum(-math.log(softmax(row, 1.0)[y]) for row, y in zip(STUDENT, TARGETS)) / len(STUDENT)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.0), (2.0, 0.5), (4.0, 0.9), (0.5, 1.0), (3.0, 0.25)])
def test_loss_matches_hand_computed(temperature, alpha):
    total, ce, kd = distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(TARGETS),
                                      temperature, alpha)
    assert kd.item() == pytest.approx(hand_kd(temperature), rel=1e-5)
    expected_ce = hand_ce() if alpha > 0 else 0.0
    assert ce.item() == pytest.approx(expected_ce, rel=1e-5, abs=1e-7)
    assert total.item() == pytest.approx(alpha * expected_ce + (1 - alpha) * hand_kd(temperature), rel=1e-5)


def test_kd_is_zero_for_identical_logits_and_scaled_by_t_squared():
    logits = torch.tensor(STUDENT)
    assert kd_kl_loss(logits, logits.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert hand_kd(4.0) > 0


def test_gradient_reaches_student_only():
    student = torch.tensor(STUDENT, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    total, _, _ = distillation_loss(student, teacher, torch.tensor(TARGETS), 2.0, 0.5)
    total.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_alpha_zero_never_reads_targets():
    total, ce, kd = distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), None, 2.0, 0.0)
    assert ce.item() == 0.0 and total.item() == pytest.approx(kd.item())


def test_float32_under_bf16_autocast():
    student = torch.tensor(STUDENT).bfloat16().requires_grad_()
    teacher = torch.tensor(TEACHER).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, ce, kd = distillation_loss(student, teacher, torch.tensor(TARGETS), 2.0, 0.5)
    assert total.dtype == ce.dtype == kd.dtype == torch.float32
    reference, _, _ = distillation_loss(student.float(), teacher.float(), torch.tensor(TARGETS), 2.0, 0.5)
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)


def test_non_positive_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        kd_kl_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), 0.0)
