"""An instant start: ``--version``, ``--help``, ``layers`` and the error paths import no heavy
framework they do not need. Each case runs the real console entry point in a fresh interpreter
and reads ``sys.modules`` at exit (the truth: what Python actually loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnxruntime", "h5py", "scipy", "matplotlib", "onnx", "keras", "numpy")

PROBE = """
import atexit, json, sys
def report():
    loaded = sorted(m for m in {heavy!r} if m in sys.modules)
    sys.__stderr__.write("\\nLOADED " + json.dumps(loaded) + "\\n")
atexit.register(report)
sys.argv = ["convaudit", *{args!r}]
from convaudit.cli import run
run()
"""


def loaded(*args: str) -> tuple[int, list[str], str]:
    """Exit code, the heavy modules loaded, and stdout of ``convaudit ARGS``."""
    code = PROBE.format(heavy=HEAVY, args=list(args))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100", "CONVAUDIT_HDF5_PROBE_SECONDS": "10"},
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED "))
    return proc.returncode, json.loads(line.removeprefix("LOADED ")), proc.stdout


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (("--version",), set()),
        (("--help",), set()),
        (("spectrum", "--help"), set()),
        (("check", "--help"), set()),
        (("clip", "--help"), set()),
        (("layers", "sample_models/resnet_tiny.onnx"), {"onnx", "numpy"}),
        (("layers", "sample_models/keras_cnn.h5"), {"h5py", "numpy"}),
        (("spectrum", "sample_models/no_such_model.onnx"), {"numpy"}),
        (("spectrum", "README.md"), {"numpy"}),  # not a model: every sniffer says no
        (("check", "sample_models/resnet_tiny.onnx", "--ignore", "CA999"), {"numpy"}),
    ],
)
def test_no_heavy_import(args, allowed):
    code, heavy, _ = loaded(*args)
    assert code in (0, 2), (args, code)
    assert set(heavy) <= allowed, (args, heavy)


def test_the_probe_sees_heavy_imports():
    """Control: a command that computes does load torch, so the probe can fail."""
    code, heavy, _ = loaded("spectrum", "sample_models/signal_1d.onnx", "--sigma", "bound")
    assert code == 0 and "torch" in heavy


def test_clip_tol_default_is_the_engines():
    from convaudit.cli.clip import DEFAULT_TOL
    from convaudit.engine.projection.kernel import DEFAULT_TOL as ENGINE_TOL

    assert DEFAULT_TOL == ENGINE_TOL
