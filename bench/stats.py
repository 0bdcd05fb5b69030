"""Small statistics helpers (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100); None for an empty list."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * (p / 100.0)
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return data[lo]
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def latency_summary(seconds: Iterable[float], prefix: str) -> dict[str, float | None]:
    """p50/p99/max of a list of durations in seconds, reported in milliseconds."""
    data = list(seconds)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 3)

    return {
        f"{prefix}_p50_ms": ms(percentile(data, 50)),
        f"{prefix}_p99_ms": ms(percentile(data, 99)),
        f"{prefix}_max_ms": ms(max(data) if data else None),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return None
    if b == 0:
        return None
    return float(f"{a / b:.4g}")  # 4 significant digits: tiny ratios must not round to 0
