"""What every loader provides: sniff a file, read it into the IR, write new kernels back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from convaudit.ir import ModelIR


@dataclass(frozen=True)
class LoadOptions:
    """Options that change what a loader reads.

    ``input_shapes``: full input tensor shapes by input name (batch and channels included),
    e.g. ``{"x": (1, 3, 224, 224)}``; a single unnamed shape may use the key ``""``.
    ``input_size``: the spatial size (e.g. ``(640, 640)``) of the model's single image-like
    input; batch 1 and the channel count the graph declares complete its shape.
    ``input_values``: values of model inputs by name (e.g. ``{"sr": np.array(16000)}``); they
    fix those inputs' shapes and make what depends on them constant (an ``If`` condition).
    ``trust_pickle``: allow full unpickling (runs code from the file).
    ``arch``: ``module:callable`` building the architecture for a bare state_dict.
    """

    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    trust_pickle: bool = False
    arch: str | None = None
    input_size: tuple[int, ...] | None = None
    input_values: Mapping[str, np.ndarray] = field(default_factory=dict)


class Loader(ABC):
    """One model format. Subclasses live in one module each and import their framework lazily."""

    #: format name used in the IR and reports, e.g. "onnx"
    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        """True if the file's content (``head`` = its first 4 KiB) looks like this format."""

    @abstractmethod
    def load(self, path: Path, options: LoadOptions) -> ModelIR:
        """Read the file into the IR. Raise ModelFileError / InputShapeError on bad input."""

    @abstractmethod
    def write_kernels(self, ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
        """Write a copy of ``ir.path`` to ``dest`` with the kernels of the named layers replaced.

        ``updates`` maps layer name -> new kernel in the canonical layout of that layer
        (ConvLayer.kernel / DenseLayer.weight). Every other tensor, attribute and metadata entry
        must stay byte-identical where the format allows. ``dest`` is a temporary path chosen by
        the caller (atomic write); the writer just writes it. Never modify ``ir.path``.
        """
