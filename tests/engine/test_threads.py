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
    def others(running, own=1):
        path = _loadavg(tmp_path, running)
        return runtime_module._runnable_others(path, samples=2, own=lambda: own)

    assert others(1) == 0  # ourselves
    assert others(3) == 2
    # our own spinning OpenMP workers are no neighbours
    assert others(3, own=3) == 0 and others(4, own=2) == 2
    assert runtime_module._runnable_others(str(tmp_path / "absent"), samples=2) == 0


def test_own_running_threads_from_the_task_states(tmp_path):
    """Threads in state R are counted, sleeping ones not; a name may hold spaces and ')'."""
    for tid, line in {
        "101": "101 (python) R 1 101 101 0 -1",
        "102": "102 (omp worker) S 1 101 101 0 -1",
        "103": "103 (odd) name)) R 1 101 101 0 -1",
        "104": "104 (pt_main) D 1 101 101 0 -1",
    }.items():
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "stat").write_text(line + "\n", encoding="ascii")
    (tmp_path / "105").mkdir()  # a thread that ended while we read: no stat
    assert runtime_module._own_running(str(tmp_path)) == 2
    assert runtime_module._own_running(str(tmp_path / "absent")) == 1


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


def test_small_layers_run_on_one_thread(monkeypatch):
    """A layer whose operator products are cheap (under ONE_THREAD_BELOW multiply-adds) runs on
    one thread whatever the free cores; a large one, or one of unknown size, on all of them;
    an explicit ``threads`` is kept."""
    import math
    from dataclasses import replace

    import numpy as np

    from convaudit.engine import layer as layer_module
    from convaudit.ir import ConvLayer, DenseLayer

    def conv(channels, n, stride=1, size=True):
        return ConvLayer(
            name="c", kernel=np.zeros((channels, channels, 3, 3), np.float32),
            stride=(stride, stride), dilation=(1, 1), padding=((1, 1), (1, 1)),
            input_size=(n, n) if size else None,
        )  # fmt: skip

    # analytic: 2·c_out·c_in·9 per output pixel
    assert layer_module.product_work(conv(16, 32)) == 2 * 16 * 16 * 9 * 32 * 32
    assert layer_module.product_work(conv(16, 32, stride=2)) == 2 * 16 * 16 * 9 * 16 * 16
    assert layer_module.product_work(conv(16, 32, size=False)) == math.inf
    grouped = ConvLayer(
        name="g", kernel=np.zeros((16, 1, 3, 3), np.float32), stride=(1, 1), dilation=(1, 1),
        padding=((1, 1), (1, 1)), groups=16, input_size=(32, 32),
    )  # fmt: skip
    assert layer_module.product_work(grouped) == math.inf  # its groups batched: threads pay
    dense = DenseLayer("d", np.zeros((4, 1280), np.float32))
    assert layer_module.product_work(dense) == 2 * 4 * 1280

    seen = []
    # two free cores, whatever this machine has
    monkeypatch.setattr(
        layer_module,
        "runtime",
        lambda options: replace(runtime(options), threads=options.threads or 2),
    )
    monkeypatch.setattr(
        layer_module, "_analyse_layer", lambda layer, *a: seen.append(a[-1].threads)
    )
    layer_module.analyse_layer(conv(16, 32))  # 4.7e6 multiply-adds a product
    layer_module.analyse_layer(conv(64, 256))  # 4.8e9
    layer_module.analyse_layer(conv(16, 32, size=False))
    layer_module.analyse_layer(conv(16, 32), options=EngineOptions(threads=2))
    assert seen == [1, 2, 2, 2]
