"""Promise 3: Ctrl-C during ``convaudit clip`` leaves no output file and never touches the input.

No test hooks: the model carries a genuinely large tensor (~128 MB, beside a small conv), so
writing the clipped copy takes long enough to be caught in the act. The test watches the output
folder for convaudit's temporary file and sends SIGINT the moment it appears.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, cli_env

BIG_BYTES = 128 * 1024**2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def big_onnx(tmp_path_factory) -> Path:
    """A small conv net written by torch.onnx.export, plus a 128 MB tensor it carries along
    (think of an embedding table: not a conv, copied byte-for-byte by the writer)."""
    import onnx
    import torch
    from onnx import numpy_helper

    folder = tmp_path_factory.mktemp("big")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)
    ).eval()
    small = folder / "small.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), small, dynamo=False, input_names=["x"])
    model = onnx.load(small)
    table = np.random.default_rng(0).standard_normal(BIG_BYTES // 4, dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(table, "embedding_table"))
    path = folder / "big.onnx"
    onnx.save(model, path)
    small.unlink()
    return path


def _start_clip(model: Path, dest: Path) -> subprocess.Popen:
    def default_sigint() -> None:
        # A test runner started in the background ignores SIGINT, and a child inherits that;
        # a user's Ctrl-C reaches a process with the default disposition.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convaudit",
            "clip",
            str(model),
            "--bound",
            "0.5",
            "-o",
            str(dest),
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO,
        preexec_fn=default_sigint,
    )


def _temp_files(folder: Path, dest: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{dest.name}.")]


def _assert_nothing_left(folder: Path, dest: Path, model: Path, digest: str) -> None:
    assert not dest.exists(), "a partial output file was left behind"
    assert _temp_files(folder, dest) == [], "a temporary file was left behind"
    assert _sha256(model) == digest, "the input model was modified"


def test_sigint_mid_write_leaves_no_output_and_exits_130(big_onnx, tmp_path):
    digest = _sha256(big_onnx)
    dest = tmp_path / "clipped.onnx"
    proc = _start_clip(big_onnx, dest)
    deadline = time.monotonic() + 240
    try:
        while not _temp_files(tmp_path, dest):
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"clip ended (exit {proc.returncode}) before writing:\n{err[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("clip never started writing its output")
            time.sleep(0.002)
        assert not dest.exists(), "the output existed before its temporary file was renamed"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, f"exit {proc.returncode}\n{err[-3000:]}"
    assert "Traceback" not in err, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == ["error: interrupted"]
    _assert_nothing_left(tmp_path, dest, big_onnx, digest)


def test_sigint_at_any_moment_never_leaves_a_partial_file(big_onnx, tmp_path):
    """Whenever Ctrl-C lands: exit 130 and nothing written, or (too late) a complete file."""
    import onnx

    digest = _sha256(big_onnx)
    dest = tmp_path / "clipped.onnx"
    proc = _start_clip(big_onnx, dest)
    try:
        time.sleep(2.0)  # start-up or loading, depending on the machine
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err
    if proc.returncode == 130:
        _assert_nothing_left(tmp_path, dest, big_onnx, digest)
    else:
        assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{err[-3000:]}"
        onnx.checker.check_model(str(dest))  # complete, valid
        assert _temp_files(tmp_path, dest) == []
        assert _sha256(big_onnx) == digest


def test_refused_clip_leaves_no_output(big_onnx, tmp_path):
    """A clip refused with exit 2 (an impossible bound) writes nothing."""
    digest = _sha256(big_onnx)
    dest = tmp_path / "clipped.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "convaudit",
            "clip",
            str(big_onnx),
            "--bound",
            "-1",
            "-o",
            str(dest),
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=240,
    )
    assert proc.returncode == 2, proc.stderr
    _assert_nothing_left(tmp_path, dest, big_onnx, digest)
