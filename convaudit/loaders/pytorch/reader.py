"""PyTorch files: state_dicts (zip and legacy), training dicts, safetensors, TorchScript, .pt2.

What each flavour yields (details in the sibling ``pytorch_*`` modules):
- ``.pt2`` (torch.export): geometry, input sizes and the real dataflow graph, from the graph.
- TorchScript: geometry from the scripted modules (traced: from the graph's constants), the
  graph from the inlined TorchScript graph; input sizes with --input-shape.
- state_dict / training dict / safetensors with ``--arch module:callable``: geometry and input
  sizes from one forward pass of the built architecture, the graph from torch.export of it.
- the same without --arch: every 3/4/5-D ``*.weight`` is ASSUMED a stride-1, unpadded,
  undilated, ungrouped conv of unknown input size, laid out as a chain; the output says so.
- a training checkpoint whose pickle names classes torch's weights-only reader refuses (a
  Lightning .ckpt's omegaconf hparams): its tensors by the restricted reader, every other object
  left an inert placeholder (nothing imported or run), and the notes name those classes.
- a full pickled nn.Module: only with trust_pickle (unpickling runs code from the file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from convaudit.errors import InputShapeError, ModelFileError
from convaudit.ir import ModelIR
from convaudit.loaders.interface import Loader, LoadOptions
from convaudit.loaders.pytorch.archive import StateDict, read_state_dict, sniff_kind


class PyTorchLoader(Loader):
    name: ClassVar[str] = "pytorch"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return sniff_kind(path, head) is not None

    def load(self, path: Path, options: LoadOptions) -> ModelIR:
        with open(path, "rb") as f:
            head = f.read(4096)
        kind = sniff_kind(path, head)
        if kind is None:
            raise ModelFileError(f"cannot read {path}: not a PyTorch file")
        _refuse_onnx_only_options(path, options)
        if kind == "pt2":
            from convaudit.loaders.pytorch.programs import read_exported

            return read_exported(path, options)
        if kind == "torchscript":
            from convaudit.loaders.pytorch.programs import read_torchscript

            return read_torchscript(path, options)
        content = read_state_dict(path, kind, trust_pickle=options.trust_pickle)
        if not isinstance(content, StateDict):
            from convaudit.loaders.pytorch.arch import read_module

            return read_module(
                content,
                path,
                options,
                "pickled-module",
                "full pickled nn.Module (loaded with --trust-pickle)",
            )
        if options.arch:
            from convaudit.loaders.pytorch.arch import read_with_arch

            ir = read_with_arch(content, path, options)
            return dataclasses.replace(ir, notes=(*content.notes, *ir.notes))
        from convaudit.loaders.pytorch.statedict import chain_graph, layers_from_state_dict

        layers, skipped, notes = layers_from_state_dict(content)
        if not layers and not skipped:
            raise ModelFileError(
                f"cannot read {path}: the state_dict holds no conv or dense weights ('*.weight' with 2 to 5 dims)"
            )
        graph = chain_graph(layers)
        return ModelIR(
            str(path),
            "pytorch",
            tuple(layers),
            tuple(skipped),
            graph=graph,
            notes=(*content.notes, *notes),
        )

    def write_kernels(self, ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
        from convaudit.loaders.pytorch.writer import write_kernels

        write_kernels(ir, dest, updates)


def _refuse_onnx_only_options(path: Path, options: LoadOptions) -> None:
    """--input-value and --input-size need a graph that declares its inputs; a PyTorch file's
    input is known only from --input-shape (or, for .pt2, from the exported program)."""
    if options.input_values:
        raise InputShapeError(
            f"--input-value is read for ONNX inputs; {path.name} is a PyTorch file",
            hint="leave --input-value out for this model",
        )
    if options.input_size is not None and not options.input_shapes:
        raise InputShapeError(
            f"--input-size needs the input's channel count, which {path.name} (a PyTorch "
            "file) does not declare",
            hint="give the full shape instead, e.g. --input-shape 1,3,224,224",
        )
