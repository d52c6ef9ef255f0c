"""The graphs the PyTorch loader builds are sound for the whole-network bound: with exact per-layer
sigma_max from dense operator matrices (tests/oracle.py), the bound propagated through the loaded
graph is never below the model's empirical Lipschitz lower bound (largest Jacobian norm found)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import dense_matrix
from test_pytorch_loader import load, make

from convaudit.ir import ConvLayer, DenseLayer, ModelIR
from convaudit.network.graph import LayerBounds, network_bound

SMALL = {"2d": (1, 3, 8, 8), "1d": (1, 2, 12), "3d": (1, 1, 4, 4, 4)}


def exact_sigma(layer: ConvLayer | DenseLayer, kernel: np.ndarray | None = None) -> float:
    if isinstance(layer, DenseLayer):
        return float(np.linalg.norm(layer.weight.astype(np.float64), 2))
    assert layer.input_size is not None
    pads = tuple(p[0] for p in layer.padding) if layer.transposed else layer.padding
    matrix = dense_matrix(
        layer.kernel if kernel is None else kernel, layer.input_size,
        stride=layer.stride, padding=pads, dilation=layer.dilation, groups=layer.groups,
        padding_mode=layer.padding_mode, transposed=layer.transposed,
        output_padding=layer.output_padding or 0,
    )  # fmt: skip
    return float(np.linalg.norm(matrix, 2))


def layer_bounds(ir: ModelIR) -> LayerBounds:
    plain = {layer.name: exact_sigma(layer) for layer in ir.layers}
    folded = {c.name: exact_sigma(c, c.folded_kernel()) for c in ir.convs if c.bn is not None}
    return LayerBounds(plain, folded)


def empirical_lipschitz(model: torch.nn.Module, shape: tuple[int, ...], tries: int = 3) -> float:
    """max sigma_max of the Jacobian at random points: a lower bound on the Lipschitz constant."""
    model = model.double()
    best = 0.0
    gen = torch.Generator().manual_seed(0)
    for _ in range(tries):
        x = torch.randn(shape, dtype=torch.float64, generator=gen)
        jac = torch.autograd.functional.jacobian(model, x).reshape(-1, x.numel())
        best = max(best, float(torch.linalg.matrix_norm(jac, 2)))
    return best


@pytest.mark.parametrize(
    ("kind", "writer"), [("2d", "export"), ("1d", "export"), ("3d", "export"), ("2d", "trace")]
)
def test_graph_bound_holds_on_the_real_model(tmp_path: Path, kind: str, writer: str) -> None:
    model, _, _ = make(kind)
    shape = SMALL[kind]  # dense operator matrices stay small
    if writer == "export":
        path = tmp_path / "m.pt2"
        torch.export.save(torch.export.export(model, (torch.zeros(shape),)), path)
        ir = load(path)
    else:
        path = tmp_path / "m.pt"
        torch.jit.save(torch.jit.trace(model, torch.zeros(shape)), path)
        ir = load(path, input_shapes={"": shape})
    bound = network_bound(ir.graph, layer_bounds(ir))
    assert not bound.blocked_by and not bound.assumed
    lower = empirical_lipschitz(model, shape)
    assert 0 < lower <= bound.value * (1 + 1e-9)


def test_residual_graph_is_not_the_naive_product(tmp_path: Path) -> None:
    """GeometryNet has y + dw(y): the graph bound must use (1 + sigma_dw), never sigma_dw alone."""
    model, shape = make("2d")[0], SMALL["2d"]
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), tmp_path / "m.pt2")
    ir = load(tmp_path / "m.pt2")
    bounds = layer_bounds(ir)
    with_residual = network_bound(ir.graph, bounds).value
    tiny = LayerBounds({**bounds.plain, "dw": 0.0}, bounds.folded)
    assert network_bound(ir.graph, tiny).value == pytest.approx(
        with_residual / (1 + bounds.plain["dw"]), rel=1e-9
    )
