"""The per-step series: one row per engine step, in memory up to a chunk, then spilled to disk.

A long run takes tens of millions of steps (the ``trace_1m`` benchmark: about 48 million), so
rows are appended as one tuple per step and, every ``STEP_CHUNK`` rows, moved to a part file in a
private temporary directory: typed arrays (framework names as codes) in a zstd-compressed Arrow
file, several times faster to write than a Parquet part built through pandas and about as small.
Tables are rebuilt part by part with the same dtypes, so a spilled series equals the one kept
whole; the run's ``steps.parquet`` is streamed from the parts.

With a bucket width (``metrics.step_series_bucket_s``) each chunk is reduced instead to mergeable
aggregates per framework and bucket of simulated time (:mod:`llmsim.metrics.step_buckets`), kept
in memory, and the series is the bucket table: its size follows the simulated time, not the steps.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import feather

from llmsim.metrics.step_buckets import merge_buckets, merge_partials, partial_buckets

STEP_COLUMNS = (
    "framework",
    "time_s",
    "duration_s",
    "num_seqs",
    "num_tokens",
    "num_prefill_tokens",
    "num_decode_seqs",
    "kv_blocks_used",
    "kv_blocks_total",
    "num_running",
    "num_waiting",
    "num_preempted",
)
#: columns after the framework and the two times: integer counts
COUNT_COLUMNS = STEP_COLUMNS[3:]
STEP_CHUNK = 200_000  # step rows kept in memory before they are spilled to a part file
_COMPACT_PARTIALS = 16  # bucketed series: chunks' partial aggregates merged into one table this often


class StepSeries:
    """Rows of engine steps, appended one at a time or as runs of decode steps.

    ``chunk_rows`` (default: :data:`STEP_CHUNK`, read when the series is made) bounds the rows in
    memory. ``bucket_s`` (seconds), if given, makes the series one row per framework and bucket of
    simulated time (:data:`~llmsim.metrics.step_buckets.BUCKET_COLUMNS`) instead of one per step.
    """

    def __init__(self, chunk_rows: int | None = None, bucket_s: float | None = None) -> None:
        if bucket_s is not None and not 0 < bucket_s < math.inf:
            raise ValueError(f"bucket_s must be a finite number of seconds > 0, got {bucket_s!r}")
        self.chunk_rows = chunk_rows or STEP_CHUNK
        self.bucket_s = bucket_s
        self._spilled_steps = 0  # steps moved out of ``rows`` (to part files or bucket partials)
        self._buckets: list[pd.DataFrame] = []  # bucketed series: each chunk's partial aggregates
        self.rows: list[tuple[Any, ...]] = []  # in memory: one tuple per step, columns in STEP_COLUMNS order
        self._parts: list[Path] = []
        self._part_names: list[list[str]] = []  # each part's framework names, by code
        self._spill_dir: tempfile.TemporaryDirectory | None = None

    @property
    def num_steps(self) -> int:
        """Steps appended so far (the rows of the series, unless it is bucketed)."""
        return self._spilled_steps + len(self.rows)

    def append(self, row: tuple[Any, ...]) -> None:
        """One step: a value per :data:`STEP_COLUMNS` entry, in that order."""
        self.rows.append(row)
        if len(self.rows) >= self.chunk_rows:
            self._spill()

    def extend(self, framework_id: str, starts: np.ndarray, durations: np.ndarray, counts: dict[str, Any]) -> None:
        """Several steps of one framework; a count given as a scalar repeats for every step."""
        steps = len(starts)
        columns = [
            value.tolist() if isinstance(value, np.ndarray) else repeat(value, steps)
            for value in (counts[name] for name in COUNT_COLUMNS)
        ]
        self.rows.extend(zip(repeat(framework_id, steps), starts.tolist(), durations.tolist(), *columns, strict=True))
        if len(self.rows) >= self.chunk_rows:
            self._spill()

    def parts(self) -> Iterator[pd.DataFrame]:
        """The series as tables: each framework's steps in the order they were taken, frameworks by name
        (bucketed: one table).

        Frameworks record steps independently (a steady decode stretch records its steps at once), so
        the recording order interleaves them in a way that depends on fast-forwarding; this order does not.
        """
        if self.bucket_s is not None:
            yield self.frame()
            return
        frameworks = sorted({*(name for names in self._part_names for name in names), *(row[0] for row in self.rows)})
        if len(frameworks) <= 1:
            yield from self._recorded_parts()
            return
        for framework in frameworks:  # each spilled part is read once per framework
            for part in self._recorded_parts():
                rows = part[part["framework"].to_numpy() == framework]
                if len(rows):
                    yield rows.reset_index(drop=True)

    def _recorded_parts(self) -> Iterator[pd.DataFrame]:
        """The series as recorded, oldest first: spilled parts, then the rows in memory."""
        for path, names in zip(self._parts, self._part_names, strict=True):
            table = feather.read_table(path)
            columns = {name: table.column(name).to_numpy() for name in STEP_COLUMNS}
            columns["framework"] = [names[code] for code in columns["framework"].tolist()]
            yield _frame(columns)
        if self.rows or not self._parts:
            yield _frame(self._columns())

    def frame(self) -> pd.DataFrame:
        """The whole series as one table."""
        if self.bucket_s is not None:
            if self.rows:
                self._reduce_to_buckets(final=True)
            return merge_buckets(self._buckets, self.bucket_s)
        parts = list(self.parts())
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def _columns(self) -> dict[str, Any]:
        """The rows in memory, column by column."""
        if not self.rows:
            return {name: [] for name in STEP_COLUMNS}
        return dict(zip(STEP_COLUMNS, zip(*self.rows, strict=True), strict=True))

    def _reduce_to_buckets(self, final: bool) -> None:
        """Aggregate the rows in memory into bucket partials; unless ``final``, each framework's last
        bucket stays in memory as rows, so that every bucket is summed in one pass (the chunking, and
        with several frameworks the order their steps were recorded in, cannot change a bit). A bucket
        with more steps than half a chunk is aggregated in pieces instead (still the same for the same
        config; only those buckets' float sums may then differ in the last bits with fast-forwarding)."""
        assert self.bucket_s is not None
        columns = self._columns()
        partial, held = partial_buckets(columns, self.bucket_s, hold_open=not final)
        if len(held) > self.chunk_rows // 2:
            partial, held = partial_buckets(columns, self.bucket_s)
        self._spilled_steps += len(self.rows) - len(held)
        self.rows = [self.rows[i] for i in held.tolist()]
        self._buckets.append(partial)
        if len(self._buckets) >= _COMPACT_PARTIALS:  # one table of partials, not one per chunk
            self._buckets = [merge_partials(self._buckets)]

    def _spill(self) -> None:
        if self.bucket_s is not None:
            self._reduce_to_buckets(final=False)
            return
        self._spilled_steps += len(self.rows)
        if self._spill_dir is None:
            self._spill_dir = tempfile.TemporaryDirectory(prefix="llmsim-steps-")
        path = Path(self._spill_dir.name) / f"part-{len(self._parts):05d}.arrow"
        arrays = _typed(self._columns())
        codes: dict[str, int] = {}
        arrays["framework"] = np.fromiter(
            (codes.setdefault(name, len(codes)) for name in arrays["framework"]), dtype=np.int32
        )
        feather.write_feather(pa.table(arrays), path, compression="zstd")
        self._parts.append(path)
        self._part_names.append(list(codes))
        self.rows = []


def _typed(columns: dict[str, Any]) -> dict[str, Any]:
    """Columns with their dtypes: float64 times, int64 counts (the framework column as given)."""
    typed = {"framework": columns["framework"]}
    typed["time_s"] = np.asarray(columns["time_s"], dtype=np.float64)
    typed["duration_s"] = np.asarray(columns["duration_s"], dtype=np.float64)
    for name in COUNT_COLUMNS:
        typed[name] = np.asarray(columns[name], dtype=np.int64)
    return typed


def _frame(columns: dict[str, Any]) -> pd.DataFrame:
    typed = _typed(columns)
    names = typed["framework"]
    typed["framework"] = pd.Series(names.tolist() if isinstance(names, np.ndarray) else list(names), dtype="str")
    return pd.DataFrame(typed, columns=list(STEP_COLUMNS))
