"""CutMix and Mixup as batch-level ops (timm's ``data/mixup.py`` semantics, batch mode).

Each sample is mixed with its mirror in the batch (``flip(0)``), one lambda per batch drawn from
Beta(alpha, alpha). CutMix's lambda is **recomputed from the box area after clipping** to the image,
``lam = 1 - box_area / (H * W)``, so the soft targets match the pixels each image really shows.
Targets come back as probability vectors (rows sum to 1); ``losses.classification_loss`` takes them
and composes label smoothing on top. Hand-written rather than timm's ``Mixup`` because that one
needs an even batch and smooths labels itself (our loss does it once, for every method).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_effdl.errors import UserError


def one_hot(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices -> float one-hot rows; soft targets pass through."""
    if targets.ndim == 2:
        return targets.float()
    return F.one_hot(targets, num_classes).float()


def _check_batch(images: torch.Tensor, op: str) -> None:
    if images.shape[0] < 2:
        raise UserError(f"{op} needs at least 2 images in a batch, got a batch of {images.shape[0]}: "
                        "raise batch_size or turn the mix off")


def cutmix_box(h: int, w: int, lam: float) -> tuple[int, int, int, int]:
    """A box of area about (1 - lam) * H * W at a uniform centre, clipped: (top, bottom, left, right)."""
    ratio = (1.0 - lam) ** 0.5
    ch, cw = int(round(h * ratio)), int(round(w * ratio))
    cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
    top, bottom = max(0, cy - ch // 2), min(h, cy - ch // 2 + ch)
    left, right = max(0, cx - cw // 2), min(w, cx - cw // 2 + cw)
    return top, bottom, left, right


def cutmix(images: torch.Tensor, targets: torch.Tensor, lam: float, num_classes: int):
    """Paste a box of each image's partner into it; returns (images, soft targets, true lambda)."""
    _check_batch(images, "CutMix")
    h, w = images.shape[-2:]
    top, bottom, left, right = cutmix_box(h, w, lam)
    out = images.clone()
    out[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
    lam_true = 1.0 - (bottom - top) * (right - left) / float(h * w)
    soft = one_hot(targets, num_classes)
    return out, lam_true * soft + (1.0 - lam_true) * soft.flip(0), lam_true


def mixup(images: torch.Tensor, targets: torch.Tensor, lam: float, num_classes: int):
    """Blend each image with its partner (uint8 input gives float 0..1); returns (images, soft targets, lam)."""
    _check_batch(images, "Mixup")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    soft = one_hot(targets, num_classes)
    return lam * x + (1.0 - lam) * x.flip(0), lam * soft + (1.0 - lam) * soft.flip(0), lam


class Mix:
    """Mixup and / or CutMix on a batch, with a switch probability between the two.

    Args:
        mixup_alpha: Beta(alpha, alpha) for Mixup's lambda; 0 disables Mixup.
        cutmix_alpha: Beta(alpha, alpha) for CutMix's lambda; 0 disables CutMix.
        prob: probability that a batch is mixed at all.
        switch_prob: probability of CutMix rather than Mixup when both are on.
    """

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5):
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if value < 0:
                raise UserError(f"{name}={value} is not valid: use 0 (off) or a positive alpha")
        for name, value in (("mix_prob", prob), ("mix_switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name}={value} is not valid: use a probability in [0, 1]")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.last_lam = 1.0

    @property
    def active(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, num_classes: int):
        """(images, soft targets); unmixed batches get one-hot targets."""
        if not self.active or float(torch.rand(())) >= self.prob:
            self.last_lam = 1.0
            return images, one_hot(targets, num_classes)
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or float(torch.rand(())) < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        fn = cutmix if use_cutmix else mixup
        images, soft, self.last_lam = fn(images, targets, lam, num_classes)
        return images, soft
