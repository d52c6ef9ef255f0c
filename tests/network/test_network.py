"""Graph bound propagation on hand-built graphs whose true Lipschitz constant is known.

Truth comes from analytic constructions (linear maps of known norm) or the dense operator
matrix (tests/oracle.py); the per-layer bounds fed in are the oracle's sigma_max, never the
engine's, so this tests the propagation alone. Lower bounds come from a real search on the
same map written in torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracle import dense_singular_values

from convaudit.ir import Graph, GraphNode
from convaudit.network.empirical import SearchOptions, search_autograd
from convaudit.network.graph import LayerBounds, network_bound

QUICK = SearchOptions(trials=2, iterations=10, ascent_steps=4)


def node(
    name: str, kind: str, inputs: tuple[str, ...], outputs: tuple[str, ...], **attrs
) -> GraphNode:
    return GraphNode(
        name=name, kind=kind, op=attrs.pop("op", kind), inputs=inputs, outputs=outputs, attrs=attrs
    )


def dirac(channels: int, k: int = 3, scale: float = 1.0) -> np.ndarray:
    w = np.zeros((channels, channels, k, k))
    for c in range(channels):
        w[c, c, k // 2, k // 2] = scale
    return w


def sigma(weight: np.ndarray, grid=(6, 6), pad: int = 1) -> float:
    return float(
        dense_singular_values(weight, grid, stride=1, dilation=1, padding=((pad, pad),) * 2)[0]
    )


def conv(x: torch.Tensor, w: np.ndarray, pad: int = 1) -> torch.Tensor:
    return F.conv2d(x, torch.as_tensor(w), padding=pad)


def test_residual_block_gets_one_plus_l_and_is_tight():
    a = 0.5
    w = dirac(2, scale=a)
    graph = Graph(
        inputs=("x",),
        outputs=("y",),
        nodes=(
            node("c1", "conv", ("x", "W"), ("t",), layer="c1"),
            node("add", "add", ("x", "t"), ("y",)),
        ),
    )
    result = network_bound(graph, {"c1": sigma(w)})
    truth = 1 + a  # y = (1 + a) x exactly
    lower = search_autograd(lambda x: x + conv(x, w), [(1, 2, 6, 6)], QUICK).value
    assert lower <= truth * (1 + 1e-12)
    assert result.value == pytest.approx(truth, rel=1e-12)
    assert lower == pytest.approx(truth, rel=1e-6)
    # the naive product is 0.5: below the truth, so NOT a bound with a skip connection
    assert result.naive_product == pytest.approx(a) and result.naive_product < lower


def test_chain_of_orthogonal_convs_equals_naive_product_and_bounds_truth():
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    q2, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    w1, w2, w3 = q1[:, :, None, None], 2.0 * q2[:, :, None, None], dirac(4, scale=0.75)
    nodes = (
        node("c1", "conv", ("x",), ("a",), layer="c1"),
        node("r1", "activation", ("a",), ("b",), fn="relu"),
        node("c2", "conv", ("b",), ("c",), layer="c2"),
        node("flat", "identity", ("c",), ("d",), op="Flatten"),
        node("c3", "conv", ("d",), ("y",), layer="c3"),
    )
    bounds = {"c1": sigma(w1, pad=0), "c2": sigma(w2, pad=0), "c3": sigma(w3)}
    result = network_bound(Graph(("x",), ("y",), nodes), bounds)
    assert result.value == pytest.approx(result.naive_product, rel=1e-15)
    assert result.value == pytest.approx(1.5, rel=1e-12)  # 1 * 2 * 0.75
    lower = search_autograd(
        lambda x: conv(conv(torch.relu(conv(x, w1, 0)), w2, 0), w3), [(1, 4, 5, 5)], QUICK
    ).value
    assert 0.5 * 1.5 < lower <= 1.5 * (1 + 1e-9)


def test_concat_uses_root_sum_of_squares_and_is_tight():
    graph = Graph(
        ("x",),
        ("y",),
        (
            node("m1", "mul_const", ("x", "c1"), ("a",), value=3.0),
            node("m2", "mul_const", ("x", "c2"), ("b",), value=-4.0),
            node("cat", "concat", ("a", "b"), ("y",)),
        ),
    )
    assert network_bound(graph, {}).value == pytest.approx(5.0)  # ||(3x, -4x)|| = 5||x||


def test_shared_subexpression_is_counted_soundly():
    graph = Graph(
        ("x",),
        ("y", "z"),
        (
            node("m", "mul_const", ("x",), ("t",), value=0.5),
            node("add", "add", ("t", "t"), ("y",)),  # y = x: L = 1 exactly
            node("sub", "sub", ("t", "t"), ("z",)),  # z = 0: the bound 1 still holds
        ),
    )
    result = network_bound(graph, {})
    assert result.per_output == {"y": pytest.approx(1.0), "z": pytest.approx(1.0)}
    assert result.value == pytest.approx(math.sqrt(2.0))


def test_op_without_rule_makes_the_bound_unbounded_and_names_it():
    graph = Graph(
        ("x",),
        ("y",),
        (
            node("c1", "conv", ("x",), ("a",), layer="c1"),
            node("weird", "unknown", ("a",), ("b",), op="Erfinv"),
            node("r", "activation", ("b",), ("y",), fn="relu"),
        ),
    )
    result = network_bound(graph, {"c1": 2.0})
    assert not result.bounded and result.value == math.inf
    assert [(b.op, b.node) for b in result.blocked_by] == [("Erfinv", "weird")]
    assert "op Erfinv at node weird" in result.describe()


def test_blockers_off_the_output_path_and_on_constants_do_not_block():
    graph = Graph(
        ("x",),
        ("y",),
        (
            node("shape", "unknown", ("x",), ("s",), op="Shape"),  # dead end
            node("const", "unknown", ("W0",), ("W",), op="Cast"),  # constant in, constant out
            node("c1", "conv", ("x", "W"), ("y",), layer="c1"),
        ),
    )
    result = network_bound(graph, {"c1": 3.0})
    assert result.value == pytest.approx(3.0) and result.blocked_by == ()


def test_missing_layer_bound_and_activation_without_rule_block():
    graph = Graph(
        ("x",),
        ("y",),
        (
            node("c1", "conv", ("x",), ("a",), layer="c1"),
            node("t", "activation", ("a",), ("y",), fn="thresholded_relu"),
        ),
    )
    result = network_bound(graph, {})
    reasons = [b.reason for b in result.blocked_by]
    # every op that blocks is named, not only the first one
    assert reasons == [
        "no certified sigma_max for layer c1",
        "no Lipschitz rule for activation thresholded_relu",
    ]
    assert not network_bound(graph, {"c1": 1.0}).bounded


def test_batchnorm_folded_uses_folded_bound_else_scale():
    bn_scale = np.array([0.5, -3.0])
    nodes = (
        node("c1", "conv", ("x",), ("a",), layer="c1"),
        node("bn", "batchnorm", ("a",), ("y",), folded_into="c1", scale=bn_scale),
    )
    graph = Graph(("x",), ("y",), nodes)
    folded = network_bound(graph, LayerBounds(plain={"c1": 2.0}, folded={"c1": 1.25}))
    assert folded.value == pytest.approx(1.25) and folded.naive_product == pytest.approx(1.25)
    unfolded = network_bound(graph, LayerBounds(plain={"c1": 2.0}))
    assert unfolded.value == pytest.approx(6.0)  # ||D A|| <= max|scale| * ||A||
    # a BN that is not adjacent to its conv never uses the folded bound
    apart = Graph(
        ("x",),
        ("y",),
        (
            nodes[0],
            node("r", "activation", ("a",), ("b",), fn="relu"),
            node("bn", "batchnorm", ("b",), ("y",), folded_into="c1", scale=bn_scale),
        ),
    )
    assert network_bound(
        apart, LayerBounds(plain={"c1": 2.0}, folded={"c1": 1.25})
    ).value == pytest.approx(6.0)


def test_batchnorm_folded_when_the_conv_also_feeds_another_branch():
    nodes = (
        node("c1", "conv", ("x",), ("a",), layer="c1"),
        node("bn", "batchnorm", ("a",), ("b",), folded_into="c1", scale=np.array([4.0])),
        node("add", "add", ("a", "b"), ("y",)),
    )
    result = network_bound(Graph(("x",), ("y",), nodes), LayerBounds({"c1": 2.0}, {"c1": 8.0}))
    assert result.value == pytest.approx(2.0 + 8.0)


def test_chain_assumed_is_labelled_as_an_assumption():
    graph = Graph(
        ("x",), ("y",), (node("c1", "conv", ("x",), ("y",), layer="c1"),), chain_assumed=True
    )
    result = network_bound(graph, {"c1": 1.5})
    assert result.assumed and "assuming" in result.describe()


def test_mul_of_two_variable_tensors_is_not_a_constant_scale():
    graph = Graph(("x",), ("y",), (node("m", "mul_const", ("x", "x"), ("y",), value=2.0),))
    assert not network_bound(graph, {}).bounded


def test_resize_nearest_norm_is_sqrt_of_replication():
    graph = Graph(
        ("x",),
        ("y",),
        (node("up", "resize_nearest", ("x", "roi", "scales"), ("y",), factor=(2, 3)),),
    )
    basis = torch.eye(12, dtype=torch.float64).reshape(12, 1, 3, 4)
    matrix = F.interpolate(basis, scale_factor=(2, 3), mode="nearest").reshape(12, -1).T
    truth = float(torch.linalg.matrix_norm(matrix, 2))
    assert network_bound(graph, {}).value == pytest.approx(truth, rel=1e-12)
    odd = Graph(("x",), ("y",), (node("up", "resize_nearest", ("x",), ("y",), factor=(1.5, 2)),))
    assert not network_bound(odd, {}).bounded


def test_two_inputs_are_one_concatenated_input():
    graph = Graph(
        ("x1", "x2"),
        ("y",),
        (
            node("m", "mul_const", ("x1",), ("a",), value=2.0),
            node("add", "add", ("a", "x2"), ("y",)),
        ),
    )
    # y = 2 x1 + x2 = [2 I, I] [x1; x2]: norm sqrt(5) <= 3 (bound sound, not tight)
    assert network_bound(graph, {}).value == pytest.approx(3.0)


def test_every_node_kind_but_unknown_has_a_rule():
    attrs = {
        "conv": {"layer": "L"},
        "dense": {"layer": "L"},
        "batchnorm": {"scale": np.array([0.5, 2.0])},
        "activation": {"fn": "relu"},
        "mul_const": {"value": -2.0},
        "maxpool": {"kernel": (2, 2), "stride": (2, 2)},
        "avgpool": {"kernel": (2, 2), "stride": (2, 2), "count_include_pad": True},
        "resize_nearest": {"factor": (2, 2)},
    }
    from convaudit.ir import NODE_KINDS

    for kind in NODE_KINDS:
        inputs = ("cond", "x") if kind == "select" else ("x",)  # cond: a constant
        graph = Graph(("x",), ("y",), (node("n", kind, inputs, ("y",), **attrs.get(kind, {})),))
        result = network_bound(graph, {"L": 1.0})
        assert result.bounded == (kind != "unknown"), kind


def test_select_takes_the_larger_branch_while_its_condition_is_fixed():
    """y = cond ? 3x : 0.5x. With cond fixed (a constant, or derived from an integer input held
    fixed) y is one of the two linear maps: L <= 3. A condition that moves with x makes y jump:
    no Lipschitz constant at all, so the bound must refuse."""
    branches = (
        node("then", "mul_const", ("x",), ("t",), value=3.0),
        node("else", "mul_const", ("x",), ("e",), value=0.5),
    )
    fixed = Graph(("x",), ("y",), (*branches, node("if", "select", ("c", "t", "e"), ("y",))))
    assert network_bound(fixed, {}).value == pytest.approx(3.0)
    from_parameter = Graph(
        ("x", "sr"),
        ("y",),
        (
            *branches,
            node("eq", "unknown", ("sr",), ("c",)),  # Equal(sr, 16000): no rule, but sr is fixed
            node("if", "select", ("c", "t", "e"), ("y",)),
        ),
        parameters=("sr",),
    )
    result = network_bound(from_parameter, {})
    assert result.value == pytest.approx(3.0)
    assert any("sr" in n and "fixed" in n for n in result.notes)
    moving = Graph(
        ("x",),
        ("y",),
        (
            *branches,
            node("gt", "unknown", ("x",), ("c",)),  # Greater(x, 0): the data picks the branch
            node("if", "select", ("c", "t", "e"), ("y",)),
        ),
    )
    result = network_bound(moving, {})
    assert not result.bounded
    assert "node gt" in result.describe() and "jump" in result.describe()
