"""PyTorch files: state_dicts (zip and legacy), training dicts, safetensors, TorchScript, .pt2.

What each flavour yields (details in the sibling ``pytorch_*`` modules):
- ``.pt2`` (torch.export): geometry, input sizes and the real dataflow graph, from the graph.
- TorchScript: geometry from the scripted modules (traced: from the graph's constants), the
  graph from the inlined TorchScript graph; input sizes with --input-shape.
- state_dict / training dict / safetensors with ``--arch module:callable``: geometry and input
  sizes from one forward pass of the built architecture, the graph from torch.export of it.
- the same without --arch: every 3/4/5-D ``*.weight`` is ASSUMED a stride-1, unpadded,
  undilated, ungrouped conv of unknown input size, laid out as a chain; the output says so.
- a full pickled nn.Module: only with trust_pickle (unpickling runs code from the file).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from convaudit.errors import ModelFileError
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

            return read_with_arch(content, path, options)
        from convaudit.loaders.pytorch.statedict import chain_graph, layers_from_state_dict

        layers, skipped, notes = layers_from_state_dict(content)
        if not layers and not skipped:
            raise ModelFileError(
                f"cannot read {path}: the state_dict holds no conv or dense weights ('*.weight' with 2 to 5 dims)"
            )
        graph = chain_graph(layers)
        return ModelIR(
            str(path), "pytorch", tuple(layers), tuple(skipped), graph=graph, notes=tuple(notes)
        )

    def write_kernels(self, ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
        from convaudit.loaders.pytorch.writer import write_kernels

        write_kernels(ir, dest, updates)
