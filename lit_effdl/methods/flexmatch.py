"""FlexMatch (Zhang et al. 2021): FixMatch with curriculum pseudo-labeling, a threshold per class
scaled by how well the model has learnt that class so far."""

from __future__ import annotations

import torch

from lit_effdl.errors import UserError
from lit_effdl.losses import hard_pseudo_labels
from lit_effdl.methods.fixmatch import FixMatch

UNUSED = -1  # memory value of an unlabeled image never predicted above the threshold


class FlexMatch(FixMatch):
    """FixMatch's step with per-class thresholds ``tau_c = threshold * M(beta_c)``.

    A memory holds, per unlabeled image of the pool, the latest class it was predicted above
    ``threshold`` (``-1``: not yet). The learning status of class ``c`` is
    ``sigma_c = #{images remembered as c}``, normalised
    ``beta_c = sigma_c / max(max_c' sigma_c', N_unused)`` with ``threshold_warmup`` (else
    ``/ max_c' sigma_c'``), mapped ``M(x) = x / (2 - x)``. A weak-view prediction is a pseudo-label
    when its confidence ``>= tau_argmax``; then the memory takes this batch's confident predictions.

    Checked against USB (``semilearn/algorithms/flexmatch/flexmatch.py`` and ``utils.py``,
    ``FlexMatchThresholdingHook``): same warm-up normalisation, convex mapping, hard labels and
    order (the mask uses the status from before this batch). Differences, deliberate: the status
    is recomputed from the memory every step, also when all images share one value (USB then keeps
    the previous status); under DDP every rank gathers all ranks' predictions before writing the
    memory (USB writes each rank's own), so all ranks hold one memory; an image written twice in one
    step (DistributedSampler padding) keeps the larger class index, the same on every rank.

    The memory (``selected_label``, a buffer sized to the unlabeled pool at fit start) is saved in
    checkpoints and restored on resume. Logged as FixMatch, plus ``train/threshold/<class>``.

    Args:
        threshold: the upper threshold (``tau`` of the paper, 0.95), reached by the best-learnt class, in (0, 1].
        threshold_warmup: normalise the status by the unused count too while it is the largest.
        **kwargs: everything ``FixMatch`` takes (``lambda_u``, ``ema_decay``, backbone, optimizer...).

    Example::

        lit-effdl fit --config configs/digits/flexmatch.yaml --test_after_fit true
    """

    def __init__(self, threshold: float = 0.95, threshold_warmup: bool = True, **kwargs):
        super().__init__(threshold=threshold, **kwargs)
        self.register_buffer("selected_label", torch.full((0,), UNUSED, dtype=torch.long))
        self.register_load_state_dict_pre_hook(_size_memory_as_checkpoint)

    def setup(self, stage: str) -> None:
        """Size the memory to the unlabeled pool (before Lightning restores a checkpoint into it)."""
        if stage == "fit":
            pool = self.unlabeled_pool_size()
            if self.selected_label.numel() != pool:
                self.selected_label = torch.full((pool,), UNUSED, dtype=torch.long, device=self.selected_label.device)

    def unlabeled_pool_size(self) -> int:
        dm = self.trainer.datamodule
        size = len(dm.unlabeled_inference_dataset()) if hasattr(dm, "unlabeled_inference_dataset") else 0
        if size == 0:
            raise UserError("FlexMatch needs an unlabeled pool (a LabelBudgetDataModule with unlabeled images): "
                            "set data.num_labels_per_class (or num_labels) below the class sizes, "
                            "or give an unlabeled folder")
        return size

    @torch.no_grad()
    def class_thresholds(self) -> torch.Tensor:
        """``threshold * M(beta_c)`` for every class, from the memory."""
        counts = torch.bincount(self.selected_label + 1, minlength=self.hparams.num_classes + 1)
        unused, learnt = counts[0], counts[1:]
        norm = torch.maximum(learnt.max(), unused) if self.hparams.threshold_warmup else learnt.max()
        status = learnt.float() / norm.clamp(min=1).float()
        return self.hparams.threshold * status / (2.0 - status)

    @torch.no_grad()
    def remember(self, confidence: torch.Tensor, pseudo: torch.Tensor, index: torch.Tensor) -> None:
        """The memory takes every rank's predictions with confidence >= ``threshold`` (no host sync)."""
        confidence, pseudo, index = (self.gather_rows(t) for t in (confidence, pseudo, index))
        latest = torch.where(confidence >= self.hparams.threshold, pseudo, self.selected_label[index])
        self.selected_label.scatter_reduce_(0, index, latest, reduce="amax", include_self=False)

    def pseudo_label_mask(self, logits_weak: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        confidence, pseudo = hard_pseudo_labels(logits_weak)
        thresholds = self.class_thresholds()
        mask = (confidence >= thresholds[pseudo]).float()
        self.remember(confidence, pseudo, index)
        self.log_class_thresholds(thresholds)
        return mask, pseudo


def _size_memory_as_checkpoint(module: FlexMatch, state_dict: dict, prefix: str, *args) -> None:
    """A checkpoint's memory has the pool's size: take its shape before the values are copied in."""
    saved = state_dict.get(prefix + "selected_label")
    if saved is not None and saved.shape != module.selected_label.shape:
        module.selected_label = torch.full_like(saved, UNUSED, device=module.selected_label.device)
