"""FreeMatch (Wang et al. 2023): FixMatch with self-adaptive thresholds (a global EMA of the model's
confidence, modulated per class) and a self-adaptive fairness loss."""

from __future__ import annotations

import torch

from lit_effdl.errors import UserError
from lit_effdl.losses import fairness_loss
from lit_effdl.methods.fixmatch import FixMatch


class FreeMatch(FixMatch):
    """FixMatch's step with thresholds ``tau_t(c) = MaxNorm(p_t)[c] x tau_t`` and a fairness term.

    Each step, on the weak view of the unlabeled batch (all DDP ranks' rows gathered), with ``m`` =
    ``ema_momentum``::

        tau_t = m tau_(t-1) + (1 - m) mean_b max_c q_b          (global: the mean confidence)
        p_t   = m p_(t-1)   + (1 - m) mean_b q_b                (local: the mean probability vector)
        h_t   = m h_(t-1)   + (1 - m) hist(argmax q_b) / B      (the pseudo-label histogram)

    then a prediction is kept when ``max q_b >= tau_t(argmax q_b)`` with
    ``tau_t(c) = p_t[c] / max_c' p_t[c'] x tau_t``. Loss: supervised CE + ``lambda_u`` x the masked CE of
    the strong view + ``lambda_f`` x ``-H(SumNorm(p_t / h_t), SumNorm(p_bar / h_bar))`` (``fairness_loss``;
    ``p_bar``, ``h_bar``: mean probability and histogram of the kept strong-view predictions).

    Checked against USB (``semilearn/algorithms/freematch/freematch.py`` and ``utils.py``,
    ``FreeMatchThresholingHook``, ``entropy_loss``): same updates and order (state first, then the
    mask), mean (not quantile) confidence, no clipping, the fairness term with its sign and
    ``1 / 0 -> 0`` scales; under DDP the probabilities are gathered first, as USB does. Difference,
    deliberate: ``tau``, ``p_t`` and ``h_t`` start at ``1 / C`` as the paper says (USB starts them at 1).
    The fairness term is computed on each rank's own kept rows (as USB).

    State (``tau``, ``class_probs`` = p_t, ``label_hist`` = h_t) lives in buffers: saved in
    checkpoints, restored on resume. Logged as FixMatch, plus ``train/fair_loss``, ``train/tau`` and
    ``train/threshold/<class>``.

    Args:
        ema_momentum: ``m`` of the three EMAs, in [0, 1) (0.999 in the paper).
        lambda_f: weight of the fairness loss (0.01 in USB's default; 0 turns it off).
        lambda_u: weight of the unlabeled cross-entropy.
        ema_decay: EMA of weights for evaluation; 0 turns it off.
        **kwargs: everything ``BaseMethod`` takes (backbone, optimizer, schedule...).

    Example::

        lit-effdl fit --config configs/digits/freematch.yaml --test_after_fit true
    """

    def __init__(self, ema_momentum: float = 0.999, lambda_f: float = 0.01, lambda_u: float = 1.0,
                 ema_decay: float = 0.999, **kwargs):
        if not 0.0 <= ema_momentum < 1.0:
            raise UserError(f"ema_momentum={ema_momentum} is not valid: use a value in [0, 1) (e.g. 0.999)")
        if lambda_f < 0:
            raise UserError(f"lambda_f={lambda_f} is not valid: use 0 or more")
        super().__init__(threshold=1.0, lambda_u=lambda_u, ema_decay=ema_decay, **kwargs)
        self.hparams.pop("threshold", None)  # FixMatch's fixed threshold: no meaning here, not saved
        uniform = 1.0 / self.hparams.num_classes
        self.register_buffer("tau", torch.tensor(uniform))
        self.register_buffer("class_probs", torch.full((self.hparams.num_classes,), uniform))
        self.register_buffer("label_hist", torch.full((self.hparams.num_classes,), uniform))

    @torch.no_grad()
    def update_state(self, probs: torch.Tensor) -> None:
        """One EMA step of ``tau``, ``class_probs`` and ``label_hist`` on every rank's weak-view probabilities."""
        probs = self.gather_rows(probs)
        m = self.hparams.ema_momentum
        hist = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).float() / probs.shape[0]
        self.tau.mul_(m).add_((1 - m) * probs.max(-1).values.mean())
        self.class_probs.mul_(m).add_((1 - m) * probs.mean(0))
        self.label_hist.mul_(m).add_((1 - m) * hist)

    @torch.no_grad()
    def class_thresholds(self) -> torch.Tensor:
        """``MaxNorm(p_t)[c] x tau_t`` for every class."""
        return self.class_probs / self.class_probs.max() * self.tau

    def pseudo_label_mask(self, logits_weak: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = logits_weak.detach().float().softmax(-1)
        self.update_state(probs)
        thresholds = self.class_thresholds()
        confidence, pseudo = probs.max(-1)
        self.log_class_thresholds(thresholds)
        if self.is_logging_step():
            self.log("train/tau", self.tau, on_step=True, on_epoch=False)
        return (confidence >= thresholds[pseudo]).float(), pseudo

    def unlabeled_loss(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor,
                       index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        unsup, mask, pseudo = super().unlabeled_loss(logits_weak, logits_strong, index)
        fair = fairness_loss(logits_strong, mask, self.class_probs, self.label_hist)
        self.log_train("fair_loss", fair, logits_strong.shape[0])
        return unsup + self.hparams.lambda_f * fair, mask, pseudo
