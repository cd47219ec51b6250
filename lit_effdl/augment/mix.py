"""CutMix and Mixup on a batch: torchvision's ``v2.CutMix`` / ``v2.MixUp`` with a mix probability
and a switch between the two (timm's ``Mixup`` options, batch mode).

Each sample is mixed with its neighbour in the batch (``roll(1)``), one lambda per batch drawn from
Beta(alpha, alpha). CutMix's lambda is recomputed from the box area after clipping to the image, so
the soft targets match the pixels each image really shows. Targets come back as probability
vectors (rows sum to 1); ``losses.classification_loss`` takes them and composes label smoothing on
top (timm's ``Mixup`` would smooth a second time and needs an even batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from lit_effdl.errors import UserError


def one_hot(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices -> float one-hot rows; soft targets pass through."""
    if targets.ndim == 2:
        return targets.float()
    return F.one_hot(targets, num_classes).float()


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
        self.mixup = v2.MixUp(alpha=mixup_alpha) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha) if cutmix_alpha > 0 else None
        self.prob, self.switch_prob = prob, switch_prob

    @property
    def active(self) -> bool:
        return (self.mixup is not None or self.cutmix is not None) and self.prob > 0

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, num_classes: int):
        """(images, soft targets); unmixed batches get one-hot targets. Mixup turns uint8 images
        into float 0..1 (a blend is not an integer image); CutMix keeps the dtype."""
        soft = one_hot(targets, num_classes)
        if not self.active or float(torch.rand(())) >= self.prob:
            return images, soft
        use_cutmix = self.cutmix is not None and (self.mixup is None or float(torch.rand(())) < self.switch_prob)
        if images.shape[0] < 2:
            raise UserError(f"{'CutMix' if use_cutmix else 'Mixup'} needs at least 2 images in a batch, got a "
                            f"batch of {images.shape[0]}: raise batch_size or turn the mix off")
        if use_cutmix:
            return self.cutmix(images, soft)
        return self.mixup(images.float() / 255.0 if images.dtype == torch.uint8 else images, soft)
