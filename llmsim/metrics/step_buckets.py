"""The step series in buckets of simulated time: one row per framework and bucket, not per step.

A long run takes tens of millions of engine steps; a timeline of it needs a few thousand points.
Steps are grouped by the bucket their start falls in. Aggregation happens in two stages so that a
series can be reduced chunk by chunk, in bounded memory: :func:`partial_buckets` turns a chunk of
steps into mergeable sums and maxima, and :func:`merge_buckets` combines the partials of every
chunk (a bucket may span two chunks) into the final table. Means are weighted by step duration,
like the run summary's KV-cache usage and batch size.

Columns of the final table (:data:`BUCKET_COLUMNS`), besides ``framework``:

- ``time``: the bucket's start (simulated seconds); buckets without any step have no row;
- ``steps`` and ``busy_s``: steps started in the bucket, and their summed duration;
- ``num_tokens``, ``num_prefill_tokens``, ``num_decode_seqs``, ``num_preempted``: summed over its steps;
- ``*_mean`` (duration-weighted) and ``*_max`` of ``num_seqs``, ``kv_blocks_used``, ``num_running``
  and ``num_waiting``; ``kv_blocks_total`` (its largest value).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: step columns averaged over time (weighted by step duration) and also reported at their maximum
LEVEL_COLUMNS = ("num_seqs", "kv_blocks_used", "num_running", "num_waiting")
#: step columns summed over a bucket's steps
SUM_COLUMNS = ("num_tokens", "num_prefill_tokens", "num_decode_seqs", "num_preempted")
BUCKET_COLUMNS = (
    "framework",
    "time",
    "steps",
    "busy_s",
    *SUM_COLUMNS,
    *(f"{name}_{kind}" for name in LEVEL_COLUMNS for kind in ("mean", "max")),
    "kv_blocks_total",
)
#: how each partial column merges: sums add up, maxima take the largest
_MERGE: dict[str, str] = {
    "steps": "sum",
    "busy_s": "sum",
    **{name: "sum" for name in SUM_COLUMNS},
    **{f"{name}_s": "sum" for name in LEVEL_COLUMNS},
    **{f"{name}_max": "max" for name in LEVEL_COLUMNS},
    "kv_blocks_total": "max",
}


def partial_buckets(columns: Mapping[str, Any], bucket_s: float) -> pd.DataFrame:
    """Mergeable aggregates of some steps (step-series columns: names as in ``STEP_COLUMNS``).

    One row per (framework, bucket index) with sums (levels as level x duration) and maxima.
    """
    names = columns["framework"]
    duration = np.asarray(columns["duration"], dtype=np.float64)
    values: dict[str, np.ndarray] = {"steps": np.ones(len(duration), dtype=np.int64), "busy_s": duration}
    for name in SUM_COLUMNS:
        values[name] = np.asarray(columns[name], dtype=np.int64)
    for name in LEVEL_COLUMNS:
        level = np.asarray(columns[name], dtype=np.int64)
        values[f"{name}_s"] = level * duration
        values[f"{name}_max"] = level
    values["kv_blocks_total"] = np.asarray(columns["kv_blocks_total"], dtype=np.int64)
    bucket = np.floor(np.asarray(columns["time"], dtype=np.float64) / bucket_s).astype(np.int64)
    return _reduced(names.array if isinstance(names, pd.Series) else np.asarray(names, dtype=object), bucket, values)


def merge_buckets(partials: Iterable[pd.DataFrame], bucket_s: float) -> pd.DataFrame:
    """The final bucket table (:data:`BUCKET_COLUMNS`) from the partials of every chunk, sorted by
    framework and time."""
    merged = merge_partials(partials)
    if not len(merged):
        return _empty()
    busy = merged["busy_s"].to_numpy()
    table: dict[str, Any] = {
        "framework": merged["framework"],
        "time": merged["bucket"].to_numpy() * bucket_s,
        "steps": merged["steps"].to_numpy(),
        "busy_s": busy,
    }
    for name in SUM_COLUMNS:
        table[name] = merged[name].to_numpy()
    for name in LEVEL_COLUMNS:
        weighted = merged[f"{name}_s"].to_numpy()
        # a bucket whose steps all took no time (none do in practice) has no time-weighted mean
        table[f"{name}_mean"] = np.divide(weighted, busy, out=np.full(len(busy), np.nan), where=busy > 0)
        table[f"{name}_max"] = merged[f"{name}_max"].to_numpy()
    table["kv_blocks_total"] = merged["kv_blocks_total"].to_numpy()
    return pd.DataFrame(table, columns=list(BUCKET_COLUMNS))


def merge_partials(partials: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Several chunks' partial aggregates as one (a bucket in two chunks becomes one row)."""
    frames = [frame for frame in partials if len(frame)]
    if len(frames) <= 1:
        return frames[0] if frames else pd.DataFrame()
    whole = pd.concat(frames, ignore_index=True)
    return _reduced(whole["framework"].array, whole["bucket"].to_numpy(), {n: whole[n].to_numpy() for n in _MERGE})


def _reduced(frameworks: Any, bucket: np.ndarray, values: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Rows grouped by (framework, bucket), in framework-name then bucket order, each column reduced
    as :data:`_MERGE` says, adding in row order within a group (numpy only: no per-row table)."""
    codes, names = pd.factorize(frameworks, sort=True)
    order = np.lexsort((bucket, codes))  # stable: rows of a group keep their order
    codes, bucket = codes[order], bucket[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (codes[1:] != codes[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(first)
    table: dict[str, Any] = {
        "framework": pd.Series(np.asarray(names, dtype=object)[codes[starts]], dtype="str"),
        "bucket": bucket[starts],
    }
    for name, column in values.items():
        reduce = np.maximum.reduceat if _MERGE[name] == "max" else np.add.reduceat
        table[name] = reduce(column[order], starts) if len(starts) else column[:0]
    return pd.DataFrame(table)


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({name: np.array([], dtype=np.int64) for name in BUCKET_COLUMNS})
    frame["framework"] = pd.Series([], dtype="str")
    for name in ("time", "busy_s", *(f"{level}_mean" for level in LEVEL_COLUMNS)):
        frame[name] = frame[name].astype(np.float64)
    return frame
