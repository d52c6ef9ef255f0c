"""A large layer's full spectrum on the cluster: its frequency chunks become tasks of their own
(run_chunk tasks in the scheduler's task stream), and the merged spectrum is bit-identical to
the single-process one computed with one thread, as every task runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from convaudit.analysis import AnalysisOptions, analyse_models
from convaudit.ir import ConvLayer, ModelIR

pytestmark = pytest.mark.slow


def _layer(padding_mode: str) -> ConvLayer:
    kernel = np.random.default_rng(3).standard_normal((24, 16, 3, 3))
    return ConvLayer(
        f"conv_{padding_mode}", kernel, (1, 1), (1, 1), ((1, 1), (1, 1)),
        padding_mode=padding_mode, input_size=(24, 24),
    )  # fmt: skip


def test_a_large_spectrum_fans_out_by_chunks_and_merges_bit_identically(loopback):
    from distributed import get_task_stream

    from convaudit.distributed import ClusterSpec, open_cluster

    ir = ModelIR("generated", "generated", (_layer("circular"), _layer("zeros")))
    options = AnalysisOptions(full=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (expected,) = analyse_models([ir], options)
    finally:
        torch.set_num_threads(previous)
    with open_cluster(ClusterSpec(scheduler=loopback.address)) as executor:
        executor.settings = dataclasses.replace(executor.settings, fan_out_s=0.0)  # always
        with get_task_stream(executor.client) as stream:
            (report,) = analyse_models([ir], options, executor=executor)
    keys = [str(task["key"]) for task in stream.data]
    assert sum(key.startswith("run_chunk") for key in keys) >= 2 * 3  # >= 4 chunks a layer
    assert sum(key.startswith("convaudit-") for key in keys) == 2
    for got, want in zip(report.layers, expected.layers, strict=True):
        assert np.array_equal(got.spectrum.singular_values, want.spectrum.singular_values)
        assert got.spectrum.sigma_max == want.spectrum.sigma_max
        assert got.spectrum.singular_values.size == 24 * 24 * 16
