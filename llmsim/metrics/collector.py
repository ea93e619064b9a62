"""MetricsCollector: columnar per-request records, per-step series and pooled inter-token gaps.

Memory stays bounded on long runs: nothing is stored per token — inter-token gaps are pooled as
(gap, count) pairs at microsecond resolution, so their number is bounded by the distinct gaps, not
the tokens; the per-step series (:mod:`llmsim.metrics.step_series`, kept when the run writes it or
``metrics.record_step_series`` asks) is spilled to disk in chunks; the step statistics the summary
needs (time-weighted means, maxima) are accumulated as steps arrive, series or not.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import simpy

from llmsim.config import MetricsConfig
from llmsim.errors import LLMSimError
from llmsim.metrics.step_series import StepSeries
from llmsim.workload.request import Request

REQUEST_COLUMNS = (
    "framework",
    "request_id",
    "session_id",
    "turn",
    "profile",
    "streaming",
    "status",
    "reason",
    "send_time_s",
    "arrival_time_s",
    "first_scheduled_time_s",
    "first_token_time_s",
    "completion_time_s",
    "prompt_tokens",
    "cached_prompt_tokens",
    "output_tokens",
    "max_output_tokens",
    "preemptions",
)
#: numeric request columns and their dtypes (the others are strings)
REQUEST_DTYPES: dict[str, type] = {
    "request_id": np.int64,
    "session_id": np.int64,
    "turn": np.int64,
    "streaming": np.bool_,
    "send_time_s": np.float64,
    "arrival_time_s": np.float64,
    "first_scheduled_time_s": np.float64,
    "first_token_time_s": np.float64,
    "completion_time_s": np.float64,
    "prompt_tokens": np.int64,
    "cached_prompt_tokens": np.int64,
    "output_tokens": np.int64,
    "max_output_tokens": np.int64,
    "preemptions": np.int64,
}
#: how numeric request columns are held while recording: packed machine values (8 bytes, 1 for a
#: flag) rather than a Python object each, about 150 bytes a request in all
_TYPECODES = {np.int64: "q", np.float64: "d", np.bool_: "b"}
#: Scheduler events counted per framework: vLLM preemption (recompute), vLLM v0 swap-out,
#: SGLang retraction, TensorRT-LLM pausing (MAX_UTILIZATION).
EVENT_KINDS = ("preempted", "swapped_out", "retracted", "paused")


ITL_TICKS_PER_S = 1_000_000  # inter-token gaps are pooled as whole microseconds (they are milliseconds)


class StepStats:
    """Running aggregates of one framework's steps (what the summary needs from the series)."""

    __slots__ = ("batch_max", "batch_weighted", "count", "duration", "kv_max", "kv_weighted", "waiting_weighted")

    def __init__(self) -> None:
        self.count = 0
        self.duration = self.kv_weighted = self.kv_max = 0.0
        self.batch_weighted = self.waiting_weighted = 0.0
        self.batch_max = 0

    def add(self, duration: float, num_seqs: int, kv_used: int, kv_total: int, waiting: int) -> None:
        usage = kv_used / kv_total if kv_total else 0.0
        self.count += 1
        self.duration += duration
        self.kv_weighted += usage * duration
        self.kv_max = max(self.kv_max, usage)
        self.batch_weighted += num_seqs * duration
        self.batch_max = max(self.batch_max, num_seqs)
        self.waiting_weighted += waiting * duration

    def add_many(self, durations: np.ndarray, num_seqs: int, kv_used: np.ndarray, kv_total: int, waiting: int) -> None:
        """:meth:`add` for several steps, in the same order (sums identical to adding them one by one)."""
        total, kv_weighted, kv_max = self.duration, self.kv_weighted, self.kv_max
        batch_weighted, waiting_weighted = self.batch_weighted, self.waiting_weighted
        for duration, used in zip(durations.tolist(), kv_used.tolist(), strict=True):
            usage = used / kv_total if kv_total else 0.0
            total += duration
            kv_weighted += usage * duration
            if usage > kv_max:
                kv_max = usage
            batch_weighted += num_seqs * duration
            waiting_weighted += waiting * duration
        self.count += len(durations)
        self.duration, self.kv_weighted, self.kv_max = total, kv_weighted, kv_max
        self.batch_weighted, self.waiting_weighted = batch_weighted, waiting_weighted
        self.batch_max = max(self.batch_max, num_seqs)


