"""A small model zoo for the distributed benchmark: the bundled sample models plus generated ones.

The generated models are small CNNs exported by ``torch.onnx.export`` (the real exporter), with
seeded random weights and varied widths (8-48 channels), input sizes (16-40), paddings (zeros
and circular), strides, dilation and groups, so that their layers cost from milliseconds to a
few seconds each, like the convs of a registry of small production models.

    python benchmarks/zoo.py OUT_DIR [--generated 15]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_models"

#: sample model -> the --input-shape it needs ("" : none)
SAMPLE_MODELS = {
    "resnet_tiny.onnx": "",
    "signal_1d.onnx": "",
    "keras_cnn.keras": "",
    "keras_cnn.h5": "",
    "resnet_tiny.pt2": "",
    "resnet_tiny.pt": "",
    "circular_net.ts.pt": "1,3,32,32",
}


def _net(index: int) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(1000 + index)
    width = (8, 16, 24, 32, 48)[index % 5]
    size = (16, 24, 32, 40)[index % 4]
    pad = ("zeros", "circular")[index % 2]
    nn = torch.nn
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1, padding_mode=pad), nn.ReLU()]
    for block in range(2 + index % 3):
        layers += [
            nn.Conv2d(width, width, 3, padding=1, padding_mode=pad),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2, groups=1 + block % 2),
            nn.ReLU(),
        ]
    layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()]
    layers += [nn.Conv2d(2 * width, 2 * width, 1), nn.ReLU()]
    return nn.Sequential(*layers).eval(), size


def build_zoo(out: Path, generated: int = 15) -> list[tuple[Path, str]]:
    """(model file, --input-shape or "") for the samples and ``generated`` new ONNX files."""
    out.mkdir(parents=True, exist_ok=True)
    models = [(SAMPLES / name, shape) for name, shape in SAMPLE_MODELS.items()]
    for i in range(generated):
        path = out / f"zoo_{i:02d}.onnx"
        if not path.exists():
            net, size = _net(i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                    input_names=["x"],
                )  # fmt: skip
        models.append((path, ""))
    return models


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--generated", type=int, default=15)
    args = parser.parse_args()
    for path, _ in build_zoo(args.out, args.generated):
        print(path)
