"""The step series in buckets of simulated time: one row per framework and bucket, not per step.

A long run takes tens of millions of engine steps; a timeline of it needs a few thousand points.
Steps are grouped by the bucket their start falls in. Aggregation happens in two stages so that a
series can be reduced chunk by chunk, in bounded memory: :func:`partial_buckets` turns a chunk of
steps into mergeable sums and maxima, and :func:`merge_buckets` combines the partials of every
chunk into the final table. A chunk may end inside a bucket: the step series holds that bucket's
steps back for the next chunk (``hold_open``), so float sums never depend on where chunks end.
Means are weighted by step duration, like the run summary's KV-cache usage and batch size.

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
    "time_s",
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


def partial_buckets(
    columns: Mapping[str, Any], bucket_s: float, origin: float = 0.0, hold_open: bool = False
) -> tuple[pd.DataFrame, np.ndarray]:
    """Mergeable aggregates of some steps (step-series columns: names as in ``STEP_COLUMNS``), and the
    rows left out.

    One row per (framework, bucket) with sums (levels as level x duration) and maxima; bucket ``k``
    holds the steps starting in ``[origin + k * bucket_s, origin + (k + 1) * bucket_s)``. With
    ``hold_open``, each framework's last bucket is left out (its steps are in time order, so only that
    one may go on in the next chunk) and the indices of its rows are returned, for the caller to
    aggregate with the next chunk: every bucket is then summed in one pass over its own steps,
    whatever the chunking, and so to the same bits.
    """
    names = columns["framework"]
    codes, frameworks = pd.factorize(names.array if isinstance(names, pd.Series) else np.asarray(names, dtype=object))
    bucket = bucket_index(np.asarray(columns["time_s"], dtype=np.float64), bucket_s, origin)
    held = np.empty(0, dtype=np.intp)
    take: np.ndarray | slice = slice(None)
    if hold_open and len(codes):
        last = np.full(len(frameworks), np.iinfo(np.int64).min)
        np.maximum.at(last, codes, bucket)
        is_open = bucket == last[codes]
        held = np.flatnonzero(is_open)
        take = ~is_open
    duration = np.asarray(columns["duration_s"], dtype=np.float64)[take]
    values: dict[str, np.ndarray] = {"steps": np.ones(len(duration), dtype=np.int64), "busy_s": duration}
    for name in SUM_COLUMNS:
        values[name] = np.asarray(columns[name], dtype=np.int64)[take]
    for name in LEVEL_COLUMNS:
        level = np.asarray(columns[name], dtype=np.int64)[take]
        values[f"{name}_s"] = level * duration
        values[f"{name}_max"] = level
    values["kv_blocks_total"] = np.asarray(columns["kv_blocks_total"], dtype=np.int64)[take]
    return _reduced(codes[take], np.asarray(frameworks, dtype=object), bucket[take], values), held


def bucket_index(times: np.ndarray, bucket_s: float, origin: float = 0.0) -> np.ndarray:
    """The bucket of each time: ``k`` with ``origin + k * bucket_s <= t < origin + (k + 1) * bucket_s``,
    computed as written (a step at 0.3 s is in bucket 3 of 0.1 s, although 0.3 / 0.1 < 3 in floats)."""
    scaled = np.floor((times - origin) / bucket_s)
    if len(scaled) and not np.abs(scaled).max() < 2**62:
        raise ValueError(f"bucket_s={bucket_s!r} s is too small for steps up to t={times.max()!r} s")
    index = scaled.astype(np.int64)
    index += origin + (index + 1) * bucket_s <= times  # the division rounded down across a boundary
    index -= origin + index * bucket_s > times  # or up
    return index


def merge_buckets(partials: Iterable[pd.DataFrame], bucket_s: float, origin: float = 0.0) -> pd.DataFrame:
    """The final bucket table (:data:`BUCKET_COLUMNS`) from the partials of every chunk, sorted by
    framework and time (``origin`` and ``bucket_s`` as given to :func:`partial_buckets`)."""
    merged = merge_partials(partials)
    if not len(merged):
        return _empty()
    busy = merged["busy_s"].to_numpy()
    table: dict[str, Any] = {
        "framework": merged["framework"],
        "time_s": origin + merged["bucket"].to_numpy() * bucket_s,
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
    frame = pd.DataFrame(table, columns=list(BUCKET_COLUMNS))
    frame.attrs["bucket_s"] = bucket_s
    return frame


def merge_partials(partials: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Several chunks' partial aggregates as one (a bucket found in two chunks becomes one row: the
    chunks' sums added in chunk order)."""
    frames = [frame for frame in partials if len(frame)]
    if len(frames) <= 1:
        return frames[0] if frames else pd.DataFrame()
    whole = pd.concat(frames, ignore_index=True)
    codes, names = pd.factorize(whole["framework"].array)
    values = {name: whole[name].to_numpy() for name in _MERGE}
    return _reduced(codes, np.asarray(names, dtype=object), whole["bucket"].to_numpy(), values)


def _reduced(
    codes: np.ndarray, names: np.ndarray, bucket: np.ndarray, values: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """Rows grouped by (framework, bucket), in framework-name then bucket order, each column reduced
    as :data:`_MERGE` says, adding in row order within a group (numpy only: no per-row table).

    Row ``i``'s framework is ``names[codes[i]]`` (codes in any order, as ``pd.factorize`` gives them).
    """
    by_name = np.argsort(names, kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[by_name] = np.arange(len(names))
    codes, names = rank[codes], names[by_name]  # codes now follow the names' order
    order = np.lexsort((bucket, codes))  # stable: rows of a group keep their order
    codes, bucket = codes[order], bucket[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (codes[1:] != codes[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(first)
    table: dict[str, Any] = {
        "framework": pd.Series(names[codes[starts]], dtype="str"),
        "bucket": bucket[starts],
    }
    for name, column in values.items():
        reduce = np.maximum.reduceat if _MERGE[name] == "max" else np.add.reduceat
        table[name] = reduce(column[order], starts) if len(starts) else column[:0]
    return pd.DataFrame(table)


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({name: np.array([], dtype=np.int64) for name in BUCKET_COLUMNS})
    frame["framework"] = pd.Series([], dtype="str")
    for name in ("time_s", "busy_s", *(f"{level}_mean" for level in LEVEL_COLUMNS)):
        frame[name] = frame[name].astype(np.float64)
    return frame
