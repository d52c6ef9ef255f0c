"""Keras files, read with h5py + json + zipfile only (never keras / tensorflow).

Flavours:
- legacy full model ``.h5`` / ``.hdf5`` (Keras 2, and Keras 3 ``model.save("x.h5")``):
  ``model_config`` attribute + ``/model_weights`` (``/optimizer_weights`` is ignored);
- legacy weights-only ``.h5``: ``layer_names`` at the root, no config;
- Keras 3 ``.keras`` zip: ``config.json`` + ``model.weights.h5`` (object tree);
- Keras 3 ``.weights.h5``: the object tree alone, no config.
Without a config the geometry is unknown: kernels are read with stride 1 assumed and no input
size, and every such layer says so in its notes.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np

from convaudit.errors import InputShapeError, ModelFileError
from convaudit.ir import ModelIR
from convaudit.loaders.interface import Loader, LoadOptions
from convaudit.loaders.keras import h5 as kh5
from convaudit.loaders.keras import tree as ktree
from convaudit.loaders.keras.build import NO_CONFIG_NOTE, build_with_config, build_without_config
from convaudit.loaders.keras.config import KModel, UnsupportedModelConfig, parse_model_config
from convaudit.loaders.keras.hdf5_probe import probe_hdf5
from convaudit.loaders.keras.layers import Context
from convaudit.loaders.keras.sniff import CONFIG_MEMBER, WEIGHTS_MEMBER, is_hdf5, sniff
from convaudit.loaders.safety import hdf5_errors, open_zip, read_zip_member


@dataclass
class _Opened:
    path: Path
    h5: h5py.File
    available: int  # bytes really present behind the HDF5 image
    config: bytes | str | None
    container: str  # "h5" or "keras-zip"
    version: str

    @property
    def where(self) -> str:
        """The file (and archive member) named in error messages."""
        return f"{self.path}" + (f" ({WEIGHTS_MEMBER})" if self.container == "keras-zip" else "")


@contextlib.contextmanager
def open_keras(path: Path) -> Iterator[_Opened]:
    """Open any Keras flavour; errors become ModelFileError."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if is_hdf5(head):
        probe_hdf5(path)
        try:
            h5 = h5py.File(path, "r")
        except OSError as exc:
            raise ModelFileError(
                f"cannot read {path}: truncated or corrupt HDF5 file ({exc})"
            ) from None
        # h5py reports damage lazily, on whichever read meets it first: every read made while
        # the file is open (here and in the caller's body) goes through hdf5_errors.
        with h5, hdf5_errors(path):
            config = h5.attrs.get("model_config")
            version = kh5.text(h5.attrs.get("keras_version", "?"))
            yield _Opened(path, h5, path.stat().st_size, config, "h5", version)
        return
    with open_zip(path) as zf:
        names = set(zf.namelist())
        if CONFIG_MEMBER not in names or WEIGHTS_MEMBER not in names:
            sharded = "model.weights.json" in names
            raise ModelFileError(
                f"cannot read {path}: a .keras archive needs {CONFIG_MEMBER} and {WEIGHTS_MEMBER}"
                + (" (sharded weights are not supported)" if sharded else ""),
            )
        config = read_zip_member(path, zf, CONFIG_MEMBER)
        data = read_zip_member(path, zf, WEIGHTS_MEMBER)
        meta = read_zip_member(path, zf, "metadata.json") if "metadata.json" in names else b"{}"
    probe_hdf5(path, data)
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as exc:
        raise ModelFileError(
            f"cannot read {path}: {WEIGHTS_MEMBER} is not a valid HDF5 file ({exc})"
        ) from None
    with h5, hdf5_errors(path, WEIGHTS_MEMBER):
        yield _Opened(path, h5, len(data), config, "keras-zip", _meta_version(meta))


def _meta_version(meta: bytes) -> str:
    try:
        return str(json.loads(meta).get("keras_version", "3"))
    except (ValueError, AttributeError):
        return "3"


class KerasLoader(Loader):
    name: ClassVar[str] = "keras"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return sniff(path, head)

    def load(self, path: Path, options: LoadOptions) -> ModelIR:
        if options.input_values:
            raise InputShapeError(
                f"--input-value is read for ONNX inputs; {path.name} is a Keras file",
                hint="leave --input-value out for this model",
            )
        with open_keras(path) as opened:
            return self._load(path, opened, options)

    def _load(self, path: Path, o: _Opened, options: LoadOptions) -> ModelIR:
        where = o.where
        extra = (("container", o.container),)

        def meta(p: str) -> tuple[tuple[int, ...], str]:
            ds = o.h5.get(p)
            if not isinstance(ds, h5py.Dataset):
                raise ModelFileError(f"cannot read {where}: dataset {p!r} is missing")
            return tuple(ds.shape), str(ds.dtype)

        ctx = Context(
            read=lambda p: kh5.read_array(o.h5, p, o.available, where),
            meta=meta,
            provenance_extra=extra,
        )
        try:
            model = parse_model_config(o.config) if o.config is not None else None
        except UnsupportedModelConfig as exc:
            model, subclassed = None, exc.message
        else:
            subclassed = ""
        try:
            if model is not None:
                layers, skipped, inputs, graph, notes = self._with_config(o, model, ctx, options)
            else:
                layers, skipped, notes = self._without_config(o, ctx)
                inputs, graph = {}, None
                notes = [subclassed, *notes] if subclassed else notes
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise ModelFileError(
                f"cannot read {where}: malformed Keras file ({type(exc).__name__}: {exc})"
            ) from None
        return ModelIR(
            path=str(path),
            format=self.name,
            layers=tuple(layers),
            skipped=tuple(skipped),
            input_shapes=inputs,
            graph=graph,
            notes=tuple(notes),
        )

    @staticmethod
    def _with_config(o: _Opened, model: KModel, ctx: Context, options: LoadOptions):
        legacy = kh5.legacy_root(o.h5)
        if legacy is not None:
            weights, problems = kh5.legacy_with_config(legacy, model)
            flavour = "legacy full-model HDF5"
        elif ktree.is_object_tree(o.h5):
            weights, problems = ktree.tree_with_config(o.h5, model)
            flavour = "Keras 3 .keras archive"
        else:
            raise ModelFileError(f"cannot read {o.where}: the model config comes without weights")
        layers, skipped, inputs, graph, notes = build_with_config(
            model, weights, ctx, options.input_shapes, options.input_size
        )
        return layers, skipped, inputs, graph, [f"{flavour} (Keras {o.version})", *problems, *notes]

    @staticmethod
    def _without_config(o: _Opened, ctx: Context):
        legacy = kh5.legacy_root(o.h5)
        if legacy is not None:
            weights = kh5.legacy_without_config(legacy)
            flavour = "legacy weights-only HDF5"
        elif ktree.is_object_tree(o.h5):
            weights = {
                "/".join(p): kh5.LayerWeights("/".join(p), tuple(("", v) for v in vs), key)
                for p, key, vs in ktree.tree_layers(o.h5)
                if vs
            }
            flavour = "Keras 3 object tree"
        else:
            raise ModelFileError(
                f"cannot read {o.where}: HDF5 file without Keras structure",
                hint="convaudit reads Keras .h5/.hdf5 models, .keras archives and .weights.h5 files",
            )
        layers, skipped = build_without_config(weights, ctx)
        return layers, skipped, [f"{flavour}: weights only, no usable model config", NO_CONFIG_NOTE]

    def write_kernels(self, ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
        from convaudit.loaders.keras.writer import write_kernels

        write_kernels(ir, dest, updates)
