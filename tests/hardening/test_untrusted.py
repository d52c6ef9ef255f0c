"""Promise 1: no code execution from a model file by default; zip bombs are refused.

Each payload is checked to be live first (loading it the unsafe way really writes the marker),
so these tests would fail if convaudit ever unpickled or deserialised code.
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path

import torch
from conftest import assert_clean_error, run_measured_cli, run_subprocess_cli
from make_corpus import write_zeros_member


class Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _conv_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 4, 3).state_dict()


def _payload_files(folder: Path, marker: Path) -> dict[str, Path]:
    state = {**_conv_state(), "extra": Payload(marker)}
    files = {
        "zip": folder / "payload.pt",
        "legacy": folder / "payload_legacy.pt",
        "ckpt": folder / "payload.ckpt",
        "raw-pickle": folder / "payload_raw.pth",
    }
    torch.save(state, files["zip"])
    torch.save(state, files["legacy"], _use_new_zipfile_serialization=False)
    torch.save({"state_dict": _conv_state(), "callbacks": Payload(marker)}, files["ckpt"])
    files["raw-pickle"].write_bytes(pickle.dumps(state, protocol=2))
    return files


def test_pickle_payloads_are_never_run(tmp_path, run_cli):
    """The default reader takes the weights beside a payload and never calls it."""
    marker = tmp_path / "PWNED"
    files = _payload_files(tmp_path, marker)
    # Positive control: the payload is live (the unsafe way runs it).
    torch.load(files["zip"], weights_only=False)
    assert marker.exists()
    marker.unlink()
    for name, path in files.items():
        for command in ("layers", "spectrum"):
            result = run_cli(command, path, "--format", "json")
            assert not marker.exists(), f"{name}: the pickle ran code"
            if name == "raw-pickle":  # a bare pickle is no torch checkpoint: refused
                assert_clean_error(result, f"{name} {command}")
                continue
            assert result.exit_code == 0, f"{name} {command}: {result.stderr}"
            assert "without running code" in result.stdout, result.stdout[:400]
    # And through a real process, as a user runs it.
    assert run_subprocess_cli("layers", files["zip"]).exit_code == 0
    assert not marker.exists()


def test_full_pickled_module_needs_trust_pickle_and_says_why(tmp_path, run_cli):
    torch.manual_seed(0)
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), path)
    result = run_cli("layers", path)
    assert_clean_error(result, "full module")
    hint = result.stderr.lower()
    assert "--trust-pickle" in hint, result.stderr
    assert any(w in hint for w in ("code", "execut", "run")), f"does not say why: {result.stderr}"
    # With the flag, the user has taken responsibility: it loads.
    trusted = run_cli("layers", path, "--trust-pickle", "--format", "json")
    assert trusted.exit_code == 0, trusted.stderr
    assert "0.weight" in trusted.stdout or '"0"' in trusted.stdout, trusted.stdout[:400]


def test_keras_lambda_code_is_never_run(corpus, run_cli):
    """A Lambda layer's code (marshalled Python in the Keras config) is never executed."""
    marker = Path(corpus["lambda"]["marker"])
    assert marker.exists()  # keras ran the Lambda while make_corpus built it: the payload is live
    marker.unlink()
    for name in corpus["lambda"]["files"]:
        for command in ("layers", "spectrum"):
            result = run_cli(command, name, "--format", "json")
            assert "Traceback" not in result.stderr, result.stderr
            assert result.exit_code in (0, 2), result.stderr
            assert not marker.exists(), f"{name}: convaudit ran the Lambda's code"
    assert "keras" not in sys.modules, "convaudit imported keras to read a file"


def test_keras_zip_bomb_is_refused_without_inflating(tmp_path, corpus):
    """A 2 GiB bomb in a 2 MiB .keras: refused from its declared sizes; memory stays small."""
    base = Path(corpus["bases"]["keras"])
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            if info.filename == "model.weights.h5":
                write_zeros_member(zout, info.filename, 2 * 1024**3)
            else:
                zout.writestr(info, zin.read(info.filename))
    assert bomb.stat().st_size < 4 * 1024**2
    result, peak_mib = run_measured_cli("spectrum", bomb)
    line = assert_clean_error(result, "keras bomb")
    assert any(w in line for w in ("zip bomb", "expands", "limit")), line
    # The refusing process never held the inflated 2 GiB (python + torch alone is ~0.5 GiB).
    assert peak_mib < 1500, f"peak RSS {peak_mib:.0f} MiB"


def test_hdf5_that_hangs_libhdf5_gives_one_error_line(tmp_path):
    """A legacy .h5 whose global heap header is damaged makes libhdf5 loop forever inside one
    C call (measured: h5py never returns). The metadata probe runs in a child process under a
    time limit, so the user gets one error line and exit 2 instead of a hung process."""
    import os
    import subprocess

    from conftest import REPO, cli_env

    data = bytearray((REPO / "sample_models" / "keras_cnn.h5").read_bytes())
    heap = data.index(b"GCOL")
    data[heap + 9] = 235  # the collection's size now claims ~50 KiB past its end
    bad = tmp_path / "heap.h5"
    bad.write_bytes(bytes(data))
    # Live payload: a plain h5py read of this file really does not return.
    read = "import h5py, sys\nf = h5py.File(sys.argv[1], 'r')\n[f.attrs[k] for k in f.attrs]"
    try:
        subprocess.run([sys.executable, "-c", read, str(bad)], timeout=5, capture_output=True)
        hangs = False
    except subprocess.TimeoutExpired:
        hangs = True
    assert hangs, "the damaged file no longer hangs libhdf5: rebuild this fixture"
    env = {**cli_env(), "CONVAUDIT_HDF5_PROBE_SECONDS": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "convaudit", "spectrum", str(bad)],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "did not finish reading" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert os.path.getsize(bad) == len(data)  # the input is untouched
