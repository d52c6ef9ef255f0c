"""Promise 5: the same files and options give byte-identical JSON, across processes.

Two fresh processes differ in everything that should not matter: hash seed, thread count and
working directory. Their JSON must still be byte-for-byte the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, cli_env

FLAVOURS = ("onnx", "pt2", "keras", "h5", "safetensors")


def _run(args: list[str], seed: str, threads: str, cwd: Path) -> bytes:
    env = cli_env()
    env.update(PYTHONHASHSEED=seed, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    proc = subprocess.run(
        [sys.executable, "-m", "convaudit", *args],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc.stdout


def test_spectrum_json_is_byte_identical_across_processes(corpus, tmp_path):
    models = [corpus["bases"][f] for f in FLAVOURS]
    args = ["spectrum", *models, "--format", "json", "--full", "--device", "cpu"]
    first = _run(args, "1", "1", REPO)
    second = _run(args, "12345", "2", tmp_path)
    assert first == second
    assert b"NaN" not in first and b"Infinity" not in first


def test_layers_json_and_file_output_are_identical(corpus, tmp_path):
    models = [corpus["bases"][f] for f in FLAVOURS]
    out = tmp_path / "layers.json"
    printed = _run(["layers", *models, "--format", "json"], "7", "1", REPO)
    _run(["layers", *models, "--format", "json", "-o", str(out)], "99", "2", tmp_path)
    assert out.read_bytes() == printed
    assert os.stat(out).st_size > 0
