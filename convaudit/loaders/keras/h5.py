"""Find each Keras layer's weight datasets in an HDF5 file, without trusting declared sizes.

Two layouts exist:
- legacy (Keras 1/2, and Keras 3 ``model.save("x.h5")``): a group with a ``layer_names``
  attribute; each layer group's ``weight_names`` attribute lists its datasets, relative to the
  layer group. Names may be fixed-length bytes with a ``:0`` suffix, and the inner group names
  may differ from the layer names, so datasets are always reached through ``weight_names``.
- the Keras 3 object tree (``.keras``, ``.weights.h5``): see keras_tree.

Both produce ``LayerWeights``: layer name -> ordered (role, dataset path) pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import h5py
import numpy as np

from convaudit.errors import ModelFileError
from convaudit.loaders.keras.config import KModel
from convaudit.loaders.safety import MAX_COMPRESSION_RATIO, check_declared_bytes

CONV_CLASSES = frozenset(
    f"{kind}{nd}D{suffix}"
    for nd in (1, 2, 3)
    for kind, suffix in (
        ("Conv", ""),
        ("Conv", "Transpose"),
        ("DepthwiseConv", ""),
        ("SeparableConv", ""),
    )
)
TREE_CLASSES = (*sorted(CONV_CLASSES), "Dense", "BatchNormalization", "PReLU")
ROLE_NAMES = frozenset(
    {
        "kernel",
        "bias",
        "depthwise_kernel",
        "pointwise_kernel",
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
        "alpha",
    }
)


@dataclass(frozen=True)
class LayerWeights:
    """Where one layer's weights live: ``slots`` = (role, dataset path) in Keras' order."""

    name: str
    slots: tuple[tuple[str, str], ...]
    class_key: str = ""  # Keras 3 object-tree key (e.g. "conv2d_transpose_1"), "" for legacy

    def path(self, role: str) -> str | None:
        return next((p for r, p in self.slots if r == role), None)

    def need(self, role: str) -> str:
        """The dataset path of a weight the layer must have."""
        found = self.path(role)
        if found is None:
            raise ModelFileError(f"layer {self.name} has no {role} weight in the file")
        return found


def text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_array(f: h5py.File, path: str, available: int, where: str) -> np.ndarray:
    """Read a dataset after checking its declared size against the bytes really present."""
    node = f.get(path)
    if not isinstance(node, h5py.Dataset):
        raise ModelFileError(f"cannot read {where}: dataset {path!r} is missing")
    storage = int(node.id.get_storage_size())
    check_declared_bytes(where, f"dataset {path}", storage, available)  # type: ignore[arg-type]
    filtered = bool(node.compression) or (node.chunks is not None and storage < node.nbytes)
    if not filtered:
        check_declared_bytes(where, f"dataset {path}", int(node.nbytes), available)  # type: ignore[arg-type]
    elif node.nbytes > max(storage, 1) * MAX_COMPRESSION_RATIO:
        raise ModelFileError(
            f"cannot read {where}: dataset {path} expands {node.nbytes // max(storage, 1)}x"
        )
    try:
        return np.asarray(node[()])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"cannot read {where}: dataset {path} is unreadable ({exc})") from None


def _role(weight_name: str) -> str:
    short = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
    return short if short in ROLE_NAMES else ""


def weight_count(class_name: str, cfg: Mapping[str, object]) -> int | None:
    """How many variables a layer of this class holds, or None when we do not know the class."""
    bias = 1 if cfg.get("use_bias", True) else 0
    if class_name.startswith("SeparableConv"):
        return 2 + bias
    if class_name.startswith(("Conv", "DepthwiseConv")) or class_name == "Dense":
        return 1 + bias
    if class_name == "BatchNormalization":
        return 2 + int(bool(cfg.get("scale", True))) + int(bool(cfg.get("center", True)))
    if class_name == "PReLU":
        return 1
    if class_name in {
        "InputLayer",
        "Activation",
        "Add",
        "Concatenate",
        "Flatten",
        "Dropout",
        "ReLU",
    }:
        return 0
    return None


def roles_by_order(class_name: str, cfg: Mapping[str, object], n: int) -> list[str]:
    """Keras' variable order for a class: the role of the i-th variable."""
    if class_name.startswith("SeparableConv"):
        order = ["depthwise_kernel", "pointwise_kernel", "bias"]
    elif class_name.startswith("DepthwiseConv"):
        order = ["depthwise_kernel", "bias"]
    elif class_name == "BatchNormalization":
        order = ["gamma"] if cfg.get("scale", True) else []
        order += ["beta"] if cfg.get("center", True) else []
        order += ["moving_mean", "moving_variance"]
    elif class_name == "PReLU":
        order = ["alpha"]
    else:
        order = ["kernel", "bias"]
    return [order[i] if i < len(order) else f"var{i}" for i in range(n)]


