"""clip_model round trips on files written by real tools (torch.onnx.export, torch.save,
safetensors, torch.jit.save). Truth: the written tensors read back with the framework's own
reader, and dense operator matrices built by tests/oracle.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from clip_nets import GEOMETRY, INPUT_SHAPE, make_net
from oracle import dense_singular_values

from convaudit.clipping import ClipOptions, clip_model, parse_bound_rule
from convaudit.errors import ConfigError, OutputError
from convaudit.loaders import LoadOptions

BOUND = 1.0
ARCH = LoadOptions(input_shapes={"": INPUT_SHAPE}, arch="clip_nets:make_net")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def conv_sigma(module: str, weight: np.ndarray) -> float:
    geometry, size = GEOMETRY[module]
    return float(dense_singular_values(np.asarray(weight, np.float64), size, **geometry)[0])


def assert_state_dict_clipped(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]
) -> None:
    """Every conv/dense weight within the bound (dense oracle); every other tensor bit-identical."""
    assert before.keys() == after.keys()
    for key, old in before.items():
        new = after[key]
        assert new.dtype == old.dtype and new.shape == old.shape, key
        module = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and module in GEOMETRY:
            assert conv_sigma(module, new.numpy()) <= BOUND * (1 + 1e-9), key
            assert not torch.equal(new, old), key
        elif key == "head.weight":
            assert float(torch.linalg.matrix_norm(new.double(), ord=2)) <= BOUND * (1 + 1e-9)
        else:
            assert torch.equal(new, old), key


def clip(src: Path, dest: Path, load_options: LoadOptions = ARCH, **options: object):
    digest = sha(src)
    report = clip_model(
        src,
        BOUND,
        output=dest,
        options=ClipOptions(include_dense=True, **options),  # type: ignore[arg-type]
        load_options=load_options,
    )
    assert report.ok and report.written and report.checked
    assert all(row.rechecked is not None and row.rechecked <= BOUND for row in report.layers)
    assert sha(src) == digest
    return report


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_state_dict_round_trip(tmp_path: Path, legacy: bool) -> None:
    src, dest = tmp_path / "net.pt", tmp_path / "clipped.pt"
    state = make_net().state_dict()
    torch.save(state, src, _use_new_zipfile_serialization=not legacy)
    report = clip(src, dest)
    assert len(report.layers) == 5 and not any(r.unchanged for r in report.layers)
    assert_state_dict_clipped(state, torch.load(dest, weights_only=True))
    # The clipped weights load into the architecture and run.
    net = make_net()
    net.load_state_dict(torch.load(dest, weights_only=True))
    assert net(torch.zeros(INPUT_SHAPE)).shape == (1, 5)


def test_training_dict_keeps_optimizer_and_epoch(tmp_path: Path) -> None:
    src, dest = tmp_path / "ckpt.pt", tmp_path / "clipped.pt"
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(INPUT_SHAPE)).sum().backward()
    opt.step()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save({"model": state, "optimizer": opt.state_dict(), "epoch": 7}, src)
    clip(src, dest)
    loaded = torch.load(dest, weights_only=True)
    assert loaded["epoch"] == 7
    original = torch.load(src, weights_only=True)
    for idx, buf in original["optimizer"]["state"].items():
        assert torch.equal(
            loaded["optimizer"]["state"][idx]["momentum_buffer"], buf["momentum_buffer"]
        )
    assert_state_dict_clipped(state, loaded["model"])


def test_safetensors_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src, dest = tmp_path / "net.safetensors", tmp_path / "clipped.safetensors"
    state = {k: v.contiguous() for k, v in make_net().state_dict().items()}
    save_file(state, src, metadata={"who": "test"})
    clip(src, dest)
    assert_state_dict_clipped(state, load_file(dest))


def test_torchscript_round_trip(tmp_path: Path) -> None:
    src, dest = tmp_path / "net.ts.pt", tmp_path / "clipped.ts.pt"
    torch.jit.save(torch.jit.script(make_net()), src)
    clip(src, dest, LoadOptions(input_shapes={"": INPUT_SHAPE}))
    before, after = torch.jit.load(src), torch.jit.load(dest)
    assert_state_dict_clipped(before.state_dict(), after.state_dict())
    assert after(torch.zeros(INPUT_SHAPE)).shape == (1, 5)


def test_onnx_round_trip_runs_in_onnxruntime(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    src, dest = tmp_path / "net.onnx", tmp_path / "clipped.onnx"
    torch.onnx.export(make_net(), torch.zeros(INPUT_SHAPE), src, dynamo=False, input_names=["x"])
    report = clip(src, dest, LoadOptions())
    before = {t.name: t for t in onnx.load(src).graph.initializer}
    after = {t.name: t for t in onnx.load(dest).graph.initializer}
    assert before.keys() == after.keys()
    changed = {
        name
        for name in before
        if before[name].SerializeToString() != after[name].SerializeToString()
    }
    assert len(changed) == len(report.layers) == 5
    nodes = onnx.load(dest).graph.node
    for module in GEOMETRY:
        (node,) = [n for n in nodes if n.op_type.startswith("Conv") and f"/{module}/" in n.name]
        weight = numpy_helper.to_array(after[node.input[1]])
        assert weight.dtype == np.float32 and node.input[1] in changed
        assert conv_sigma(module, weight) <= BOUND * (1 + 1e-9), module
    (gemm,) = [n for n in nodes if n.op_type == "Gemm"]
    head = numpy_helper.to_array(after[gemm.input[1]]).astype(np.float64)
    assert np.linalg.norm(head, 2) <= BOUND * (1 + 1e-9)
    session = ort.InferenceSession(str(dest))
    out = session.run(
        None, {"x": np.random.default_rng(0).standard_normal(INPUT_SHAPE).astype(np.float32)}
    )
    assert out[0].shape == (1, 5)


def test_dry_run_writes_nothing_and_bad_requests_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "net.pt"
    torch.save(make_net().state_dict(), src)
    report = clip_model(src, BOUND, dry_run=True, load_options=ARCH)
    assert not report.written and report.output is None and list(tmp_path.iterdir()) == [src]
    with pytest.raises(OutputError, match="input"):
        clip_model(src, BOUND, output=src, force=True, load_options=ARCH)
    (tmp_path / "exists.pt").write_bytes(b"keep")
    with pytest.raises(OutputError, match="refusing"):
        clip_model(src, BOUND, output=tmp_path / "exists.pt", load_options=ARCH)
    assert (tmp_path / "exists.pt").read_bytes() == b"keep"
    with pytest.raises(ConfigError, match="no output"):
        clip_model(src, BOUND, load_options=ARCH)
    with pytest.raises(ConfigError, match="no layer"):
        clip_model(
            src,
            BOUND,
            dry_run=True,
            options=ClipOptions(layers="nothing-matches"),
            load_options=ARCH,
        )


def test_bare_state_dict_is_certified_for_every_input_size(tmp_path: Path) -> None:
    """Without --arch a state_dict has no geometry or input sizes (the loader assumes stride 1,
    no padding); the size-independent bound S still covers the real layers, whatever their
    zero padding, stride and input size."""
    src, dest = tmp_path / "net.pt", tmp_path / "out.pt"
    torch.save(make_net().state_dict(), src)
    report = clip_model(src, BOUND, output=dest, options=ClipOptions(layers="stem|down"))
    assert report.ok and all("every input size" in r.operator for r in report.layers)
    after = torch.load(dest, weights_only=True)
    for module in ("stem", "down"):
        assert conv_sigma(module, after[f"{module}.weight"].numpy()) <= BOUND * (1 + 1e-9)


def test_in_place_replaces_the_input(tmp_path: Path) -> None:
    src = tmp_path / "net.pt"
    state = make_net().state_dict()
    torch.save(state, src)
    report = clip_model(
        src, BOUND, in_place=True, load_options=ARCH, options=ClipOptions(include_dense=True)
    )
    assert report.ok and report.written
    assert_state_dict_clipped(state, torch.load(src, weights_only=True))
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]


def test_per_layer_bounds_and_selection(tmp_path: Path) -> None:
    src, dest = tmp_path / "net.pt", tmp_path / "out.pt"
    state = make_net().state_dict()
    torch.save(state, src)
    rules = (parse_bound_rule("^d=0.5"), parse_bound_rule("head=2"))
    report = clip_model(
        src,
        None,
        output=dest,
        load_options=ARCH,
        options=ClipOptions(bound_for=rules, layers="down|dw|head"),
    )
    bounds = {r.name: r.bound for r in report.layers}
    assert bounds == {"down": 0.5, "dw": 0.5, "head": 2.0}
    after = torch.load(dest, weights_only=True)
    assert conv_sigma("down", after["down.weight"].numpy()) <= 0.5 * (1 + 1e-9)
    assert torch.equal(after["stem.weight"], state["stem.weight"])
    assert float(torch.linalg.matrix_norm(after["head.weight"].double(), ord=2)) <= 2 * (1 + 1e-9)
    with pytest.raises(ConfigError):
        parse_bound_rule("no-value")
    with pytest.raises(ConfigError):
        parse_bound_rule("x=-1")


def test_fold_bn_bounds_conv_and_batchnorm_together(tmp_path: Path) -> None:
    src, dest = tmp_path / "net.pt", tmp_path / "out.pt"
    net = make_net()
    state = net.state_dict()
    torch.save(state, src)
    clip(src, dest, fold_bn=True, layers="stem")
    after = torch.load(dest, weights_only=True)
    bn = net.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
    folded = after["stem.weight"].double() * scale[:, None, None, None]
    assert conv_sigma("stem", folded.numpy()) <= BOUND * (1 + 1e-9)
    for key in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        assert torch.equal(after[key], state[key])