class MetricsCollector:
    """Collects what the frameworks report; summaries come from :mod:`llmsim.metrics.summary`."""

    def __init__(self, simpy_env: simpy.Environment, metrics_config: MetricsConfig) -> None:
        self.env = simpy_env
        self.config = metrics_config
        self.requests: dict[str, Any] = {
            name: array(_TYPECODES[REQUEST_DTYPES[name]]) if name in REQUEST_DTYPES else [] for name in REQUEST_COLUMNS
        }
        record_series = metrics_config.record_step_series
        if record_series is None:
            record_series = metrics_config.output_steps_parquet_path is not None
        #: the per-step series (None when neither the run's files nor the caller asked for it)
        self.step_series: StepSeries | None = (
            StepSeries(bucket_s=metrics_config.step_series_bucket_s) if record_series else None
        )
        self._itl: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.events: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(EVENT_KINDS, 0))
        self.frameworks: list[str] = []
        self.framework_info: dict[str, dict[str, Any]] = {}
        self.step_stats: dict[str, StepStats] = defaultdict(StepStats)
        self._request_df: pd.DataFrame | None = None
        self._request_df_rows = -1
        #: (start, end) s in which the workload sends new sessions, where its config fixes one (open
        #: loop: warm-up end to total_duration); None: measured from the first turns' send times
        self.arrival_window_s: tuple[float, float] | None = None

    def register_framework(self, framework_id: str, info: dict[str, Any]) -> None:
        """Declare a framework so it appears in the summary even if it served nothing."""
        if framework_id not in self.frameworks:
            self.frameworks.append(framework_id)
        self.framework_info[framework_id] = info

    # ---- recording -----------------------------------------------------------------------------
    def record_request(self, request: Request, status: str | None = None) -> None:
        """Append one request's final record (completed, rejected or incomplete)."""
        spec = request.spec
        row = self.requests
        row["framework"].append(request.framework_id)
        row["request_id"].append(spec.request_id)
        row["session_id"].append(spec.session_id)
        row["turn"].append(spec.turn)
        row["profile"].append(spec.profile)
        row["streaming"].append(spec.streaming)
        row["status"].append(status or request.status)
        row["reason"].append(request.reason)
        row["send_time_s"].append(request.send_time)
        row["arrival_time_s"].append(request.arrival_time)
        row["first_scheduled_time_s"].append(request.first_scheduled_time)
        row["first_token_time_s"].append(request.client_first_token_time)
        row["completion_time_s"].append(request.client_completion_time)
        row["prompt_tokens"].append(spec.prompt_tokens)
        row["cached_prompt_tokens"].append(max(request.num_cached_tokens, 0))
        row["output_tokens"].append(request.num_output_tokens)
        row["max_output_tokens"].append(spec.max_output_tokens)
        row["preemptions"].append(request.preemptions)

    def record_itl(self, framework_id: str, request: Request, gap: float) -> None:
        """Pool one gap between consecutive streamed chunks at the client (one token each unless
        ``stream_chunk_tokens`` > 1); requests sent during warm-up are excluded."""
        if request.send_time >= self.config.warm_up_duration_s:
            self._itl[framework_id][int(gap * ITL_TICKS_PER_S + 0.5)] += 1

    def record_itl_count(self, framework_id: str, gap: float, count: int) -> None:
        """Pool ``count`` occurrences of one gap (lazy decoders: every one streamed a token this step)."""
        self._itl[framework_id][int(gap * ITL_TICKS_PER_S + 0.5)] += count

    def record_itl_bulk(self, framework_id: str, gaps: np.ndarray, count: int) -> None:
        """Pool ``count`` occurrences of each gap (a closed-form decode stretch: every streamed request alike)."""
        pooled = self._itl[framework_id]
        for gap in np.floor(gaps * ITL_TICKS_PER_S + 0.5).astype(np.int64).tolist():
            pooled[gap] += count

    def count_event(self, framework_id: str, kind: str) -> None:
        """Count one scheduler event (``preempted``, ``swapped_out``, ``retracted``, ``paused``)."""
        self.events[framework_id][kind] += 1

    def record_step(
        self,
        framework_id: str,
        time: float,
        duration: float,
        num_seqs: int,
        num_tokens: int,
        num_prefill_tokens: int,
        num_decode_seqs: int,
        kv_blocks_used: int,
        kv_blocks_total: int,
        num_running: int,
        num_waiting: int,
        num_preempted: int,
    ) -> None:
        """Account one engine step (and append it to the step series if one is kept)."""
        self.step_stats[framework_id].add(duration, num_seqs, kv_blocks_used, kv_blocks_total, num_waiting)
        if self.step_series is not None:
            self.step_series.append(
                (
                    framework_id,
                    time,
                    duration,
                    num_seqs,
                    num_tokens,
                    num_prefill_tokens,
                    num_decode_seqs,
                    kv_blocks_used,
                    kv_blocks_total,
                    num_running,
                    num_waiting,
                    num_preempted,
                )
            )

    def record_steps(self, framework_id: str, starts: np.ndarray, durations: np.ndarray, **values: Any) -> None:
        """Account several engine steps at once (columns given as scalars repeat for every step)."""
        used = values["kv_blocks_used"]
        self.step_stats[framework_id].add_many(
            durations,
            values["num_seqs"],
            used if isinstance(used, np.ndarray) else np.full(len(starts), used),
            values["kv_blocks_total"],
            values["num_waiting"],
        )
        if self.step_series is not None:
            self.step_series.extend(framework_id, starts, durations, values)

    def step_parts(self) -> Iterator[pd.DataFrame]:
        """The step series in pieces (see :meth:`StepSeries.parts`), read one at a time (for streaming writers)."""
        return self._series().parts()

    def _series(self) -> StepSeries:
        if self.step_series is None:
            raise LLMSimError(
                "the step series was not recorded: set metrics.record_step_series=true "
                "(it is kept by default only when metrics.output_steps_parquet_path is set)"
            )
        return self.step_series

    # ---- tables --------------------------------------------------------------------------------
    def get_all_request_metrics_df(self) -> pd.DataFrame:
        """One row per request with client-side latencies in ms (NaN where not applicable).

        Built once per set of records (the summary and the output files share it); callers get a
        shallow copy, so adding a column to theirs leaves the others' alone.
        """
        rows = len(self.requests["request_id"])
        if self._request_df is None or self._request_df_rows != rows:
            self._request_df, self._request_df_rows = self._request_metrics_df(), rows
        return self._request_df.copy(deep=False)

    def _request_metrics_df(self) -> pd.DataFrame:
        """The request table, sorted by framework and request id, built in that order: each recorded
        column is read in place and copied once, already sorted (a million requests make the table
        while the records are still held, so every extra copy counts)."""
        columns = self.requests
        codes, _ = pd.factorize(np.asarray(columns["framework"], dtype=object), sort=True)
        order = np.lexsort((self._column_view("request_id"), codes))
        table: dict[str, Any] = {}
        for name in REQUEST_COLUMNS:
            if name in REQUEST_DTYPES:
                table[name] = self._column_view(name)[order]
            else:
                strings = columns[name]
                table[name] = pd.Series([strings[i] for i in order.tolist()], dtype="str")
        done = table["status"].to_numpy() == "completed"
        send = table["send_time_s"]
        ttft = np.where(done, (table["first_token_time_s"] - send) * 1e3, np.nan)
        e2el = np.where(done, (table["completion_time_s"] - send) * 1e3, np.nan)
        output_tokens = table["output_tokens"]
        # TPOT needs token timing at the client: streamed requests with more than one token only.
        multi = done & table["streaming"] & (output_tokens > 1)
        table["ttft_ms"] = ttft
        table["e2el_ms"] = e2el
        table["tpot_ms"] = np.where(multi, (e2el - ttft) / np.maximum(output_tokens - 1, 1), np.nan)
        table["queue_ms"] = (table["first_scheduled_time_s"] - table["arrival_time_s"]) * 1e3
        return pd.DataFrame(table, copy=False)

    def _column_view(self, name: str) -> np.ndarray:
        """A numeric request column as an array over its packed record (no copy: index it, do not keep it,
        or the record cannot grow)."""
        return np.frombuffer(self.requests[name], dtype=REQUEST_DTYPES[name])

    def get_step_series_df(self) -> pd.DataFrame:
        """One row per engine step, spilled parts included (with ``metrics.step_series_bucket_s``: one
        row per framework and bucket, :data:`~llmsim.metrics.step_buckets.BUCKET_COLUMNS`)."""
        return self._series().frame()

    def itl_samples(self, framework_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Pooled inter-token gaps (seconds) and their counts for a framework."""
        pooled = self._itl.get(framework_id, {})
        values = np.fromiter(pooled.keys(), dtype=np.float64, count=len(pooled)) / ITL_TICKS_PER_S
        counts = np.fromiter(pooled.values(), dtype=np.int64, count=len(pooled))
        order = np.argsort(values, kind="stable")  # sums then do not depend on the order gaps were seen
        return values[order], counts[order]

    def generate_summary_report(self, simulation_actual_duration: float) -> dict[str, Any]:
        """Summary per framework with vLLM benchmark metric names (see :mod:`llmsim.metrics.summary`)."""
        from llmsim.metrics.summary import summarize

        return summarize(self, simulation_actual_duration)
