"""Promise 2 by fuzzing: mutate the bytes of valid model files; every loader either loads the
result or raises convaudit's own error. Nothing else may escape, and nothing may crash the
interpreter or hang it.

The files are loaded by a long-lived worker process (fuzz_worker.py) that calls each loader
directly (``detect`` + ``Loader.load``, bypassing the last-resort net in ``load_model``); a
worker that dies or stops answering is reported as a crash or a hang, and restarted.

Brief in CI (a few reproducible examples per format). The long run:

    CONVAUDIT_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/hardening/test_fuzz.py -q
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import HERE, cli_env
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("CONVAUDIT_FUZZ_EXAMPLES", "8"))
FLAVOURS = [
    "onnx",
    "pt",
    "pt-legacy",
    "ckpt",
    "ckpt-restricted",
    "safetensors",
    "torchscript",
    "pt2",
    "keras",
    "h5",
    "weights.h5",
]

# One mutation: (kind, position as a fraction of the file, a byte value, a length)
mutation = st.tuples(
    st.sampled_from(["set", "flip", "zero-run", "ff-run", "truncate", "delete", "insert", "dup"]),
    st.floats(0, 1, allow_nan=False),
    st.integers(0, 255),
    st.integers(1, 64),
)


def mutate(data: bytes, edits: list[tuple[str, float, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, byte, length in edits:
        if not buf:
            break
        i = min(int(where * len(buf)), len(buf) - 1)
        if kind == "set":
            buf[i] = byte
        elif kind == "flip":
            buf[i] ^= 1 << (byte % 8)
        elif kind == "zero-run":
            buf[i : i + length] = bytes(len(buf[i : i + length]))
        elif kind == "ff-run":
            buf[i : i + length] = b"\xff" * len(buf[i : i + length])
        elif kind == "truncate":
            del buf[i:]
        elif kind == "delete":
            del buf[i : i + length]
        elif kind == "insert":
            buf[i:i] = bytes([byte]) * length
        elif kind == "dup":
            buf[i:i] = buf[i : i + length]
    return bytes(buf)


#: seconds one file may take to load before the worker counts as hung
HANG_SECONDS = float(os.environ.get("CONVAUDIT_FUZZ_HANG_SECONDS", "60"))


class Worker:
    """A child process that loads files on request (see fuzz_worker.py)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(HERE / "fuzz_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )

    def load(self, path: Path) -> dict[str, str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], HANG_SECONDS)
        if not ready:
            self.stop()
            return {"outcome": "hung", "message": f"no answer within {HANG_SECONDS:.0f} s"}
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            self.proc = None
            return {"outcome": "crashed", "message": f"the interpreter died (exit {code})"}
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mutated_files_load_or_raise_convaudit_errors(corpus, worker, flavour, tmp_path):
    base = Path(corpus["bases"][flavour])
    original = base.read_bytes()
    suffix = ".weights.h5" if flavour == "weights.h5" else base.suffix

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=EXAMPLES <= 50,  # reproducible in CI; the long run explores
        # No shrinking: a mutated HDF5 file can take seconds to parse (or hang), and the
        # failing example is printed as it is (a handful of edits).
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(edits=st.lists(mutation, min_size=1, max_size=4))
    def check(edits):
        with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
            path = Path(folder) / f"fuzzed{suffix}"
            path.write_bytes(mutate(original, edits))
            result = worker.load(path)
        assert result["outcome"] in ("loaded", "refused"), json.dumps(result, indent=1)

    check()
