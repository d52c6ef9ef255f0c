"""The Keras 3 object tree (``model.weights.h5`` in ``.keras``, ``.weights.h5``).

Each layer is a group ``.../layers/<class_key>`` (a subclassed model: ``.../<attribute>``)
whose ``vars`` subgroup holds datasets ``0, 1, ...`` in Keras' variable order and, since later
Keras 3 releases, a ``name`` attribute with the layer's name. Nested models repeat ``layers/``.
The root's ``optimizer`` group holds conv-shaped Adam moments: it is never read.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import h5py

from convaudit.loaders.keras.config import KModel
from convaudit.loaders.keras.h5 import TREE_CLASSES, LayerWeights, roles_by_order, text

#: root groups of the object tree that are not layers (optimizer moments are conv-shaped!)
NOT_LAYERS = frozenset({"vars", "optimizer"})


def is_object_tree(f: h5py.File) -> bool:
    """Keras 3 always writes the model's own ``vars`` group (often empty) at the root."""
    return isinstance(f.get("vars"), h5py.Group) or isinstance(f.get("layers"), h5py.Group)


def _vars(group: h5py.Group) -> list[str]:
    v = group.get("vars")
    if not isinstance(v, h5py.Group):
        return []
    keys = sorted((k for k in v if k.isdigit()), key=int)
    return [f"{v.name}/{k}" for k in keys]


def tree_layers(
    f: h5py.File,
    base: str = "",
    prefix: tuple[str, ...] = (),
    fallback: Callable[[tuple[str, ...], str], str | None] | None = None,
) -> list[tuple[tuple[str, ...], str, list[str]]]:
    """(name path, group key, variable paths) for every layer group of the object tree.

    Layer lists are ``layers/<class_key>``; a subclassed model keeps its layers under their
    attribute names instead. The name is the ``vars`` group's ``name`` attribute; files from
    Keras versions that did not write it are matched through ``fallback(prefix, key)``.
    """
    out: list[tuple[tuple[str, ...], str, list[str]]] = []
    group = f[base] if base else f
    for key in group:
        sub = group[key]
        if not isinstance(sub, h5py.Group) or key == "vars" or (not base and key in NOT_LAYERS):
            continue
        path = f"{base}/{key}" if base else key
        if key == "layers" and "vars" not in sub:  # a container: its children are the layers
            out.extend(tree_layers(f, path, prefix, fallback))
            continue
        vars_group = sub.get("vars")
        named = isinstance(vars_group, h5py.Group) and "name" in vars_group.attrs
        name = (
            text(vars_group.attrs["name"]) if named else (fallback and fallback(prefix, key)) or key
        )
        out.append(((*prefix, name), key, _vars(sub)))
        out.extend(tree_layers(f, path, (*prefix, name), fallback))
    return out


def to_snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case: how Keras names a layer's group in the tree."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def tree_keys(model: KModel, lpath: tuple[str, ...]) -> dict[str, str]:
    """Object-tree key -> layer name for one container, as Keras' saving_lib assigns them."""
    used: dict[str, int] = {}
    keys: dict[str, str] = {}
    sequential = model.container_class.get(lpath) == "Sequential"
    for raw in model.children.get(lpath, ()):
        layer = model.layers["/".join((*lpath, raw))]
        if sequential and layer.class_name == "InputLayer":
            continue  # a Sequential model does not save its InputLayer
        key = to_snake_case(layer.class_name)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        keys[key] = raw
    return keys


def class_key_to_name(key: str) -> str:
    """``conv2d_transpose_3`` -> ``Conv2DTranspose`` for the classes convaudit reads."""
    return {to_snake_case(c): c for c in TREE_CLASSES}.get(re.sub(r"_\d+$", "", key), "")


def tree_with_config(f: h5py.File, model: KModel) -> tuple[dict[str, LayerWeights], list[str]]:
    """Match object-tree groups to config layers by their ``name`` attribute."""
    found: dict[str, LayerWeights] = {}
    problems: list[str] = []
    cache: dict[tuple[str, ...], dict[str, str]] = {}

    def fallback(prefix: tuple[str, ...], key: str) -> str | None:
        if prefix not in cache:
            cache[prefix] = tree_keys(model, prefix)
        return cache[prefix].get(key)

    for path, key, paths in tree_layers(f, fallback=fallback):
        name = "/".join(path)
        layer = model.layers.get(name)
        if not paths:
            continue
        if layer is None:
            problems.append(f"weights of {name!r} ({key}) match no layer of the config")
            continue
        roles = roles_by_order(layer.class_name, layer.config, len(paths))
        found[name] = LayerWeights(name, tuple(zip(roles, paths, strict=True)), key)
    return found, problems
