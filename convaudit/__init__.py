"""convaudit: exact singular values of convolutional layers (Sedghi, Gupta & Long, ICLR 2019).

Public API (imported lazily, so ``import convaudit`` stays light):

- ``load(path, *, input_shapes=None, input_size=None, input_values=None, trust_pickle=False,
  arch=None) -> ModelIR``
- ``analyse(ir, ...) -> ModelReport``; ``analyse_models(irs, ...)`` for several as one batch
- ``singular_values(weight, input_size, ...) -> numpy.ndarray``
- ``operator_norm(weight, input_size, ...) -> NormResult``
- ``clip(path, bound, ...)``: project every conv onto the operator-norm ball and write a copy
- ``convaudit.torch.project_(module, bound, input_shape=...)``: the training-time projection
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "singular_values": ("convaudit.engine.api", "singular_values"),
    "operator_norm": ("convaudit.engine.api", "operator_norm"),
    "analyse": ("convaudit.analysis", "analyse"),
    "analyse_models": ("convaudit.analysis", "analyse_models"),
    "clip": ("convaudit.clipping", "clip_model"),
    "ModelIR": ("convaudit.ir", "ModelIR"),
    "ConvLayer": ("convaudit.ir", "ConvLayer"),
    "DenseLayer": ("convaudit.ir", "DenseLayer"),
    "NormResult": ("convaudit.engine.results", "NormResult"),
    "LayerSpectrum": ("convaudit.engine.results", "LayerSpectrum"),
    "ConvauditError": ("convaudit.errors", "ConvauditError"),
}


def load(
    path: Any,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    input_size: tuple[int, ...] | None = None,
    input_values: dict[str, Any] | None = None,
    trust_pickle: bool = False,
    arch: str | None = None,
) -> Any:
    """Read a model file (ONNX, PyTorch or Keras, detected from its content) into the IR.

    ``input_size``: the spatial size of the one image-like input (batch 1, channels from the
    graph); ``input_values``: values of ONNX inputs (arrays or numbers), e.g. ``{"sr": 16000}``.
    """
    import numpy as np

    from convaudit.loaders import LoadOptions, load_model

    options = LoadOptions(
        input_shapes=dict(input_shapes or {}),
        trust_pickle=trust_pickle,
        arch=arch,
        input_size=None if input_size is None else tuple(int(d) for d in input_size),
        input_values={k: np.asarray(v) for k, v in (input_values or {}).items()},
    )
    return load_model(path, options)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'convaudit' has no attribute {name!r}")


__all__ = ["__version__", "load", *_LAZY]
