"""Fully connected nets for small images (``mlp_1200_1200``, ``mlp_800_800``, ``mlp_30``...).

Hinton, Vinyals & Dean 2015 distil MNIST with these: ReLU hidden layers, optionally dropout on the
inputs and on every hidden layer and a max-norm constraint on each unit's incoming weights
(Hinton et al. 2012, "Improving neural networks by preventing co-adaptation of feature detectors").
"""

from __future__ import annotations

import re

import torch
from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.models.cifar import TimmLikeClassifier

MLP_NAME = re.compile(r"^mlp((?:_\d+)+)$")  # mlp_<width>[_<width>...]


def mlp_widths(name: str) -> tuple[int, ...] | None:
    """``'mlp_800_800'`` -> ``(800, 800)``; None for a name that is not an MLP's."""
    match = MLP_NAME.match(name)
    if match is None:
        return None
    widths = tuple(int(w) for w in match.group(1).strip("_").split("_"))
    if min(widths) < 1:
        raise UserError(f"backbone '{name}' has a hidden layer of width 0: use positive widths, e.g. mlp_800_800")
    return widths


class MLP(TimmLikeClassifier):
    """Flatten -> [dropout] -> (Linear -> ReLU -> dropout) per hidden width -> Linear classifier ``fc``.

    Args:
        widths: hidden layer widths.
        num_classes: classifier outputs.
        in_chans: input channels.
        image_size: side of the square input images (the first layer has ``in_chans * image_size**2`` inputs).
        drop_rate: dropout after every hidden layer (the last one is the classifier's input dropout).
        input_drop_rate: dropout on the input pixels.
        max_norm: bound on the L2 norm of each unit's incoming weights (every Linear layer), enforced
            after each optimizer step by :class:`lit_effdl.callbacks.MaxNormConstraint`; None: off.
    """

    def __init__(self, widths: tuple[int, ...], num_classes: int, in_chans: int = 1, image_size: int = 28,
                 drop_rate: float = 0.0, input_drop_rate: float = 0.0, max_norm: float | None = None):
        super().__init__()
        for name, rate in (("drop_rate", drop_rate), ("input_drop_rate", input_drop_rate)):
            if not 0.0 <= rate < 1.0:
                raise UserError(f"{name}={rate} is not valid for an MLP: use a value in [0, 1)")
        if max_norm is not None and max_norm <= 0:
            raise UserError(f"max_norm={max_norm} is not valid: use a positive bound (e.g. 3.5) or null (off)")
        self.max_norm = max_norm
        self.max_norm_enforced = False  # set by MaxNormConstraint while it guards a fit
        self.in_features = in_chans * image_size * image_size
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(input_drop_rate)]
        previous = self.in_features
        for i, width in enumerate(widths):
            layers += [nn.Linear(previous, width), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.Dropout(drop_rate))
            previous = width
        self.features = nn.Sequential(*layers)
        self._init_head(previous, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.max_norm and not self.max_norm_enforced:
            raise UserError(f"max_norm={self.max_norm} is set but nothing enforces it: add the callback "
                            "lit_effdl.callbacks.MaxNormConstraint to trainer.callbacks (or set max_norm: null)")
        if x.shape[1:].numel() != self.in_features:
            raise UserError(f"MLP expects {self.in_features} input values per image, got {tuple(x.shape[1:])}: "
                            "set backbone_kwargs.image_size to the data's image size")
        return self.features(x)

    @torch.no_grad()
    def apply_max_norm(self) -> None:
        """Scale down every unit's incoming weight vector whose L2 norm exceeds ``max_norm``."""
        if not self.max_norm:
            return
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.renorm(layer.weight, p=2, dim=0, maxnorm=self.max_norm))

