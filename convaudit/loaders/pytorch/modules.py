"""IR layers from live torch modules (nn.Conv*/ConvTranspose*/Linear/BatchNorm*).

Works for eager ``nn.Module`` objects and for scripted TorchScript submodules, which keep the
same attributes (``stride``, ``padding``, ``padding_mode``, ...). Traced TorchScript modules do
not: their geometry comes from the graph (pytorch_calls).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convaudit.ir import BatchNormParams, ConvLayer, DenseLayer, Provenance

CONV_CLASSES = {
    "Conv1d": 1, "Conv2d": 2, "Conv3d": 3,
    "ConvTranspose1d": 1, "ConvTranspose2d": 2, "ConvTranspose3d": 3,
}  # fmt: skip
BN_CLASSES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


def class_name(module: Any) -> str:
    """``Conv2d`` for an eager module and for its scripted or traced counterpart."""
    return str(getattr(module, "original_name", None) or type(module).__name__)


def to_numpy(tensor: Any) -> np.ndarray:
    """A numpy copy; half and bfloat16 widen to float32 (numpy has no bfloat16)."""
    t = tensor.detach().cpu()
    if t.is_floating_point() and t.element_size() < 4:
        t = t.float()
    return np.array(t.numpy())


def dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def provenance(
    key: str, tensor: Any, container: str, layout: str = "oihw", **extra: str
) -> Provenance:
    items = {"container": container, **extra}
    return Provenance("pytorch", key, layout, dtype_name(tensor), tuple(sorted(items.items())))


def torch_same_padding(
    kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[tuple[int, int], ...]:
    """PyTorch's padding='same' (stride 1): total d(k-1), the odd pixel goes after."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    return tuple((t // 2, t - t // 2) for t in totals)


def conv_from_module(
    name: str,
    module: Any,
    *,
    container: str,
    input_size: tuple[int, ...] | None = None,
    extra: dict[str, str] | None = None,
) -> ConvLayer:
    weight = module.weight
    nd = weight.dim() - 2
    kernel = tuple(int(k) for k in weight.shape[2:])
    dilation = tuple(int(d) for d in module.dilation)
    padding_attr = module.padding
    if isinstance(padding_attr, str):
        spec = padding_attr
        pads = torch_same_padding(kernel, dilation) if spec == "same" else ((0, 0),) * nd
    else:
        spec = "explicit"
        pads = tuple((int(p), int(p)) for p in padding_attr)
    transposed = bool(module.transposed)
    bias = getattr(module, "bias", None)
    return ConvLayer(
        name=name,
        kernel=to_numpy(weight),
        stride=tuple(int(s) for s in module.stride),
        dilation=dilation,
        padding=pads,
        groups=int(module.groups),
        padding_mode=str(module.padding_mode),  # type: ignore[arg-type]
        padding_spec=spec,
        transposed=transposed,
        output_padding=tuple(int(p) for p in module.output_padding) if transposed else (),
        input_size=input_size,
        bias=None if bias is None else to_numpy(bias),
        provenance=provenance(
            f"{name}.weight" if name else "weight", weight, container, **(extra or {})
        ),
    )


def dense_from_module(
    name: str, module: Any, *, container: str, extra: dict[str, str] | None = None
) -> DenseLayer:
    bias = getattr(module, "bias", None)
    return DenseLayer(
        name=name,
        weight=to_numpy(module.weight),
        bias=None if bias is None else to_numpy(bias),
        provenance=provenance(
            f"{name}.weight" if name else "weight", module.weight, container, "oi", **(extra or {})
        ),
    )


def bn_params(
    name: str, weight: Any, bias: Any, mean: Any, var: Any, eps: float
) -> BatchNormParams:
    """Eval-mode BN; a missing affine weight/bias means gamma=1, beta=0."""
    m = to_numpy(mean)
    return BatchNormParams(
        gamma=np.ones_like(m) if weight is None else to_numpy(weight),
        beta=np.zeros_like(m) if bias is None else to_numpy(bias),
        mean=m,
        var=to_numpy(var),
        eps=float(eps),
        name=name,
    )


def bn_from_module(name: str, module: Any) -> BatchNormParams | None:
    """None when the BN keeps no running statistics (it then normalises by batch statistics)."""
    mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
    if mean is None or var is None:
        return None
    return bn_params(
        name, getattr(module, "weight", None), getattr(module, "bias", None), mean, var, module.eps
    )
