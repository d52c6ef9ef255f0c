"""Generate the malformed-model corpus (issue 6, promise 2) into a folder.

    python tests/hardening/make_corpus.py OUTDIR

Every file starts as a real model written by a real tool (torch.onnx.export, torch.save,
torch.jit.save, torch.export.save, safetensors, Keras 3 on the torch backend, h5py), and is then
damaged in one precise way. ``OUTDIR/manifest.json`` lists the cases: file, extra CLI
arguments, the expected outcome and which promise it covers. The tests run every case through
``convaudit spectrum``; the script is run in a subprocess so that the test process never imports
Keras (convaudit itself must not need it).

Expected outcomes:
  error       exit 2, exactly one ``error:`` line on stderr, no traceback
  ok          exit 0 (e.g. a valid file with a misleading suffix: detection is by content)
  non-finite  exit 0, the damaged layer has status "non-finite" and no NaN/Inf in the JSON
  zero        exit 0, the all-zero layer has status "zero" and finite numbers in the JSON
  skipped     exit 2 as for ``error``, or exit 0 with the layer reported as skipped (a reason)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import struct
import sys
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

SEED = 20190410  # fixed: the corpus is the same on every run
BOMB_BYTES = 256 * 1024**2  # inflates ~1000x: refused by the compression-ratio cap
TOO_MANY_MEMBERS = 20_001  # one over convaudit.loaders.safety.MAX_ARCHIVE_MEMBERS
ABSURD = 2**40  # a dimension no real kernel has; its tensor would need terabytes


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    expect: str  # error | ok | non-finite | zero | skipped
    covers: str  # the promise-2 bullet it exercises
    args: list[str] = field(default_factory=list)
    #: substrings, one of which the error line must contain (case-insensitive)
    error_mentions: list[str] = field(default_factory=list)
    #: layer name expected to carry the status (non-finite / zero)
    layer: str | None = None


# --- real base models -----------------------------------------------------------------------------


def _torch_net():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 2, 3, stride=2),
    )
    return net.eval()


def write_bases(out: Path) -> dict[str, Path]:
    """One small valid model per format flavour, written by the framework itself."""
    import torch
    from safetensors.torch import save_file

    net = _torch_net()
    x = torch.zeros(1, 3, 8, 8)
    b = out / "base"
    b.mkdir(parents=True, exist_ok=True)
    bases = {
        "onnx": b / "model.onnx",
        "pt": b / "state_dict.pt",
        "pt-legacy": b / "legacy.pt",
        "ckpt": b / "training.ckpt",
        "safetensors": b / "model.safetensors",
        "torchscript": b / "scripted.pt",
        "pt2": b / "exported.pt2",
    }
    torch.onnx.export(net, (x,), bases["onnx"], dynamo=False, input_names=["x"])
    state = net.state_dict()
    torch.save(state, bases["pt"])
    torch.save(state, bases["pt-legacy"], _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {}}, bases["ckpt"])
    bases["ckpt-restricted"] = b / "lightning.ckpt"
    with _gone_module(b) as gone:
        hparams = gone.HParams(lr=0.1, channels=[3, 4, 2])
        torch.save({"epoch": 3, "state_dict": state, "hyper_parameters": hparams},
                   bases["ckpt-restricted"])  # fmt: skip
    save_file({k: v.contiguous() for k, v in state.items()}, bases["safetensors"])
    torch.jit.save(torch.jit.script(net), bases["torchscript"])
    torch.export.save(torch.export.export(net, (x,)), bases["pt2"])

    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv_a"),
            keras.layers.BatchNormalization(name="bn_a"),
            keras.layers.Conv2D(2, 3, strides=2, name="conv_b"),
        ]
    )
    _keras_lambda_files(out, keras)
    bases["keras"] = b / "model.keras"
    bases["h5"] = b / "legacy.h5"
    bases["weights.h5"] = b / "model.weights.h5"
    model.save(bases["keras"])
    model.save(bases["h5"])
    model.save_weights(bases["weights.h5"])
    return bases


@contextlib.contextmanager
def _gone_module(folder: Path):  # type: ignore[no-untyped-def]
    """A module importable while a checkpoint is written, and gone when it is read (a Lightning
    .ckpt's omegaconf hparams on a machine without omegaconf): its classes' objects must come
    back as placeholders, never imported."""
    import importlib

    home = folder / "gone"
    home.mkdir(exist_ok=True)
    (home / "ca_gone_hparams.py").write_text(
        "class HParams(dict):\n    pass\n\n\nclass Blob:\n    pass\n"
    )
    sys.path.insert(0, str(home))
    try:
        yield importlib.import_module("ca_gone_hparams")
    finally:
        sys.path.remove(str(home))
        sys.modules.pop("ca_gone_hparams", None)
        shutil.rmtree(home)


LAMBDA_MARKER = "LAMBDA_RAN"  # created in OUTDIR whenever the Lambda below is executed
_lambda_marker_path = ""


def _evil(x):
    """A Keras Lambda body standing in for any code a model file may carry."""
    open(_lambda_marker_path, "w").close()
    return x


def _keras_lambda_files(out: Path, keras) -> None:
    """``untrusted/lambda.keras`` and ``.h5``: a Lambda layer between two convs. Keras runs the
    Lambda while building, so the marker exists afterwards: proof the payload is live."""
    global _lambda_marker_path
    folder = out / "untrusted"
    folder.mkdir(exist_ok=True)
    _lambda_marker_path = str(out / LAMBDA_MARKER)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="before"),
            keras.layers.Lambda(_evil, name="payload"),
            keras.layers.Conv2D(2, 3, name="after"),
        ]
    )
    model.save(folder / "lambda.keras")
    model.save(folder / "lambda.h5")


# --- byte-level damage ----------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.name.endswith(".weights.h5") else path.suffix


def _damage_cases(out: Path, bases: dict[str, Path]) -> list[Case]:
    rng = random.Random(SEED)
    d = out / "damaged"
    d.mkdir(exist_ok=True)
    cases: list[Case] = []
    for flavour, src in bases.items():
        data = src.read_bytes()
        sfx = _suffix(src)
        variants = {
            "empty": b"",
            "truncated-half": data[: len(data) // 2],
            "truncated-head": data[:64],
            "random": bytes(rng.getrandbits(8) for _ in range(4096)),
        }
        if data[:2] == b"PK":
            # Keep the local headers, destroy the central directory: the archive cannot open.
            variants["corrupt-directory"] = data[:-200] + bytes(200)
        elif data[:8] == b"\x89HDF\r\n\x1a\n":
            # Keep the signature, zero the superblock's addresses.
            variants["corrupt-superblock"] = data[:8] + bytes(120) + data[128:]
        elif flavour == "onnx":
            # Keep the header fields the sniffer looks at, then garbage where the graph starts
            # (garbage inside raw weight bytes would only make NaN weights, a different case).
            at = data.find(b"\x3a")  # field 7 (graph), length-delimited
            variants["corrupt-graph"] = data[: at + 1] + b"\xff" * 64 + data[at + 65 :]
        else:
            variants["corrupt-middle"] = (
                data[: len(data) // 3] + b"\xff" * 64 + data[len(data) // 3 + 64 :]
            )
        for kind, payload in variants.items():
            f = d / f"{kind}-{flavour}{sfx}"
            f.write_bytes(payload)
            cases.append(
                Case(f"{kind}-{flavour}", str(f), "error", "truncated/corrupt/empty/random")
            )
    return cases


def _suffix_cases(out: Path, bases: dict[str, Path]) -> list[Case]:
    d = out / "suffix"
    d.mkdir(exist_ok=True)
    cases = []
    (d / "notes.onnx").write_text("these are not the weights you are looking for\n")
    (d / "picture.h5").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (d / "config.keras").write_text("{}")
    with zipfile.ZipFile(d / "readme.pt", "w") as zf:
        zf.writestr("README.txt", "a zip archive, but not a torch checkpoint")
    with zipfile.ZipFile(d / "nothing.keras", "w") as zf:
        zf.writestr("metadata.json", "{}")
    for name in ("notes.onnx", "picture.h5", "config.keras", "readme.pt", "nothing.keras"):
        cases.append(Case(f"wrong-suffix-{name}", str(d / name), "error", "wrong suffix"))
    # Detection is by content: a valid model under a misleading suffix still loads.
    for flavour, fake in (("onnx", "model.pt"), ("pt", "weights.onnx"), ("h5", "model.onnx")):
        shutil.copy(bases[flavour], d / fake)
        cases.append(Case(f"misnamed-{flavour}-as-{fake}", str(d / fake), "ok", "wrong suffix"))
    return cases


# --- archives -------------------------------------------------------------------------------------


class _ZerosDeflated:
    """Stands in for zipfile's compressor: each 1 MiB chunk of zeros becomes the same ~1 KiB
    full-flush deflate block (a valid stream), so a 1 GiB bomb is written in a fraction of a
    second instead of deflating every byte."""

    CHUNK = 1024**2

    def __init__(self) -> None:
        co = zlib.compressobj(9, zlib.DEFLATED, -15)
        self.block = co.compress(bytes(self.CHUNK)) + co.flush(zlib.Z_FULL_FLUSH)

    def compress(self, data: bytes) -> bytes:
        assert len(data) == self.CHUNK and not any(data[:64])
        return self.block

    def flush(self) -> bytes:
        return b"\x03\x00"  # an empty final block


def write_zeros_member(zout: zipfile.ZipFile, name: str, size: int) -> None:
    """Add member ``name`` holding ``size`` zero bytes (a multiple of 1 MiB), deflated ~1000x:
    a zip bomb with a correct CRC that zipfile itself can read back."""
    with zout.open(_bomb_member_info(name), "w", force_zip64=True) as f:
        f._compressor = _ZerosDeflated()  # type: ignore[attr-defined]
        chunk = bytes(_ZerosDeflated.CHUNK)
        for _ in range(size // len(chunk)):
            f.write(chunk)


def _copy_zip(src: Path, dst: Path, extra: list[tuple[str, bytes | int]]) -> None:
    """Copy ``src``'s members byte-for-byte into ``dst`` and add ``extra`` members.

    An int payload is that many zero bytes, streamed and deflated (a zip bomb member).
    """
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        for name, payload in extra:
            if isinstance(payload, int):
                write_zeros_member(zout, name, payload)
            else:
                zout.writestr(name, payload, compress_type=zipfile.ZIP_DEFLATED)


def _bomb_member_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _forge_declared_size(path: Path, member: str, size: int) -> None:
    """Rewrite the central-directory entry of ``member`` to declare ``size`` uncompressed bytes."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46 : pos + 46 + name_len]) == name:
            struct.pack_into("<I", data, pos + 24, min(size, 0xFFFFFFFE))
            path.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise ValueError(f"{member} not in {path}")


def _archive_cases(out: Path, bases: dict[str, Path]) -> list[Case]:
    d = out / "archives"
    d.mkdir(exist_ok=True)
    bomb = ["zip bomb", "expands", "archive"]
    cases = []
    for flavour in ("keras", "pt", "pt2", "ckpt"):
        src = bases[flavour]
        prefix = zipfile.ZipFile(src).namelist()[0].split("/")[0]
        member = "model.weights.h5.bak" if flavour == "keras" else f"{prefix}/data/bomb"
        f = d / f"bomb-{flavour}{src.suffix}"
        _copy_zip(src, f, [(member, BOMB_BYTES)])
        cases.append(Case(f"zip-bomb-{flavour}", str(f), "error", "zip bomb", error_mentions=bomb))
    # The weights member itself is the bomb.
    f = d / "bomb-weights.keras"
    with zipfile.ZipFile(bases["keras"]) as zin, zipfile.ZipFile(f, "w") as zout:
        for info in zin.infolist():
            if info.filename == "model.weights.h5":
                write_zeros_member(zout, info.filename, BOMB_BYTES)
            else:
                zout.writestr(info, zin.read(info.filename))
    cases.append(Case("zip-bomb-keras-weights", str(f), "error", "zip bomb", error_mentions=bomb))
    # Too many members.
    f = d / "many-members.keras"
    with zipfile.ZipFile(bases["keras"]) as zin, zipfile.ZipFile(f, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        for i in range(TOO_MANY_MEMBERS):
            zout.writestr(f"m/{i}", b"")
    cases.append(
        Case("zip-too-many-members", str(f), "error", "zip bomb", error_mentions=["members"])
    )
    # A member name that is not valid UTF-8 although the entry says it is (zipfile raises
    # UnicodeDecodeError, a ValueError, while opening the archive). Found by test_fuzz.
    for flavour in ("keras", "pt", "ckpt", "torchscript", "pt2"):
        src = bases[flavour]
        f = d / f"bad-member-name-{flavour}{src.suffix}"
        data = bytearray(src.read_bytes())
        pos = data.find(b"PK\x01\x02")
        flags = struct.unpack_from("<H", data, pos + 8)[0] | 0x800  # bit 11: names are UTF-8
        struct.pack_into("<H", data, pos + 8, flags)
        data[pos + 46] = 0xFF
        f.write_bytes(bytes(data))
        cases.append(
            Case(
                f"zip-bad-member-name-{flavour}", str(f), "error", "truncated/corrupt/empty/random"
            )
        )
    # A member whose central directory declares ~4 GiB (a forged size, nothing inflated).
    for flavour in ("keras", "pt"):
        src = bases[flavour]
        f = d / f"declared-huge-{flavour}{src.suffix}"
        shutil.copy(src, f)
        target = "model.weights.h5" if flavour == "keras" else zipfile.ZipFile(src).namelist()[0]
        _forge_declared_size(f, target, 2**32 - 2)
        cases.append(
            Case(
                f"zip-declared-huge-{flavour}",
                str(f),
                "error",
                "zip bomb",
                error_mentions=[*bomb, "corrupt", "declares"],
            )
        )
    return cases


# --- HDF5 ------------------------------------------------------------------------------------------


def _first_kernel(h5file) -> str:
    found: list[str] = []
    h5file.visititems(
        lambda name, obj: found.append(name) if getattr(obj, "ndim", 0) == 4 else None
    )
    return sorted(found)[0]


def _absurd_h5(path: Path, shape: tuple[int, ...]) -> None:
    """Replace the first 4-D dataset with one declaring ``shape`` and storing nothing."""
    import h5py

    with h5py.File(path, "r+") as h:
        name = _first_kernel(h)
        attrs = dict(h[name].attrs)
        del h[name]
        ds = h.create_dataset(name, shape=shape, dtype="float32", chunks=(1, 1, 1, 1))
        for k, v in attrs.items():
            ds.attrs[k] = v


def _hdf5_cases(out: Path, bases: dict[str, Path]) -> list[Case]:
    import h5py

    d = out / "hdf5"
    d.mkdir(exist_ok=True)
    cases = []
    sizes = ["declares", "absurd", "shape", "size", "bytes", "limit", "mismatch", "expected"]
    absurd = (3, 3, ABSURD, 4)
    for flavour in ("h5", "weights.h5"):
        f = d / f"absurd-shape-{bases[flavour].name}"
        shutil.copy(bases[flavour], f)
        _absurd_h5(f, absurd)
        cases.append(
            Case(
                f"hdf5-absurd-shape-{flavour}",
                str(f),
                "error",
                "absurd sizes",
                error_mentions=sizes,
            )
        )
    # The same inside a .keras archive.
    inner = d / "inner.weights.h5"
    with zipfile.ZipFile(bases["keras"]) as zin:
        inner.write_bytes(zin.read("model.weights.h5"))
    _absurd_h5(inner, absurd)
    f = d / "absurd-shape.keras"
    with zipfile.ZipFile(bases["keras"]) as zin, zipfile.ZipFile(f, "w") as zout:
        for info in zin.infolist():
            data = inner.read_bytes() if info.filename == "model.weights.h5" else zin.read(info)
            zout.writestr(info, data)
    inner.unlink()
    cases.append(
        Case("hdf5-absurd-shape-keras", str(f), "error", "absurd sizes", error_mentions=sizes)
    )
    # One byte duplicated early on: the superblock still opens, every address behind it is
    # off by one, and h5py fails later, on an attribute or link read. Found by test_fuzz.
    for flavour, frac in (("h5", 0.1), ("weights.h5", 0.2)):
        data = bases[flavour].read_bytes()
        k = int(len(data) * frac)
        f = d / f"shifted-{bases[flavour].name}"
        f.write_bytes(data[:k] + data[k : k + 1] + data[k:])
        cases.append(
            Case(f"hdf5-shifted-{flavour}", str(f), "error", "truncated/corrupt/empty/random")
        )
    # An HDF5 file with no Keras structure at all.
    f = d / "plain.h5"
    with h5py.File(f, "w") as h:
        h["data"] = list(range(10))
    cases.append(Case("hdf5-not-keras", str(f), "error", "wrong suffix"))
    return cases


# --- ONNX graphs ----------------------------------------------------------------------------------


def _onnx_cases(out: Path, bases: dict[str, Path]) -> list[Case]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = out / "onnx"
    d.mkdir(exist_ok=True)
    base = onnx.load(bases["onnx"])
    conv_weights = [n.input[1] for n in base.graph.node if n.op_type == "Conv"]
    cases: list[Case] = []

    def save(model: onnx.ModelProto, name: str) -> Path:
        f = d / name
        f.write_bytes(model.SerializeToString())
        return f

    def with_weight(name: str, array: np.ndarray | None = None, tensor=None) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(base)
        for init in m.graph.initializer:
            if init.name == name:
                init.CopyFrom(
                    tensor if tensor is not None else numpy_helper.from_array(array, name)
                )
        return m

    first = conv_weights[0]
    first_node = next(
        n.name for n in base.graph.node if n.op_type == "Conv" and n.input[1] == first
    )
    shape = list(
        numpy_helper.to_array(next(i for i in base.graph.initializer if i.name == first)).shape
    )
    sizes = [
        "declares",
        "absurd",
        "shape",
        "size",
        "bytes",
        "limit",
        "expect",
        "mismatch",
        "negative",
    ]

    # Absurd declared dims with 16 bytes of data, and negative dims.
    for label, dims in (("absurd-dims", [ABSURD, *shape[1:]]), ("negative-dims", [-1, *shape[1:]])):
        t = helper.make_tensor(first, TensorProto.FLOAT, [1], [0.0])
        del t.dims[:]
        t.dims.extend(dims)
        t.raw_data = bytes(16)
        del t.float_data[:]
        f = save(with_weight(first, tensor=t), f"{label}.onnx")
        cases.append(Case(f"onnx-{label}", str(f), "error", "absurd sizes", error_mentions=sizes))

    # A weight computed by ConstantOfShape with an absurd shape: must not be folded blindly.
    m = onnx.ModelProto()
    m.CopyFrom(base)
    kept = [i for i in m.graph.initializer if i.name != first]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    m.graph.initializer.append(
        numpy_helper.from_array(np.array([ABSURD, *shape[1:]], np.int64), "absurd_shape")
    )
    fill = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.01])
    m.graph.node.insert(
        0, helper.make_node("ConstantOfShape", ["absurd_shape"], [first], value=fill)
    )
    f = save(m, "constantofshape-absurd.onnx")
    cases.append(
        Case("onnx-computed-absurd", str(f), "error", "absurd sizes", error_mentions=sizes)
    )
    # The same, reduced to the right shape: shape inference agrees, only folding would allocate.
    # Refusing the file or skipping the layer (with its reason) are both fine; allocating is not.
    m = onnx.ModelProto()
    m.CopyFrom(base)
    kept = [i for i in m.graph.initializer if i.name != first]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    m.graph.initializer.append(
        numpy_helper.from_array(np.array([ABSURD, *shape], np.int64), "absurd_shape")
    )
    m.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    m.graph.node.insert(
        0, helper.make_node("ConstantOfShape", ["absurd_shape"], ["absurd_block"], value=fill)
    )
    m.graph.node.insert(  # opset >= 18: axes is an input
        1, helper.make_node("ReduceMax", ["absurd_block", "axis0"], [first], keepdims=0)
    )
    f = save(m, "constantofshape-absurd-reduced.onnx")
    cases.append(
        Case("onnx-computed-absurd-reduced", str(f), "skipped", "absurd sizes", layer=first_node)
    )

    # A Conv whose weight, and one whose data input, is produced by nothing.
    for label, slot in (("dangling-weight", 1), ("dangling-input", 0)):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        conv = next(n for n in m.graph.node if n.op_type == "Conv")
        conv.input[slot] = "never_defined"
        f = save(m, f"{label}.onnx")
        cases.append(Case(f"onnx-{label}", str(f), "error", "dangling inputs"))

    # A cycle: Relu(a) -> b, Relu(b) -> a, and the first conv reads a.
    m = onnx.ModelProto()
    m.CopyFrom(base)
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.input[0] = "loop_a"
    m.graph.node.insert(0, helper.make_node("Add", ["x", "loop_b"], ["loop_a"], name="cyc_add"))
    m.graph.node.insert(1, helper.make_node("Relu", ["loop_a"], ["loop_b"], name="cyc_relu"))
    f = save(m, "cycle.onnx")
    cases.append(
        Case(
            "onnx-cycle",
            str(f),
            "error",
            "cycles",
            error_mentions=["cycle", "loop", "topolog", "order", "dangling", "undefined"],
        )
    )

    # Non-finite and all-zero kernels: reported per layer, never a silent NaN.
    w = numpy_helper.to_array(next(i for i in base.graph.initializer if i.name == first)).copy()
    for label, value, expect in (("nan", np.nan, "non-finite"), ("inf", np.inf, "non-finite")):
        bad = w.copy()
        bad.flat[0] = value
        f = save(with_weight(first, bad), f"{label}-kernel.onnx")
        cases.append(
            Case(f"onnx-{label}-kernel", str(f), expect, "NaN/Inf weights", layer=first_node)
        )
    f = save(with_weight(first, np.zeros_like(w)), "zero-kernel.onnx")
    cases.append(Case("onnx-zero-kernel", str(f), "zero", "all-zero kernels", layer=first_node))

    # No convs at all.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "no_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    f = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "no-convs.onnx")
    cases.append(Case("onnx-no-convs", str(f), "error", "empty models", error_mentions=["conv"]))

    # Contradictory --input-shape on a model whose input is fixed at 1x3x8x8.
    for label, arg in (
        ("channels", "x=1,5,8,8"),
        ("rank", "x=1,3,8"),
        ("name", "nosuchinput=1,3,8,8"),
        ("spatial", "x=1,3,16,16"),
    ):
        cases.append(
            Case(
                f"input-shape-contradicts-{label}",
                str(bases["onnx"]),
                "error",
                "contradictory --input-shape",
                args=["--input-shape", arg],
                error_mentions=["input", "shape"],
            )
        )

    cases += _subgraph_cases(d, base, first, w)
    cases += _external_data_cases(d, base)
    return cases


