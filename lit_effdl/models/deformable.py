"""Deformable convolution: swap the 3x3 convolutions of a ResNet's last stage for
``torchvision.ops.DeformConv2d`` with learned offsets.

The offsets come from a small 3x3 convolution initialised to zero, so right after the swap every
sampling point sits on the regular grid and the network computes the same function as before;
training then learns where to look. The kernel weights are the original convolution's.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from lit_effdl.errors import UserError


class DeformableConv2d(nn.Module):
    """A ``DeformConv2d`` plus its offset predictor (zero-initialised: starts as the plain conv)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        kh, kw = conv.kernel_size
        self.offset = nn.Conv2d(
            conv.in_channels, 2 * kh * kw, kernel_size=conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, bias=True,
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # DeformConv2d has no reduced-precision kernel on every device: run it in the input's dtype
        offset = self.offset(x)
        return self.conv(x, offset.to(x.dtype))


def last_stage(model: nn.Module) -> nn.Module:
    """The last residual stage of a ResNet-like model (``layer4`` in timm / torchvision / cifar nets)."""
    stage = getattr(model, "layer4", None)
    if not isinstance(stage, nn.Module):
        raise UserError(
            f"deformable=true needs a ResNet-like backbone with a 'layer4' stage "
            f"(resnet18, seresnet18, cifar_resnet18...); {type(model).__name__} has none"
        )
    return stage


def swap_deformable(model: nn.Module, stage: nn.Module | None = None) -> int:
    """Replace every 3x3 ``nn.Conv2d`` in ``stage`` (default: the last stage) in place; returns how many."""
    stage = last_stage(model) if stage is None else stage
    targets = [
        (name, module) for name, module in stage.named_modules()
        if type(module) is nn.Conv2d and module.kernel_size == (3, 3)
    ]
    for name, conv in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = stage.get_submodule(parent_name) if parent_name else stage
        setattr(parent, attr, DeformableConv2d(conv))
    if not targets:
        raise UserError(f"no 3x3 convolution found in the last stage of {type(model).__name__}")
    return len(targets)
