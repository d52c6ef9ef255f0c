"""The engine spreads only over the cores no other process is running on."""

from __future__ import annotations

import torch

from convaudit.engine import runtime as runtime_module
from convaudit.engine.results import EngineOptions
from convaudit.engine.runtime import engine_threads, intra_op_threads, runtime


def _loadavg(tmp_path, running: int):
    path = tmp_path / "loadavg"
    path.write_text(f"1.00 0.80 0.50 {running}/312 4242\n")
    return str(path)


def test_runnable_others_from_the_kernel_count(tmp_path):
    assert runtime_module._runnable_others(_loadavg(tmp_path, 1), samples=2) == 0  # ourselves
    assert runtime_module._runnable_others(_loadavg(tmp_path, 3), samples=2) == 2
    assert runtime_module._runnable_others(str(tmp_path / "absent"), samples=2) == 0


def test_threads_follow_the_free_cores(monkeypatch):
    monkeypatch.setattr(runtime_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime_module, "_runnable_others", lambda: 1)  # one busy neighbour
    assert runtime_module.free_cores() == 1
    assert runtime(EngineOptions()).threads == 1
    monkeypatch.setattr(runtime_module, "_runnable_others", lambda: 5)
    assert runtime_module.free_cores() == 1  # never below one
    monkeypatch.setattr(runtime_module, "_runnable_others", lambda: 0)
    assert runtime(EngineOptions()).threads == min(2, torch.get_num_threads())
    assert runtime(EngineOptions(threads=3)).threads == 3  # asked for explicitly


def test_intra_op_threads_are_restored():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    rt = runtime(EngineOptions(threads=1))
    with engine_threads(rt):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
