"""The architectures of the bundled sample models (importable for ``--arch``).

Small on purpose (each file well under 1 MB) but covering every geometry convaudit handles:
stride 2, dilation, depthwise, grouped, transposed, 1x1, BatchNorm, circular padding, 1-D,
and a dense head.
"""

from __future__ import annotations

import torch
from torch import nn


class ResNetTiny(nn.Module):
    """A small residual CNN for 3x32x32 inputs: the demo model."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.block1_conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.block1_bn1 = nn.BatchNorm2d(16)
        self.block1_conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.block1_bn2 = nn.BatchNorm2d(16)
        self.down_conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.down_bn = nn.BatchNorm2d(32)
        self.down_shortcut = nn.Conv2d(16, 32, 1, stride=2, bias=False)
        self.dilated = nn.Conv2d(32, 32, 3, padding=2, dilation=2)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pointwise = nn.Conv2d(32, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.head = nn.Linear(16, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem_bn(self.stem(x)))
        y = self.relu(self.block1_bn1(self.block1_conv1(x)))
        x = self.relu(x + self.block1_bn2(self.block1_conv2(y)))
        x = self.relu(self.down_bn(self.down_conv(x)) + self.down_shortcut(x))
        x = self.relu(self.dilated(x))
        x = self.relu(self.pointwise(self.depthwise(x)))
        x = self.relu(self.grouped(x))
        x = self.relu(self.up(x))
        return self.head(x.mean(dim=(2, 3)))


class CircularNet(nn.Module):
    """Circular ('wrap-around') padding throughout: the case where the FFT spectrum is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular")
        self.conv2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, padding_mode="circular")
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1, padding_mode="circular")
        self.conv4 = nn.Conv2d(16, 16, 5, padding=2, groups=16, padding_mode="circular")
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        return self.relu(self.conv4(x))


class Signal1d(nn.Module):
    """A 1-D conv net on length-64 signals."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 8, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 8, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(8, 4, 3, dilation=3, padding=3)
        self.head = nn.Linear(4, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        return self.head(x.mean(dim=2))


def randomise_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial eval statistics, as a trained network has."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.25 + torch.rand(n, generator=generator))
