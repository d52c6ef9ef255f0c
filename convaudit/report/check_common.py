"""What the ``check`` reporters share: the network bound's summary lines."""

from __future__ import annotations

import math

from convaudit.gate.findings import ModelCheck


def network_summary(model: ModelCheck) -> str:
    """One line: graph bound, naive product (labelled), empirical lower bound, gap."""
    return "; ".join(network_lines(model))


def network_lines(model: ModelCheck) -> list[str]:
    """Graph bound, naive product (labelled), empirical lower bound and gap, one per item."""
    parts = []
    bound = model.network
    if bound is None:
        parts.append(f"graph bound: not available ({model.network_error})")
    else:
        parts.append(f"graph bound: {bound.describe()}")
        parts.append(
            f"naive product {bound.naive_product:.6g} (naive; not a bound with skip connections)"
        )
    if model.empirical is not None:
        parts.append(f"empirical lower bound {model.empirical.value:.6g}")
    elif model.empirical_error:
        parts.append(f"empirical lower bound: not run ({model.empirical_error})")
    gap = model.gap
    if gap is not None:
        parts.append("gap (upper / lower) " + ("inf" if math.isinf(gap) else f"{gap:.3g}x"))
    return parts


__all__ = ["network_lines", "network_summary"]
