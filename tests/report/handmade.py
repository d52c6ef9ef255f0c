"""Hand-built ModelReports for reporter tests (rendering only: no numbers are checked here)."""

from __future__ import annotations

import numpy as np

from convaudit.analysis import AnalysisOptions, LayerGeometry, LayerResult, ModelReport, summarise
from convaudit.engine.results import LayerSpectrum, NormResult
from convaudit.ir import SkippedLayer


def _conv_result(name: str, n_layers: int, depth: int, *, exact: bool = True) -> LayerResult:
    values = np.sort(np.linspace(0.05, 1.0 + depth / n_layers, 64) ** (1 + depth % 3))[::-1]
    sigma = NormResult(
        value=float(values[0]) * (1.0 if exact else 1.04),
        lower=float(values[0]),
        upper=float(values[0]) * (1.0 if exact else 1.04),
        exact=exact,
        quantity="exact" if exact else "upper-bound",
        operator="zeros" if exact else "any-size",
        grid=(8, 8) if exact else None,
        method="lanczos" if exact else "frequency-grid",
        iterations=12 if exact else 0,
    )
    return LayerResult(
        name=name,
        kind="conv",
        geometry=LayerGeometry(
            kernel_shape=(4, 4, 3, 3),
            stride=(1, 1),
            dilation=(1, 1),
            groups=1,
            padding_mode="zeros",
            padding=((1, 1), (1, 1)),
            input_size=(8, 8) if exact else None,
            bn="bn" if depth == 0 else None,
        ),
        spectrum=LayerSpectrum(
            name=name,
            kind="conv",
            sigma_max=sigma,
            singular_values=values,
            spectrum_operator="circular",
            spectrum_grid=(8, 8),
            sigma_min=float(values[-1]),
            condition=float(values[0] / values[-1]),
            stable_rank=float((values**2).sum() / values[0] ** 2),
        ),
    )


def handmade_report(n_layers: int = 3, path: str = "models/handmade.onnx") -> ModelReport:
    results = [_conv_result(f"conv{i}", n_layers, i, exact=i % 4 != 3) for i in range(n_layers)]
    dense = LayerResult(
        name="head",
        kind="dense",
        geometry=LayerGeometry(kernel_shape=(10, 4)),
        spectrum=LayerSpectrum(
            name="head",
            kind="dense",
            sigma_max=NormResult(2.0, 2.0, 2.0, True, "exact", "dense", None, "svd"),
        ),
    )
    results.append(dense)
    skipped = [SkippedLayer("loop/conv", "conv inside a Loop subgraph", op="Conv")]
    options = AnalysisOptions()
    return ModelReport(
        path=path,
        format="onnx",
        input_shapes={"input": (1, 3, 8, 8)},
        layers=tuple(results),
        skipped=tuple(skipped),
        summary=summarise(results, skipped, options),
        options=options,
        notes=("handmade for tests",),
    )