def _assign(
    name: str, class_name: str, cfg: Mapping[str, object], paths: list[str], names: list[str]
) -> LayerWeights:
    roles = [_role(n) for n in names]
    if not all(roles) or len(set(roles)) != len(roles):
        roles = roles_by_order(class_name, cfg, len(paths))
    if class_name.startswith(
        "DepthwiseConv"
    ):  # Keras 2 named it "depthwise_kernel", Keras 3 "kernel"
        roles = ["depthwise_kernel" if r == "kernel" else r for r in roles]
    return LayerWeights(name, tuple(zip(roles, paths, strict=True)))


# --- legacy layout ----------------------------------------------------------------------------


def legacy_root(f: h5py.File) -> h5py.Group | None:
    """The group holding ``layer_names``: ``/model_weights`` in a full model, else the root."""
    group = f.get("model_weights")
    if isinstance(group, h5py.Group) and "layer_names" in group.attrs:
        return group
    return f if "layer_names" in f.attrs else None


def _legacy_lists(root: h5py.Group) -> list[tuple[str, list[str], list[str]]]:
    """(layer name, dataset paths, weight names) for every layer listed in ``layer_names``."""
    out = []
    for raw in root.attrs["layer_names"]:
        name = text(raw)
        group = root.get(name)
        if not isinstance(group, h5py.Group):
            raise ModelFileError(f"layer group {name!r} listed in layer_names is missing")
        names = [text(w) for w in np.atleast_1d(group.attrs.get("weight_names", [])) if text(w)]
        out.append((name, [f"{group.name}/{w}" for w in names], names))
    return out


def legacy_with_config(
    root: h5py.Group, model: KModel
) -> tuple[dict[str, LayerWeights], list[str]]:
    """Weights per (flattened) layer name; a nested model's list is split by its layers' counts."""
    found: dict[str, LayerWeights] = {}
    problems: list[str] = []
    for top, paths, names in _legacy_lists(root):
        layer = model.layers.get(top)
        if layer is None or not paths:
            continue
        if not layer.is_model:
            found[top] = _assign(top, layer.class_name, layer.config, paths, names)
            continue
        inner = [
            lay
            for lay in model.layers.values()
            if lay.path[0] == top and not lay.is_model and len(lay.path) > 1
        ]
        counts = [weight_count(lay.class_name, lay.config) for lay in inner]
        if any(c is None for c in counts) or sum(c or 0 for c in counts) != len(paths):
            problems.append(
                f"cannot split the {len(paths)} weights of nested model {top!r} among its layers"
            )
            continue
        start = 0
        for lay, count in zip(inner, counts, strict=True):
            if count:
                sl = slice(start, start + count)
                found[lay.name] = _assign(
                    lay.name, lay.class_name, lay.config, paths[sl], names[sl]
                )
                start += count
    return found, problems


def legacy_without_config(root: h5py.Group) -> dict[str, LayerWeights]:
    """Weights-only legacy file: group a layer's weights by their variable scope."""
    found: dict[str, LayerWeights] = {}
    for top, paths, names in _legacy_lists(root):
        scopes: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            scopes.setdefault(n.rsplit("/", 1)[0] if "/" in n else "", []).append(i)
        for scope, idx in scopes.items():
            name = top if len(scopes) == 1 else f"{top}/{scope.rsplit('/', 1)[-1]}"
            roles = [_role(names[i]) or f"var{i}" for i in idx]
            found[name] = LayerWeights(
                name, tuple(zip(roles, [paths[i] for i in idx], strict=True))
            )
    return found
