"""Promise 2 by fuzzing: mutate the bytes of valid model files; every loader either loads the
result or raises convaudit's own error. Nothing else may escape.

The loader is called directly (``detect`` + ``Loader.load``), *not* through ``load_model``,
whose last-resort net would turn any escape into an error and hide the hole.

Brief in CI (a few examples per format). The long run:

    CONVAUDIT_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/hardening/test_fuzz.py -q
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from convaudit.errors import ConvauditError
from convaudit.loaders import LoadOptions, detect
from convaudit.loaders.safety import UnexpectedLoaderError

EXAMPLES = int(os.environ.get("CONVAUDIT_FUZZ_EXAMPLES", "8"))
FLAVOURS = [
    "onnx",
    "pt",
    "pt-legacy",
    "ckpt",
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


def load_or_refuse(path: Path) -> None:
    """The property: a convaudit error (not the last-resort net's) or a successful load."""
    try:
        cls = detect(path)
        cls().load(path, LoadOptions())
    except UnexpectedLoaderError:
        raise
    except ConvauditError:
        pass


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mutated_files_load_or_raise_convaudit_errors(corpus, flavour):
    base = Path(corpus["bases"][flavour])
    original = base.read_bytes()
    suffix = ".weights.h5" if flavour == "weights.h5" else base.suffix

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=EXAMPLES <= 50,  # reproducible in CI; the long run explores
        # No shrinking: one mutated HDF5 file can take seconds to parse, and the failing
        # example is printed as it is (a handful of edits).
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(edits=st.lists(mutation, min_size=1, max_size=4))
    def check(edits):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"fuzzed{suffix}"
            path.write_bytes(mutate(original, edits))
            load_or_refuse(path)

    check()
