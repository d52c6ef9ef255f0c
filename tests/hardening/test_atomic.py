"""Promise 3 at the unit level: convaudit.atomic leaves the old file or the whole new one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from convaudit.atomic import atomic_open, atomic_path, check_destination
from convaudit.errors import OutputError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path, exc):
    dest = tmp_path / "report.json"
    dest.write_text("old")
    with pytest.raises(type(exc)), atomic_open(dest) as f:
        f.write("new, but only half of it")
        raise exc
    assert dest.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_failure_before_first_write_creates_nothing(tmp_path):
    dest = tmp_path / "clipped.onnx"
    with pytest.raises(KeyboardInterrupt), atomic_path(dest):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_and_keeps_permissions(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    dest.chmod(0o640)
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.exists()  # same folder: the rename is atomic
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_new_file_gets_umask_mode_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "r.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == 0o644


def test_writer_replacing_the_temp_path_is_fine(tmp_path):
    """Writers such as onnx.save or torch.save write the path themselves (unlink + create)."""
    dest = tmp_path / "m.pt"
    with atomic_path(dest) as tmp:
        tmp.unlink()
        tmp.write_bytes(b"abc")
    assert dest.read_bytes() == b"abc"


def test_check_destination(tmp_path):
    existing = tmp_path / "a.json"
    existing.write_text("{}")
    with pytest.raises(OutputError, match="refusing to overwrite"):
        check_destination(existing, overwrite=False)
    assert check_destination(existing, overwrite=True) == existing
    with pytest.raises(OutputError, match="folder"):
        check_destination(tmp_path, overwrite=True)
    with pytest.raises(OutputError, match="does not exist"):
        check_destination(tmp_path / "nope" / "a.json", overwrite=False)
    # The input model is protected even with --force (only --in-place may replace it).
    with pytest.raises(OutputError, match="input"):
        check_destination(existing, overwrite=True, protect=[existing])
    link = tmp_path / "alias.json"
    link.symlink_to(existing)
    with pytest.raises(OutputError, match="input"):
        check_destination(link, overwrite=True, protect=[existing])


def test_temp_file_that_cannot_be_created_is_an_output_error(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(OutputError, match="cannot write"), atomic_path(not_a_folder / "x.json"):
        pass


def test_rename_failure_is_an_output_error_and_cleans_up(tmp_path):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "keep").write_text("x")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OutputError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"data")
    assert _leftovers(tmp_path) == []
    assert (dest / "keep").read_text() == "x"


def test_atomic_open_refuses_append(tmp_path):
    with pytest.raises(ValueError), atomic_open(tmp_path / "x", "a"):
        pass
