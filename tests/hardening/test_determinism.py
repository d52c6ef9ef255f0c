"""Promise 5: the same files and options give byte-identical JSON, across processes.

Two fresh processes differ in everything that should not matter: hash seed, thread count,
working directory, and stdout versus ``-o FILE``. Their JSON must still be byte-for-byte equal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, cli_env

FLAVOURS = ("onnx", "keras", "safetensors")


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
    printed = _run(args, "1", "1", REPO)
    out = tmp_path / "report.json"
    _run([*args, "-o", str(out)], "12345", "2", tmp_path)
    assert out.read_bytes() == printed
    assert b"NaN" not in printed and b"Infinity" not in printed