def _subgraph_cases(d: Path, base, first: str, w) -> list[Case]:  # type: ignore[no-untyped-def]
    """If bodies: nested past the reader's depth limit; a conv in a branch (read); a Paddle-style
    Constant kernel with a -1 dim inside a branch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cases: list[Case] = []
    conv = next(n for n in base.graph.node if n.op_type == "Conv")
    out = helper.make_tensor_value_info(conv.output[0], TensorProto.FLOAT, None)

    def with_branches(branch: onnx.GraphProto, name: str) -> Path:
        m = onnx.ModelProto()
        m.CopyFrom(base)
        m.graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
        node = helper.make_node(
            "If", ["cond"], [conv.output[0]], name="branchy", then_branch=branch,
            else_branch=branch,
        )  # fmt: skip
        index = next(i for i, n in enumerate(m.graph.node) if n.output[0] == conv.output[0])
        del m.graph.node[index]
        m.graph.node.insert(index, node)
        f = d / name
        f.write_bytes(m.SerializeToString())
        return f

    inner = onnx.NodeProto()
    inner.CopyFrom(conv)
    branch = helper.make_graph([inner], "leaf", [], [out])
    f = with_branches(branch, "conv-in-if.onnx")
    cases.append(Case("onnx-conv-in-if", str(f), "ok", "subgraphs: a conv in each branch"))
    deep = branch
    for depth in range(20):  # protobuf still parses it; the reader's limit is 16
        node = helper.make_node("If", ["cond"], [conv.output[0]], name=f"level{depth}",
                                then_branch=deep, else_branch=branch)  # fmt: skip
        deep = helper.make_graph([node], f"b{depth}", [], [out])
    f = with_branches(deep, "if-nested-20.onnx")
    cases.append(
        Case("onnx-if-nested-too-deep", str(f), "error", "absurd sizes", error_mentions=["nested"])
    )
    t = numpy_helper.from_array(w, "k")
    del t.dims[:]
    t.dims.extend([-1, *w.shape[1:]])
    constant = helper.make_node("Constant", [], [first + "_in_branch"], value=t)
    inner = onnx.NodeProto()
    inner.CopyFrom(conv)
    inner.input[1] = first + "_in_branch"
    f = with_branches(
        helper.make_graph([constant, inner], "minus_one", [], [out]), "if-kernel-minus-one.onnx"
    )
    cases.append(
        Case("onnx-kernel-minus-one-dim-in-if", str(f), "error", "absurd sizes",
             error_mentions=["negative"])
    )  # fmt: skip
    return cases


def _external_data_cases(d: Path, base) -> list[Case]:
    """External data that escapes the model's folder, or is missing, or too short."""
    import onnx

    cases = []
    outside = ["outside", "absolute", "escape", "traversal", "refus"]
    secret = d / "secret.bin"  # a file beside (not inside) each model folder
    # Save a real external-data model, then point its location elsewhere.
    for label in ("relative", "absolute", "symlink", "missing", "short"):
        folder = d / f"external-{label}"
        folder.mkdir(exist_ok=True)
        m = onnx.ModelProto()
        m.CopyFrom(base)
        onnx.save(
            m,
            folder / "model.onnx",
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
            size_threshold=0,
        )
        data_file = folder / "model.onnx.data"
        if label in ("relative", "absolute", "symlink"):
            shutil.copy(data_file, secret)  # valid bytes: only the guard stands in the way
            data_file.unlink()
        if label == "short":
            data_file.write_bytes(data_file.read_bytes()[:10])
        location = {
            "relative": "../secret.bin",
            "absolute": str(secret.resolve()),
            "symlink": "link/secret.bin",
            "missing": "model.onnx.data",
            "short": "model.onnx.data",
        }[label]
        if label == "symlink":
            (folder / "link").symlink_to(d.resolve(), target_is_directory=True)
        if label == "missing":
            data_file.unlink()
        model = onnx.load(folder / "model.onnx", load_external_data=False)
        for init in model.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
        (folder / "model.onnx").write_bytes(model.SerializeToString())
        mentions = outside if label in ("relative", "absolute", "symlink") else []
        cases.append(
            Case(
                f"onnx-external-{label}",
                str(folder / "model.onnx"),
                "error",
                "path traversal" if mentions else "truncated/corrupt/empty/random",
                error_mentions=mentions,
            )
        )
    return cases


