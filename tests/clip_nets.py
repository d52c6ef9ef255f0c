"""A small network for the clipping round trips (importable as ``--arch clip_nets:make_net``)."""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 3, 8, 8)

# name in the module -> (geometry for tests/oracle.py, input spatial size)
GEOMETRY = {
    "stem": (dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1), (8, 8)),
    "down": (dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=2), (8, 8)),
    "dw": (dict(stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(2, 2), groups=8), (4, 4)),
    "up": (
        dict(
            stride=(2, 2),
            padding=(1, 1),
            dilation=(1, 1),
            groups=1,
            transposed=True,
            output_padding=(1, 1),
        ),
        (4, 4),
    ),
}


class ClipNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.head = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.dw(self.down(x)))
        return self.head(torch.relu(self.up(x)).flatten(1))


def make_net() -> ClipNet:
    """Deterministic weights, scaled up so that every layer is well outside a unit ball."""
    torch.manual_seed(0)
    net = ClipNet()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3)
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net.eval()
