"""convaudit.torch.project_ on live modules; truth: the dense matrix of each module itself."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from convaudit.errors import ConfigError
from convaudit.torch import project_


def module_sigma(conv: nn.Module, input_size: tuple[int, ...]) -> float:
    """σ_max of the module's linear part, from its dense matrix on ``input_size`` (float64)."""
    probe = copy.deepcopy(conv).double().cpu()
    if probe.bias is not None:
        probe.bias.data.zero_()
    c_in = probe.in_channels
    n = c_in * int(np.prod(input_size))
    with torch.no_grad():
        out = probe(torch.eye(n, dtype=torch.float64).reshape(n, c_in, *input_size))
    return float(torch.linalg.matrix_norm(out.reshape(n, -1), ord=2))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.down = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=3)
        self.dw = nn.Conv2d(6, 6, (3, 5), padding="same", groups=6, bias=False)
        self.ring = nn.Conv2d(6, 4, 3, padding=1, padding_mode="circular")
        self.up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        self.point = nn.Conv2d(3, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.ring(self.dw(self.down(x)))
        return self.point(self.up(x))


# The input size each conv sees for a 1x2x8x8 input.
SIZES = {
    "stem": (8, 8),
    "down": (8, 8),
    "dw": (4, 4),
    "ring": (4, 4),
    "up": (4, 4),
    "point": (8, 8),
}


def test_project_bounds_every_conv_of_a_live_module() -> None:
    torch.manual_seed(0)
    net = Net().train()
    for p in net.parameters():
        p.data.mul_(3)
    stats_before = net.bn.running_mean.clone(), net.bn.num_batches_tracked.clone()
    weights = {name: m.weight for name, m in net.named_modules() if name in SIZES}
    report = project_(net, 0.8, input_shape=(1, 2, 8, 8))
    assert [r.name for r in report] == list(SIZES)
    for r in report:
        conv = getattr(net, r.name)
        assert module_sigma(conv, SIZES[r.name]) <= 0.8 * (1 + 1e-9), r.name
        assert not r.unchanged and r.sigma_before > 0.8 >= r.sigma_after
        assert conv.weight is weights[r.name] and conv.weight.dtype == torch.float32
    # The probing forward pass ran in eval mode and left BatchNorm and the mode alone.
    assert net.training and net.bn.training
    assert torch.equal(net.bn.running_mean, stats_before[0])
    assert torch.equal(net.bn.num_batches_tracked, stats_before[1])
    assert "zero-padded" in report[0].statement and "circular-padded" in report[3].statement


def test_layers_inside_the_ball_are_left_bit_identical() -> None:
    torch.manual_seed(1)
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = project_(net, 100.0, input_shape=(1, 2, 8, 8))
    assert all(r.unchanged and r.iterations == 0 for r in report)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_1d_and_3d_modules_and_layer_selection() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv1d(3, 4, 5, padding=2, dilation=1), nn.ReLU(), nn.Conv1d(4, 4, 3, stride=2)
    )
    for p in net.parameters():
        p.data.mul_(4)
    untouched = net[2].weight.clone()
    project_(net, 0.5, input_shape=(1, 3, 16), layers=r"^0$")
    assert module_sigma(net[0], (16,)) <= 0.5 * (1 + 1e-9)
    assert torch.equal(net[2].weight, untouched)
    net3 = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1))
    net3[0].weight.data.mul_(5)
    project_(net3, 1.0, input_shape=(1, 2, 4, 4, 4), method="rescale")
    assert module_sigma(net3[0], (4, 4, 4)) <= 1.0 * (1 + 1e-9)


def test_without_input_shape_every_input_size_is_covered() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    net[0].weight.data.mul_(5)
    (report,) = project_(net, 1.0)
    assert "every input size" in report.statement
    for n in (3, 7, 12):
        assert module_sigma(net[0], (n, n)) <= 1.0 + 1e-9


def test_unused_conv_or_bad_input_shape_is_a_clear_error() -> None:

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.spare = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(ConfigError, match="spare was not called"):
        project_(Unused(), 1.0, input_shape=(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="forward pass"):
        project_(Unused(), 1.0, input_shape=(1, 3, 8, 8))


def test_one_by_one_convs_need_no_input_shape() -> None:
    net = nn.Sequential(nn.Conv2d(4, 8, 1))
    net[0].weight.data.mul_(10)
    project_(net, 1.0)
    assert module_sigma(net[0], (3, 3)) <= 1.0 + 1e-9


@pytest.mark.gpu
def test_projects_on_the_module_device() -> None:
    torch.manual_seed(3)
    net = Net().cuda()
    for p in net.parameters():
        p.data.mul_(3)
    project_(net, 0.8, input_shape=(1, 2, 8, 8))
    for name, size in SIZES.items():
        conv = getattr(net, name)
        assert conv.weight.is_cuda
        assert module_sigma(conv, size) <= 0.8 * (1 + 1e-9), name
