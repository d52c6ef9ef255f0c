"""Human-readable tables (rich), rendered to a string; the CLI decides where it goes."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from convaudit.analysis import LayerResult, ModelReport
from convaudit.engine.results import tol_text
from convaudit.ir import ConvLayer, ModelIR
from convaudit.report.interface import (
    RenderOptions,
    compact,
    describe_sigma,
    dims,
    short,
)

#: console width when the output is not a terminal: wide enough that no table wraps
NATURAL_WIDTH = 400


def to_text(renderables: Sequence[RenderableType], *, width: int | None, color: bool) -> str:
    """Render rich objects to a string (no ANSI codes unless ``color``)."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        # Not a terminal (a file, a pipe): every table at its natural width, never wrapped.
        width=width or NATURAL_WIDTH,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )
    for item in renderables:
        console.print(item)
    # rich pads titles and captions to the table's width: drop that, so files diff cleanly.
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def _pads(padding: Sequence[tuple[int, int]]) -> str:
    if not padding:
        return "-"
    if all(before == after for before, after in padding):
        return compact([before for before, _ in padding])
    return ",".join(f"{before}/{after}" for before, after in padding)


def _spectrum_row(result: LayerResult) -> list[str]:
    geo, spec = result.geometry, result.spectrum
    sigma = spec.sigma_max
    kind = result.kind
    if geo.transposed and "transpose" not in kind:
        kind += " (transposed)"
    if spec.bn_folded:
        kind += " +bn"
    if spec.status != "ok":
        kind += f" ({spec.status})"
    return [
        result.name,
        kind,
        dims(geo.kernel_shape),
        compact(geo.stride),
        compact(geo.dilation),
        str(geo.groups) if geo.stride else "-",
        dims(geo.input_size) if geo.stride else "-",
        short(None if sigma is None else sigma.value),
        describe_sigma(sigma),
        short(spec.sigma_min),
        short(spec.condition),
        short(spec.stable_rank),
    ]


def spectrum_renderables(report: ModelReport) -> list[RenderableType]:
    table = Table(
        title=f"{report.path} ({report.format})",
        title_justify="left",
        caption="* of the circular-padding operator on the σ_max grid: the layer itself if circular, "
        "else the paper's characterisation",
        caption_justify="left",
    )
    for header, justify in (
        ("layer", "left"),
        ("kind", "left"),
        ("kernel", "left"),
        ("stride", "right"),
        ("dil", "right"),
        ("groups", "right"),
        ("input", "right"),
        ("σ_max", "right"),
        ("σ_max is", "left"),
        ("σ_min*", "right"),
        ("cond*", "right"),
        ("stable rank*", "right"),
    ):
        table.add_column(header, justify=justify, no_wrap=header != "layer")  # type: ignore[arg-type]
    for result in report.layers:
        table.add_row(*_spectrum_row(result))
    out: list[RenderableType] = [table]
    for skipped in report.skipped:
        out.append(Text(f"skipped {skipped.name}: {skipped.reason}"))
    out.append(_summary_text(report))
    return out


def _summary_text(report: ModelReport) -> Text:
    summary = report.summary
    naive = summary.naive_product
    lines = [f"{summary.layers_analysed} layers analysed, {summary.layers_skipped} skipped"]
    precision = _precision_line(report)
    if precision:
        lines.append(precision)
    if summary.largest_sigma_max is not None:
        name, value = summary.largest_sigma_max
        lines.append(f"largest σ_max: {short(value)} ({name})")
    if naive.value is not None:
        lines.append(f"naive product of σ_max over {naive.factors} layers: {short(naive.value)}")
        lines.append(
            "  (not a certified network bound: skip connections are ignored; see `convaudit check`)"
        )
    lines.extend(f"note: {note}" for note in (*summary.notes, *report.notes))
    return Text("\n".join(lines))


_GUARANTEE_WORDS = (
    ("certified", "certified by their brackets"),
    ("converged", "converged (Lanczos)"),
    ("exact", "exact"),
    ("bound", "upper bounds only"),
)


def _precision_line(report: ModelReport) -> str:
    """How each σ_max holds, e.g. 'σ_max to 1e-4: 9 certified by their brackets, 2 exact'."""
    sigmas = [r.spectrum.sigma_max for r in report.layers if r.spectrum.sigma_max is not None]
    counts = {key: sum(s.guarantee == key for s in sigmas) for key, _ in _GUARANTEE_WORDS}
    parts = [f"{counts[key]} {words}" for key, words in _GUARANTEE_WORDS if counts[key]]
    if not parts:
        return ""
    return f"σ_max to {tol_text(report.options.tol)}: " + ", ".join(parts)


def render_spectrum_table(reports: Sequence[ModelReport], options: RenderOptions) -> str:
    renderables: list[RenderableType] = []
    for i, report in enumerate(reports):
        if i:
            renderables.append(Text(""))
        renderables.extend(spectrum_renderables(report))
    return to_text(renderables, width=options.width, color=options.color)


# --- `convaudit layers` -----------------------------------------------------------------------


def _provenance(layer: object) -> str:
    prov = getattr(layer, "provenance", None)
    if prov is None:
        return "-"
    layout = "" if prov.layout == "oihw" else f" [{prov.layout}]"
    return f"{prov.locator}{layout}"


def layers_renderables(ir: ModelIR) -> list[RenderableType]:
    table = Table(title=f"{ir.path} ({ir.format})", title_justify="left")
    for header in ("layer", "kind", "kernel", "stride", "dil", "groups", "padding", "input", "BN"):
        table.add_column(header)
    table.add_column("provenance", overflow="fold")
    for layer in ir.layers:
        if isinstance(layer, ConvLayer):
            mode = layer.padding_mode + (" (T)" if layer.transposed else "")
            table.add_row(
                layer.name,
                layer.kind,
                dims(layer.kernel.shape),
                compact(layer.stride),
                compact(layer.dilation),
                str(layer.groups),
                f"{mode} {_pads(layer.padding)}",
                dims(layer.input_size),
                "-" if layer.bn is None else (layer.bn.name or "yes"),
                _provenance(layer),
            )
        else:
            table.add_row(
                layer.name,
                layer.kind,
                dims(layer.weight.shape),
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                _provenance(layer),
            )
    out: list[RenderableType] = [table]
    if ir.input_shapes:
        shapes = ", ".join(
            f"{name or 'input'}={dims(shape, ',')}"
            for name, shape in sorted(ir.input_shapes.items())
        )
        out.append(Text(f"inputs: {shapes}"))
    out.extend(Text(f"skipped {s.name}: {s.reason}") for s in ir.skipped)
    out.extend(Text(f"note: {note}") for note in ir.notes)
    return out


def render_layers_table(
    irs: Sequence[ModelIR], *, width: int | None = None, color: bool = False
) -> str:
    renderables: list[RenderableType] = []
    for i, ir in enumerate(irs):
        if i:
            renderables.append(Text(""))
        renderables.extend(layers_renderables(ir))
    return to_text(renderables, width=width, color=color)


__all__ = ["render_layers_table", "render_spectrum_table", "to_text"]
