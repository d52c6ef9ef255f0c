"""KerasLoader on files written by real Keras 3 (torch backend) and on the real fer_emotion.hdf5."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from keras_fixture_models import KerasCase, build_keras_files
from keras_oracle import (
    check_against_keras,
    ir_ops,
    keras_conv_layers,
    load,
    run_ir_conv,
    to_channels_last,
)

from convaudit.errors import InputShapeError
from convaudit.ir import NODE_KINDS, ConvLayer, DenseLayer

pytestmark = pytest.mark.keras
CONFIG_FLAVOURS = ("keras", "h5")


@pytest.fixture(scope="session")
def cases(tmp_path_factory) -> dict[str, KerasCase]:
    pytest.importorskip("keras")
    return build_keras_files(tmp_path_factory.mktemp("keras_models"))


@pytest.mark.parametrize("flavour", CONFIG_FLAVOURS)
@pytest.mark.parametrize("case", ["f2d", "seq1d", "seq3d", "cf"])
def test_ir_reproduces_every_keras_conv(cases, case, flavour):
    ir = load(cases[case].files[flavour])
    n = check_against_keras(ir, cases[case].model, np.random.default_rng(0))
    assert n == len(keras_conv_layers(cases[case].model))


@pytest.mark.parametrize("flavour", CONFIG_FLAVOURS)
def test_functional_geometry_and_input_sizes(cases, flavour):
    model = cases["f2d"].model
    ir = load(cases["f2d"].files[flavour])
    assert ir.format == "keras" and dict(ir.input_shapes) == {"img": (None, 17, 16, 3)}
    for name, kl in keras_conv_layers(model):
        for op in ir_ops(ir, name):
            if op.kind != "separable-pointwise":
                assert op.stride == tuple(kl.strides) and op.dilation == tuple(kl.dilation_rate)
        assert ir_ops(ir, name)[0].input_size == tuple(kl.input.shape[1:-1])
    by = {c.name: c for c in ir.convs}
    assert (
        by["dw"].groups == 8
        and by["dw"].kernel.shape == (16, 1, 3, 3)
        and by["dw"].kind == "depthwise"
    )
    assert [by["sep/depthwise"].kind, by["sep/pointwise"].kind] == [
        "separable-depthwise",
        "separable-pointwise",
    ]
    assert by["sep/pointwise"].input_size == by["sep/depthwise"].output_size() == (5, 7)
    assert (
        by["grouped"].groups == 2 and by["ct_same"].transposed and by["ct_same"].in_channels == 16
    )
    assert by["c_relu"].padding == ((1, 1), (0, 1))  # TF "same": odd total pad goes after
    assert by["c_dil"].bias is None and by["c_relu"].bias is not None
    head = ir.layer("head")
    assert isinstance(head, DenseLayer)
    np.testing.assert_array_equal(head.weight, model.get_layer("head").kernel.numpy().T)


@pytest.mark.parametrize("flavour", CONFIG_FLAVOURS)
def test_kernels_are_the_keras_weights_in_canonical_layout(cases, flavour):
    model = cases["f2d"].model
    by = {c.name: c for c in load(cases["f2d"].files[flavour]).convs}
    w = {lay.name: [v.numpy() for v in lay.weights] for lay in model.layers}
    np.testing.assert_array_equal(by["c_relu"].kernel, w["c_relu"][0].transpose(3, 2, 0, 1))
    dw = w["dw"][0]  # (kh, kw, c, m): output channel c*m + j
    for c in range(dw.shape[2]):
        for j in range(dw.shape[3]):
            np.testing.assert_array_equal(by["dw"].kernel[c * 2 + j, 0], dw[:, :, c, j])
    ct = w["ct_same"][0]  # (kh, kw, c_out, c_in) -> (c_in, c_out, kh, kw)
    np.testing.assert_array_equal(by["ct_same"].kernel, ct.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(by["sep/pointwise"].kernel[:, :, 0, 0], w["sep"][1][0, 0].T)


@pytest.mark.parametrize("flavour", CONFIG_FLAVOURS)
def test_batchnorm_attached_only_where_it_directly_follows(cases, flavour):
    model = cases["f2d"].model
    by = {c.name: c for c in load(cases["f2d"].files[flavour]).convs}
    assert by["c_relu"].bn is None  # an activation sits between (none follows it anyway)
    bn = by["c_dil"].bn
    assert bn is not None and bn.eps == pytest.approx(0.01)
    gamma, beta, mean, var = (v.numpy() for v in model.get_layer("bn_dil").weights)
    for got, want in ((bn.gamma, gamma), (bn.beta, beta), (bn.mean, mean), (bn.var, var)):
        np.testing.assert_array_equal(got, want)
    dw_bn = by["dw"].bn  # scale=False: no gamma stored
    assert dw_bn is not None and np.all(dw_bn.gamma == 1) and dw_bn.eps == pytest.approx(1e-3)
    np.testing.assert_array_equal(dw_bn.beta, model.get_layer("bn_dw").weights[0].numpy())
    cf = {c.name: c for c in load(cases["cf"].files[flavour]).convs}
    assert cf["cf_conv"].bn is not None  # axis=1 with channels_first


def test_channels_first_geometry(cases):
    by = {c.name: c for c in load(cases["cf"].files["keras"]).convs}
    assert by["cf_conv"].input_size == (9, 10) and by["cf_conv"].in_channels == 3
    assert by["cf_dw"].input_size == (5, 5) and by["cf_dw"].groups == 4


def test_sequential_1d_causal_and_transposed(cases):
    by = {c.name: c for c in load(cases["seq1d"].files["keras"]).convs}
    assert by["causal"].padding == ((8, 0),) and by["causal"].dilation == (2,)
    assert by["strided"].input_size == (20,) and by["strided"].stride == (2,)
    assert by["ct1"].input_size == (5,) and by["ct1"].output_size() == (11,)
    assert by["ct1_same"].output_size() == (22,)
    ir = load(cases["seq1d"].files["keras"])
    assert ir.layer("dense").weight.shape == (2, 44)  # type: ignore[union-attr]


def test_transposed_same_is_the_adjoint_of_keras_forward_same_conv(cases):
    """Odd kernel, stride 2, "same": the read operator is the exact adjoint of Keras' forward
    "same" conv on the output grid (inner-product identity), whichever file flavour."""
    import keras

    ir = load(cases["seq1d"].files["keras"])
    ct = ir.layer("ct1_same")
    assert isinstance(ct, ConvLayer) and ct.padding == ((0, 1),) and ct.output_padding == (0,)
    kernel = cases["seq1d"].model.get_layer("ct1_same").kernel.numpy()  # (k, c_out, c_in)
    forward = keras.layers.Conv1D(
        kernel.shape[2], kernel.shape[0], strides=2, padding="same", use_bias=False
    )
    forward.build((None, 22, kernel.shape[1]))
    forward.set_weights([kernel])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, ct.in_channels, 11))  # the transposed conv input, channels first
    y = rng.standard_normal((1, 22, ct.out_channels)).astype(np.float32)  # channels last
    bias_free = ConvLayer(**{**ct.__dict__, "bias": None})
    lhs = np.sum(to_channels_last(run_ir_conv(bias_free, x)) * y)
    rhs = np.sum(to_channels_last(x) * keras.ops.convert_to_numpy(forward(y)))
    assert lhs == pytest.approx(rhs, rel=1e-5)
    h5 = {c.name: c for c in load(cases["seq1d"].files["h5"]).convs}
    assert h5["ct1_same"].padding == ct.padding and h5["ct1_same"].output_padding == (0,)


def test_graph_of_functional_model(cases):
    graph = load(cases["f2d"].files["keras"]).graph
    assert graph is not None and graph.inputs == ("img",) and graph.outputs == ("head",)
    nodes = {n.name: n for n in graph.nodes}
    produced = set(graph.inputs)
    for node in graph.nodes:
        assert node.kind in NODE_KINDS
        assert set(node.inputs) <= produced, node.name
        produced.update(node.outputs)
    assert nodes["c_relu"].outputs == ("c_relu/linear",)
    assert nodes["c_relu/activation"].attrs == {"fn": "relu"}
    assert nodes["bn_dil"].attrs["folded_into"] == "c_dil" and "scale" in nodes["bn_dil"].attrs
    assert nodes["sep/depthwise"].kind == nodes["sep/pointwise"].kind == "conv"
    assert nodes["sep/pointwise"].inputs == ("sep/depthwise",)
    assert nodes["sep/activation"].attrs["fn"] == "tanh"
    assert nodes["add"].kind == "add" and set(nodes["add"].inputs) == {"bn_dw", "sep"}
    assert nodes["pool"].kind == "maxpool" and nodes["pool"].attrs["kernel"] == (2, 2)
    assert nodes["cat"].kind == "concat" and nodes["crop"].kind == nodes["zpad"].kind == "identity"
    assert nodes["up"].kind == "resize_nearest" and nodes["up"].attrs["factor"] == (2, 2)
    assert nodes["gap"].kind == "global_avgpool" and nodes["gap"].attrs["input_size"] == (12, 16)
    assert nodes["head"].kind == "dense" and nodes["head/activation"].attrs["fn"] == "softmax"


def test_nested_model_with_lambda_and_dynamic_input(cases):
    files = cases["nested"].files
    ir = load(files["keras"])
    assert [c.input_size for c in ir.convs] == [None, None]
    assert any("--input-shape" in n for n in ir.notes)
    sized = load(files["keras"], dyn=(1, 12, 10, 2))
    by = {c.name: c for c in sized.convs}
    assert by["inner/ic"].input_size == (12, 10) and by["inner/ic"].bn is not None
    assert by["after_lambda"].input_size is None  # never guessed through a Lambda
    nodes = {n.name: n for n in sized.graph.nodes}  # type: ignore[union-attr]
    assert nodes["double"].kind == "unknown"
    assert nodes["inner/ic"].inputs == ("dyn",)
    for flavour in ("h5", "weights", "legacy_weights"):
        assert {c.name for c in load(files[flavour]).convs} == {"inner/ic", "after_lambda"}
    assert load(files["h5"], dyn=(1, 12, 10, 2)).convs[0].input_size == (12, 10)


def test_input_size_fills_a_dynamic_image_input(cases):
    """--input-size on a Keras file: batch 1, the channels (last) the config declares."""
    from convaudit.loaders.interface import LoadOptions
    from convaudit.loaders.keras.reader import KerasLoader

    for flavour in CONFIG_FLAVOURS:
        path = cases["nested"].files[flavour]
        ir = KerasLoader().load(path, LoadOptions(input_size=(12, 10)))
        assert ir.input_shapes == {"dyn": (1, 12, 10, 2)}
        assert {c.name: c.input_size for c in ir.convs}["inner/ic"] == (12, 10)
        with pytest.raises(InputShapeError, match="rank 3"):
            KerasLoader().load(path, LoadOptions(input_size=(12,)))


def test_input_shape_errors(cases):
    path = cases["f2d"].files["keras"]
    with pytest.raises(InputShapeError, match="contradicts"):
        load(path, img=(1, 32, 32, 3))
    with pytest.raises(InputShapeError, match="img"):
        load(path, nope=(1, 17, 16, 3))
    assert load(path, **{"": (4, 17, 16, 3)}).convs[0].input_size == (17, 16)


@pytest.mark.parametrize("flavour", ["weights", "legacy_weights"])
def test_weights_only_files_read_kernels_and_say_geometry_is_unknown(cases, flavour):
    ir = load(cases["f2d"].files[flavour])
    ref = {c.name: c for c in load(cases["f2d"].files["keras"]).convs}
    assert ir.graph is None and any("weights only" in n for n in ir.notes)
    assert {c.name for c in ir.convs} == set(ref)
    for conv in ir.convs:
        assert conv.stride == (1, 1) and conv.input_size is None
        assert any("stride 1" in n for n in conv.notes)
        if flavour == "legacy_weights":  # no class stored: guessed from names, and labelled so
            assert any("guessed" in n for n in conv.notes)
            if conv.name == "dw":  # Keras 3 calls a depthwise kernel "kernel": read as a conv
                assert conv.kernel.shape == (2, 8, 3, 3) and conv.groups == 1
                continue
        np.testing.assert_array_equal(conv.kernel, ref[conv.name].kernel)


def test_real_fer_emotion_model(shared_models):
    path = shared_models / "fer_emotion.hdf5"
    ir = load(path)
    kinds = [c.kind for c in ir.convs]
    assert len(ir.convs) == 23 and not ir.denses and not ir.skipped
    assert kinds.count("conv") == 7
    assert kinds.count("separable-depthwise") == kinds.count("separable-pointwise") == 8
    assert sum(c.bn is not None for c in ir.convs) == 14
    assert all(c.bn is None or c.bn.eps == pytest.approx(1e-3) for c in ir.convs)
    by = {c.name: c for c in ir.convs}
    assert [c.bias is not None for c in ir.convs].count(True) == 1 and by[
        "conv2d_7"
    ].bias is not None
    assert by["conv2d_1"].input_size == (64, 64) and by["conv2d_1"].kernel.shape == (8, 1, 3, 3)
    assert by["conv2d_2"].input_size == (62, 62) and by["conv2d_2"].padding == ((0, 0), (0, 0))
    for name, size in (("conv2d_3", 60), ("conv2d_4", 30), ("conv2d_5", 15), ("conv2d_6", 8)):
        assert by[name].stride == (2, 2) and by[name].kernel_size == (1, 1)
        assert by[name].input_size == (size, size)
    assert by["separable_conv2d_1/depthwise"].padding == ((1, 1), (1, 1))
    assert by["separable_conv2d_8/pointwise"].input_size == (8, 8)
    assert by["conv2d_7"].input_size == (4, 4) and by["conv2d_7"].out_channels == 7
    assert all(c.provenance.locator.startswith("/model_weights/") for c in ir.convs)  # type: ignore[union-attr]
    with h5py.File(path, "r") as f:
        raw = f["model_weights/conv2d_2/conv2d_2_1/kernel:0"][()]
    np.testing.assert_array_equal(by["conv2d_2"].kernel, raw.transpose(3, 2, 0, 1))
    graph = ir.graph
    assert graph is not None and graph.outputs == ("predictions",)
    assert sum(n.kind == "add" for n in graph.nodes) == 4
    assert not [n for n in graph.nodes if n.kind == "unknown"]


def strip_name_attributes(f: h5py.File) -> None:
    groups: list[h5py.Group] = []
    f.visititems(lambda _, obj: groups.append(obj) if isinstance(obj, h5py.Group) else None)
    for group in groups:
        group.attrs.pop("name", None)


@pytest.mark.parametrize("case", ["f2d", "nested"])
def test_object_tree_without_name_metadata(cases, case, tmp_path):
    """Keras 3 releases before the ``vars`` name attribute: groups are matched by class key."""
    import io
    import zipfile

    src = cases[case].files["keras"]
    dest = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model.weights.h5":
                image = io.BytesIO(data)
                with h5py.File(image, "r+") as f:
                    strip_name_attributes(f)
                data = image.getvalue()
            zout.writestr(info, data)
    with zipfile.ZipFile(dest) as zf, h5py.File(io.BytesIO(zf.read("model.weights.h5"))) as f:
        assert "name" not in f["layers/conv2d/vars"].attrs
    ref, got = load(src), load(dest)
    assert [c.name for c in got.layers] == [c.name for c in ref.layers] and not got.skipped
    for a, b in zip(ref.convs, got.convs, strict=True):
        np.testing.assert_array_equal(a.kernel, b.kernel)
        assert a.bn is None if b.bn is None else a.bn is not None


def test_shared_layer_and_two_inputs(cases, tmp_path):
    import keras
    from keras import layers

    a, b = keras.Input((8, 8, 2), name="a"), keras.Input((4, 4, 2), name="b")
    shared = layers.Conv2D(3, 3, padding="same", name="shared")
    up = layers.UpSampling2D(2, name="up")(shared(b))
    out = layers.Concatenate(name="cat")([shared(a), up])
    model = keras.Model([a, b], out)
    path = tmp_path / "shared.keras"
    model.save(path)
    ir = load(path)
    (conv,) = ir.convs
    # Keras node 0 is the first call, shared(b): its size is used, the note names both
    assert conv.input_size == (4, 4) and any("called 2 times" in n for n in conv.notes)
    assert dict(ir.input_shapes) == {"a": (None, 8, 8, 2), "b": (None, 4, 4, 2)}
    graph = ir.graph
    assert graph is not None and graph.inputs == ("a", "b") and graph.outputs == ("cat",)
    calls = [n for n in graph.nodes if n.kind == "conv"]
    assert [n.attrs["layer"] for n in calls] == ["shared", "shared"]
    assert {n.inputs for n in calls} == {("a",), ("b",)}
    cat = next(n for n in graph.nodes if n.name == "cat")
    assert set(cat.inputs) == {"up", next(n.outputs[0] for n in calls if n.inputs == ("a",))}
    with pytest.raises(InputShapeError):
        load(path, **{"": (1, 8, 8, 2)})  # two inputs: the shape must be named


def keras2_dialect(config: dict, bare_list: bool) -> str:
    """A Keras 3 Sequential config rewritten the way Keras 2 wrote it: no InputLayer entry,
    the first layer carries batch_input_shape; Keras 2.0/2.1 stored the layer list bare."""
    import json

    entries = config["config"]["layers"]
    shape = entries[0]["config"]["batch_shape"]
    entries = [{"class_name": e["class_name"], "config": e["config"]} for e in entries[1:]]
    entries[0]["config"] = {**entries[0]["config"], "batch_input_shape": shape}
    inner = entries if bare_list else {"name": "sequential_1", "layers": entries}
    return json.dumps({"class_name": "Sequential", "config": inner})


@pytest.mark.parametrize("bare_list", [False, True])
def test_keras2_sequential_config_dialects(cases, bare_list, tmp_path):
    import json
    import shutil

    path = tmp_path / "k2.h5"
    shutil.copyfile(cases["seq1d"].files["h5"], path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = keras2_dialect(json.loads(f.attrs["model_config"]), bare_list)
    ref, got = load(cases["seq1d"].files["h5"]), load(path)
    assert [(c.name, c.input_size, c.padding, c.stride) for c in got.convs] == [
        (c.name, c.input_size, c.padding, c.stride) for c in ref.convs
    ]
    assert [n.kind for n in got.graph.nodes] == [n.kind for n in ref.graph.nodes]  # type: ignore[union-attr]


def test_subclassed_model_falls_back_to_weights_only(cases, tmp_path):
    import keras

    class TinyNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(3, 3, name="conv")
            self.head = keras.layers.Dense(2, name="head")

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    model = TinyNet()
    model(np.zeros((1, 8, 8, 2), np.float32))
    path = tmp_path / "sub.keras"
    model.save(path)
    ir = load(path)
    assert any("subclassed" in n for n in ir.notes) and ir.graph is None
    (conv,) = ir.convs
    assert conv.name == "conv" and conv.input_size is None and conv.stride == (1, 1)
    np.testing.assert_array_equal(conv.kernel, model.conv.kernel.numpy().transpose(3, 2, 0, 1))
    assert [d.name for d in ir.denses] == ["head"]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_optimizer_state_is_never_read_as_kernels(cases, suffix, tmp_path):
    """A compiled, trained model stores conv-shaped Adam moments next to the weights."""
    import warnings

    import keras

    model = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="c"), keras.layers.Flatten()]
    )
    model.compile("adam", "mse")
    model.fit(np.ones((4, 6, 6, 2)), np.zeros((4, 48)), verbose=0)
    path = tmp_path / f"trained{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    ir = load(path)
    assert [c.name for c in ir.convs] == ["c"] and not ir.skipped
    assert "optimizer" not in ir.convs[0].provenance.locator  # type: ignore[union-attr]


def test_graph_of_activation_and_pooling_layers(cases, tmp_path):
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((7, 7, 2)),
            layers.Conv2D(4, 3, padding="same", name="conv"),
            layers.PReLU(name="prelu"),
            layers.LeakyReLU(negative_slope=0.1, name="leaky"),
            layers.ELU(alpha=0.5, name="elu"),
            layers.ReLU(max_value=6.0, name="relu6"),
            layers.AveragePooling2D(2, padding="same", name="avg"),
            layers.Rescaling(0.5, name="half"),
            layers.Reshape((-1,), name="flat"),
            layers.Softmax(name="soft"),
        ]
    )
    model.get_layer("prelu").alpha.assign(np.full((7, 7, 4), -3.0, np.float32))
    path = tmp_path / "acts.keras"
    model.save(path)
    nodes = {n.name: n for n in load(path).graph.nodes}  # type: ignore[union-attr]
    assert nodes["prelu"].attrs == {"fn": "prelu", "slope": 3.0}
    assert nodes["leaky"].attrs == {"fn": "leaky_relu", "alpha": pytest.approx(0.1)}
    assert nodes["elu"].attrs == {"fn": "elu", "alpha": 0.5}
    assert nodes["relu6"].attrs == {"fn": "relu", "max_value": 6.0}
    avg = nodes["avg"]
    assert avg.kind == "avgpool" and avg.attrs["padding"] == ((0, 1), (0, 1))
    assert avg.attrs["input_size"] == (7, 7) and avg.attrs["count_include_pad"] is False
    assert nodes["half"].kind == "mul_const" and nodes["half"].attrs["value"] == 0.5
    assert nodes["flat"].kind == "identity" and nodes["soft"].attrs == {"fn": "softmax"}


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_sizes_continue_past_a_lambda_from_recorded_shapes(cases, suffix, tmp_path):
    """Keras 3 writes each call's input shape into the config: used where no rule applies."""
    import warnings

    import keras
    from keras import layers

    inp = keras.Input((9, 8, 2), name="x")
    y = layers.Lambda(lambda t: t[:, ::2], name="every_other_row")(inp)
    model = keras.Model(inp, layers.Conv2D(3, 3, name="after")(y))
    path = tmp_path / f"lam{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    (conv,) = load(path).convs
    assert conv.input_size == (5, 8) == tuple(model.get_layer("after").input.shape[1:3])
