"""Shared test fixtures: paths to real third-party models, keras backend, dense oracle."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
# A damaged HDF5 file may hang libhdf5 in the metadata probe: fail fast in tests.
os.environ.setdefault("CONVAUDIT_HDF5_PROBE_SECONDS", "10")
sys.path.insert(0, str(Path(__file__).parent))  # for `import oracle`
# test_gate_formats (sample gate results) is shared with tests/cli, collected first
sys.path.insert(0, str(Path(__file__).parent / "gate"))

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_models"
SHARED_MODELS = REPO.parent / "shared" / "models"


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The real third-party checkpoints folder; tests using it skip cleanly when absent."""
    if not SHARED_MODELS.is_dir():
        pytest.skip("../shared/models is absent")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def onnx_light_models() -> list[Path]:
    import onnx

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    found = sorted(light.glob("light_*.onnx"))
    if not found:
        pytest.skip("onnx package ships no light_*.onnx models")
    return found


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_addoption(parser):
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite the golden files under tests/golden/ from the current output "
        "(also CONVAUDIT_REGEN_GOLDEN=1)",
    )
