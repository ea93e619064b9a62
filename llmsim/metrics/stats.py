"""Statistics on samples given as (value, count) pairs, matching numpy on the expanded array."""

from __future__ import annotations

import numpy as np


def weighted_percentiles(values: np.ndarray, counts: np.ndarray, percents: list[float]) -> list[float]:
    """``np.percentile(np.repeat(values, counts), percents)`` (linear interpolation) without expanding."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    c = counts[order]
    cum = np.cumsum(c)
    n = int(cum[-1])
    out = []
    for p in percents:
        position = p / 100.0 * (n - 1)
        low = int(np.floor(position))
        high = min(low + 1, n - 1)
        v_low = v[np.searchsorted(cum, low, side="right")]
        v_high = v[np.searchsorted(cum, high, side="right")]
        out.append(float(v_low + (v_high - v_low) * (position - low)))
    return out


def weighted_mean_std(values: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation of the expanded sample."""
    total = counts.sum()
    mean = float((values * counts).sum() / total)
    var = float((counts * (values - mean) ** 2).sum() / total)
    return mean, var**0.5
