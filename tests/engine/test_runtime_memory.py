"""The default memory budget respects a container's cgroup limit."""

from __future__ import annotations

from convaudit.engine.runtime import _cgroup_memory_limit


def test_cgroup_v2_limit_is_read(tmp_path):
    f = tmp_path / "memory.max"
    f.write_text("2147483648\n")
    assert _cgroup_memory_limit((str(f),)) == 2 * 1024**3


def test_unlimited_cgroup_means_no_limit(tmp_path):
    v2 = tmp_path / "memory.max"
    v2.write_text("max\n")
    v1 = tmp_path / "memory.limit_in_bytes"
    v1.write_text(str(2**63 - 4096))
    assert _cgroup_memory_limit((str(v2), str(v1))) is None


def test_missing_files_mean_no_limit(tmp_path):
    assert _cgroup_memory_limit((str(tmp_path / "absent"),)) is None