# --- PyTorch ---------------------------------------------------------------------------------------


def _pytorch_cases(out: Path, bases: dict[str, Path]) -> list[Case]:
    import torch

    d = out / "pytorch"
    d.mkdir(exist_ok=True)
    cases = []
    state = torch.load(bases["pt"], weights_only=True)
    first = next(k for k, v in state.items() if v.ndim == 4)
    layer = first.removesuffix(".weight")  # the module name is the layer name
    bad = dict(state)
    bad[first] = state[first].clone()
    bad[first].view(-1)[1] = float("inf")
    torch.save(bad, d / "inf-kernel.pt")
    cases.append(
        Case(
            "pt-inf-kernel", str(d / "inf-kernel.pt"), "non-finite", "NaN/Inf weights", layer=layer
        )
    )
    zero = dict(state)
    zero[first] = torch.zeros_like(state[first])
    torch.save(zero, d / "zero-kernel.pt")
    cases.append(
        Case("pt-zero-kernel", str(d / "zero-kernel.pt"), "zero", "all-zero kernels", layer=layer)
    )
    with _gone_module(d) as gone:
        blob = gone.Blob()
        blob.payload = bytes(range(256)) * (64 * 1024)  # 16 MiB of BUILD state
        nested: list = []
        for _ in range(200):
            nested = [nested, {"down": nested}]
        blob.nested = nested
        torch.save({"state_dict": state, "hyper_parameters": blob}, d / "huge-setstate.ckpt")
    cases.append(
        Case(
            "pt-placeholder-huge-setstate",
            str(d / "huge-setstate.ckpt"),
            "ok",
            "untrusted objects: a placeholder with a huge BUILD state",
        )
    )
    torch.save({}, d / "empty-state.pt")
    cases.append(
        Case(
            "pt-empty-state-dict",
            str(d / "empty-state.pt"),
            "error",
            "empty models",
            error_mentions=["conv", "empty", "no weights", "no tensors", "no state_dict"],
        )
    )
    torch.save({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, d / "dense-only.pt")
    cases.append(
        Case(
            "pt-no-convs",
            str(d / "dense-only.pt"),
            "error",
            "empty models",
            error_mentions=["conv"],
        )
    )
    # A legacy (non-zip) checkpoint whose storage declares far more elements than the file holds.
    legacy = bases["pt-legacy"].read_bytes()
    numel = state[first].numel()
    marker = struct.pack("<q", numel)
    pos = legacy.rfind(marker)  # the storage's element count, in the raw section
    if pos >= 0:
        forged = legacy[:pos] + struct.pack("<q", 2**40) + legacy[pos + 8 :]
        (d / "legacy-absurd.pt").write_bytes(forged)
        cases.append(
            Case("pt-legacy-absurd-storage", str(d / "legacy-absurd.pt"), "error", "absurd sizes")
        )
    # safetensors whose header declares an absurd length.
    st = bases["safetensors"].read_bytes()
    (d / "absurd-header.safetensors").write_bytes(struct.pack("<Q", 2**60) + st[8:])
    cases.append(
        Case(
            "safetensors-absurd-header",
            str(d / "absurd-header.safetensors"),
            "error",
            "absurd sizes",
        )
    )
    header_len = struct.unpack("<Q", st[:8])[0]
    header = json.loads(st[8 : 8 + header_len])
    key = next(k for k in header if k != "__metadata__" and len(header[k]["shape"]) == 4)
    header[key]["shape"] = [ABSURD, *header[key]["shape"][1:]]
    raw = json.dumps(header).encode()
    (d / "absurd-shape.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + st[8 + header_len :]
    )
    cases.append(
        Case(
            "safetensors-absurd-shape", str(d / "absurd-shape.safetensors"), "error", "absurd sizes"
        )
    )
    return cases


def make_corpus(out: Path) -> list[Case]:
    out.mkdir(parents=True, exist_ok=True)
    bases = write_bases(out)
    cases = [
        Case(f"valid-{flavour}", str(path), "ok", "baseline: the undamaged original")
        for flavour, path in bases.items()
    ]
    cases += _damage_cases(out, bases)
    cases += _suffix_cases(out, bases)
    cases += _archive_cases(out, bases)
    cases += _hdf5_cases(out, bases)
    cases += _onnx_cases(out, bases)
    cases += _pytorch_cases(out, bases)
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "bases": {k: str(v) for k, v in bases.items()},
                "cases": [asdict(c) for c in cases],
                "lambda": {
                    "files": [str(out / "untrusted" / n) for n in ("lambda.keras", "lambda.h5")],
                    "marker": str(out / LAMBDA_MARKER),
                },
            },
            indent=1,
        )
    )
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUTDIR")
    made = make_corpus(Path(sys.argv[1]))
    print(f"{len(made)} cases in {sys.argv[1]}")
