"""Networks for small (32x32) inputs, with timm's classifier interface.

Each exposes ``num_classes``, ``num_features``, ``forward_features``, ``forward_head``,
``get_classifier`` and ``reset_classifier`` like a timm model, so methods treat them alike.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn


class TimmLikeClassifier(nn.Module):
    """Shared head plumbing: global pooling, dropout and a linear classifier named ``fc``."""

    num_features: int

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3)) if x.ndim == 4 else x
        return x if pre_logits else self.fc(self.drop(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(TimmLikeClassifier):
    """Three conv-BN-ReLU-maxpool stages of width w, 2w, 4w: fast on a CPU.

    ``width=16`` has ~25k parameters (a KD student), 32 ~95k, 64 ~373k (a KD teacher).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 32, drop_rate: float = 0.0):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn_relu(in_chans, w), nn.MaxPool2d(2),
            _conv_bn_relu(w, 2 * w), nn.MaxPool2d(2),
            _conv_bn_relu(2 * w, 4 * w),
        )
        self._init_head(4 * w, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class WideBasicBlock(nn.Module):
    """Pre-activation wide residual block (BN momentum 0.001, leaky ReLU 0.1 as in FixMatch)."""

    def __init__(self, cin: int, cout: int, stride: int, drop_path: float, activate_before_residual: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.001)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.001)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.activate_before_residual = activate_before_residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        residual_input = pre if (self.shortcut is not None and self.activate_before_residual) else x
        out = self.conv2(self.act(self.bn2(self.conv1(pre))))
        shortcut = residual_input if self.shortcut is None else self.shortcut(pre if self.activate_before_residual else x)
        return shortcut + self.drop_path(out)


class WideResNet(TimmLikeClassifier):
    """Wide-ResNet-depth-widen for 32x32 inputs; WRN-28-2 is the semi-supervised standard (1.5M)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        depth: int = 28,
        widen: int = 2,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth={depth} is not valid: use 6n+4 (16, 22, 28, 40)")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        rates = torch.linspace(0, drop_path_rate, 3 * n).tolist()
        blocks, k = [], 0
        for stage in range(3):
            for i in range(n):
                cin = widths[stage] if i == 0 else widths[stage + 1]
                stride = 2 if (i == 0 and stage > 0) else 1
                blocks.append(WideBasicBlock(cin, widths[stage + 1], stride, rates[k], stage == 0 and i == 0))
                k += 1
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3], momentum=0.001)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self._init_head(widths[3], num_classes, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.blocks(self.stem(x))))


class BasicBlock(nn.Module):
    """ResNet basic block with an optional stochastic-depth drop of the residual branch."""

    def __init__(self, cin: int, cout: int, stride: int, drop_path: float):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.downsample = (
            None
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(shortcut + self.drop_path(out))


class CifarResNet(TimmLikeClassifier):
    """ResNet-18/34 layout with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        base_width: int = 64,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, base_width, 3, 1, 1, bias=False), nn.BatchNorm2d(base_width), nn.ReLU(inplace=True)
        )
        rates = torch.linspace(0, drop_path_rate, sum(layers)).tolist()
        stages, cin, k = [], base_width, 0
        for s, count in enumerate(layers):
            cout = base_width * 2**s
            blocks = []
            for i in range(count):
                blocks.append(BasicBlock(cin, cout, 2 if (i == 0 and s > 0) else 1, rates[k]))
                cin, k = cout, k + 1
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._init_head(cin, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
