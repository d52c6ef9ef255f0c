"""Small torch models exported by the real torch.onnx exporters, plus what torch says about them.

Each export records, in execution order, every conv/linear module and the input shape it saw
(forward hooks), so tests compare the loader against the model that wrote the file.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from convaudit.ir import ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader


class Net2d(nn.Module):
    """Stride, dilation, depthwise, groups + rectangular kernel, 'same', transposed, BN, Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, dilation=2, padding=2, groups=8, bias=False)
        self.grouped = nn.Conv2d(8, 12, (3, 5), stride=(1, 2), padding=(1, 2), groups=2)
        self.same = nn.Conv2d(12, 12, 3, padding="same")
        self.up = nn.ConvTranspose2d(12, 6, 3, stride=2, padding=1, output_padding=1)
        self.up_grouped = nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2)
        self.head = nn.Linear(4, 10)
        with torch.no_grad():  # non-trivial BN statistics
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.depthwise(x))
        x = self.grouped(x)
        x = x + self.same(x)
        x = torch.relu(self.up(x))
        x = self.up_grouped(x)
        return self.head(x.mean(dim=(2, 3)))


class Net1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(2, 4, 5, stride=2, padding=2)
        self.b = nn.Conv1d(4, 4, 3, dilation=3, padding=3, groups=4)
        self.c = nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.tanh(self.b(self.a(x))))


class Net3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(1, 4, 3, stride=(1, 2, 2), padding=1)
        self.b = nn.Conv3d(4, 4, (1, 3, 3), dilation=(1, 2, 2), padding=(0, 2, 2), groups=2)
        self.c = nn.ConvTranspose3d(4, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(self.a(x))))


@dataclass
class Exported:
    path: Path
    model: nn.Module
    input_shape: tuple[int, ...]
    # (module name, module, input shape) for every conv / linear, in execution order
    calls: list[tuple[str, nn.Module, tuple[int, ...]]]


_LAYER_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def record_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYER_TYPES):
            hooks.append(
                module.register_forward_pre_hook(
                    lambda m, args, name=name: calls.append((name, m, tuple(args[0].shape)))
                )
            )
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return calls


def export(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    *,
    dynamo: bool,
    dynamic: bool = False,
    dtype: torch.dtype = torch.float32,
    **kwargs: object,
) -> Exported:
    """Export with the chosen real exporter; ``dynamic`` makes batch and spatial dims dynamic."""
    torch.manual_seed(0)
    model = model.eval()
    x = torch.randn(*input_shape, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = None
            if dynamic:
                dims = {0: torch.export.Dim("n", min=1, max=8)} | {
                    i: torch.export.Dim(f"s{i}", min=4, max=512) for i in range(2, len(input_shape))
                }
                shapes = {"x": dims}
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=True,
                input_names=["x"],
                dynamic_shapes=shapes,
                **kwargs,
            )  # type: ignore[arg-type]
        else:
            axes = (
                {"x": {i: f"d{i}" for i in [0, *range(2, len(input_shape))]}} if dynamic else None
            )
            torch.onnx.export(
                model, (x,), str(path), dynamo=False, input_names=["x"], dynamic_axes=axes, **kwargs
            )  # type: ignore[arg-type]
    return Exported(path, model, input_shape, record_calls(model, x))


_CACHE_DIR = Path(tempfile.mkdtemp(prefix="convaudit-onnx-tests-"))
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)


@functools.cache
def _export_once(
    net: type[nn.Module], shape: tuple[int, ...], dynamo: bool, options: tuple
) -> Exported:
    folder = Path(tempfile.mkdtemp(dir=_CACHE_DIR))
    return export(net(), shape, folder / "net.onnx", dynamo=dynamo, **dict(options))


def shared_export(
    net: type[nn.Module], shape: tuple[int, ...], *, dynamo: bool, **options: object
) -> Exported:
    """One export per (model, shape, exporter, options) per test session; tests that only read
    the file share it (exports cost seconds). Each caller gets its own Exported record."""
    found = _export_once(net, shape, dynamo, tuple(sorted(options.items())))
    return dataclasses.replace(found, calls=list(found.calls))


@functools.cache
def load_once(path: Path) -> ModelIR:
    """A model loaded once per session (the light_*.onnx models are large to fold)."""
    return OnnxLoader().load(path, LoadOptions())
