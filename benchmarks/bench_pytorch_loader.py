"""Time the PyTorch loader and writer on a ResNet-50-sized model (25.6 M parameters).

torchvision is not a dependency, so the architecture is written out here (the torchvision
ResNet-50 layout: bottleneck blocks [3, 4, 6, 3], stride on the 3x3 conv). Run:

    .venv/bin/python benchmarks/bench_pytorch_loader.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.reader import PyTorchLoader


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        c_out = width * 4
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


def resnet50() -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]  # fmt: skip
    c_in = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(c_in, width, stride if i == 0 else 1))
            c_in = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    print(f"{label:<48} {time.perf_counter() - start:7.2f} s")
    return result


def main() -> None:
    sys.modules.setdefault("bench_pytorch_loader", sys.modules[__name__])
    model = resnet50().eval()
    shape = (1, 3, 224, 224)
    x = torch.zeros(shape)
    loader = PyTorchLoader()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        torch.save(model.state_dict(), d / "sd.pt")
        torch.export.save(torch.export.export(model, (x,)), d / "m.pt2")
        torch.jit.save(torch.jit.trace(model, x), d / "ts.pt")
        ir = timed(
            "state_dict, bare (assumed geometry)", lambda: loader.load(d / "sd.pt", LoadOptions())
        )
        arch = LoadOptions(arch="bench_pytorch_loader:resnet50", input_shapes={"": shape})
        ir = timed(
            "state_dict + --arch (hooks + torch.export)", lambda: loader.load(d / "sd.pt", arch)
        )
        timed(".pt2 (torch.export archive)", lambda: loader.load(d / "m.pt2", LoadOptions()))
        timed(
            "TorchScript (traced), no input shape", lambda: loader.load(d / "ts.pt", LoadOptions())
        )
        ts_shape = LoadOptions(input_shapes={"": shape})
        timed("TorchScript (traced), --input-shape", lambda: loader.load(d / "ts.pt", ts_shape))
        updates = {c.name: np.asarray(c.kernel) * 0.5 for c in ir.convs}
        timed(
            f"write {len(updates)} kernels back (state_dict)",
            lambda: loader.write_kernels(ir, d / "o.pt", updates),
        )
        print(f"{len(ir.convs)} convs, {len(ir.denses)} dense, graph nodes {len(ir.graph.nodes)}")


if __name__ == "__main__":
    main()
