"""Trace replay: requests read from a file, sent at the trace's own times with its exact lengths.

A trace is a CSV (header row), Parquet or JSONL file with one request per row: arrival time,
input tokens, output tokens and, optionally, a session id, a prefix-group id and the number of
leading prompt tokens that come from the group's shared prompt. Column names are matched without
regard to case, spaces or underscores, so these layouts are read as they are published:

* llmsim's own: ``arrival_time, input_tokens, output_tokens[, session_id, prefix_group, prefix_tokens]``;
* the Azure LLM inference traces: ``TIMESTAMP`` (a date-time string), ``ContextTokens``,
  ``GeneratedTokens``;
* BurstGPT: ``Timestamp`` (seconds), ``Request tokens``, ``Response tokens`` (other columns ignored).

Numeric times are in ``workload.time_unit`` (seconds by default); date-times (text, ``datetime64``
of any resolution, with or without a timezone, offsets that differ between rows) and durations are
converted to seconds exactly, the same from every format. Times are taken relative to the first row
and must not decrease. Rows with zero input or output tokens (failed requests in published traces)
are skipped; negative, fractional or boolean lengths, counts past :data:`MAX_TOKENS`, float ids too
large to be exact, missing values and unsorted times are errors that name the file, the line (or
Parquet row) and the column.

Token content: rows of one session are the turns of a conversation, so every turn's prompt starts
with the previous turn's prompt and answer (as much of it as the turn's input length holds); the
first turn of a session with a prefix group starts with that group's shared system prompt, whose
length is the row's ``prefix_tokens`` or, without that column, the shortest prompt of the group.
Prefix caches see exactly this sharing. Replay options: a time window (``start_s``, ``end_s``),
rescaling to a mean rate (``rate``) or by a factor (``time_scale``), and ``loop`` repetitions,
made as the replay reaches them (a :class:`Replay` is a rule, not a list of requests).
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.rng import stream_rng
from llmsim.workload.request import RequestSpec, Segment, shared_prompt_segment
from llmsim.workload.tables import Table, numeric_column, read_table, resolve_path

if TYPE_CHECKING:
    from llmsim.config import WorkloadConfig
    from llmsim.workload.sessions import Session, SessionStream

log = logging.getLogger(__name__)

TIME_COLUMNS = ("arrival_time", "timestamp", "arrival_time_s", "time")
INPUT_COLUMNS = ("input_tokens", "context_tokens", "request_tokens", "prompt_tokens", "input_length", "input_len")
OUTPUT_COLUMNS = (
    "output_tokens",
    "generated_tokens",
    "response_tokens",
    "max_output_tokens",
    "output_length",
    "output_len",
)
SESSION_COLUMNS = ("session_id", "conversation_id", "session", "chat_id")
GROUP_COLUMNS = ("prefix_group", "prefix_group_id", "system_prompt_id")
PREFIX_TOKENS_COLUMNS = ("prefix_tokens", "shared_prefix_tokens", "system_prompt_tokens")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
#: The most tokens a trace row may give any count: 100 times the longest context windows served
#: today (10M tokens); far below 2^53, so every count converts to an exact int64. Rows past the
#: model's context (but under this) are sent and rejected by the engine, as a server would.
MAX_TOKENS = 1_000_000_000
MAX_EXACT_ID = float(2**53)  # floats count every integer exactly below this


def _normal(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _find_column(columns: Sequence[object], aliases: Sequence[str]) -> str | None:
    by_normal = {_normal(c): str(c) for c in reversed(list(columns))}  # first of duplicates wins
    return next((by_normal[_normal(a)] for a in aliases if _normal(a) in by_normal), None)


@dataclass(frozen=True)
class Trace:
    """A validated trace: one entry per kept row, times in seconds from the first row."""

    path: Path
    layout: str  # "azure", "burstgpt" or "llmsim"
    time: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    session: np.ndarray  # dense session codes in order of appearance, -1 for none
    prefix_group: np.ndarray  # dense group codes, -1 for none
    prefix_tokens: np.ndarray  # shared-prompt tokens of the row, -1 when not given
    skipped: int  # rows with zero input or output tokens

    def __len__(self) -> int:
        return len(self.time)


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
def load_trace(path: str | Path, key: str = "workload.path", time_unit: str = "s") -> Trace:
    """Read and validate a trace file (cached by file identity, so validation and replay read it once)."""
    resolved = resolve_path(path, key)
    stat = resolved.stat()
    return _load_cached(str(resolved), stat.st_mtime_ns, stat.st_size, key, time_unit)


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime: int, _size: int, key: str, time_unit: str) -> Trace:
    table = read_table(Path(path), key)
    columns = list(table.frame.columns)
    needed = {"arrival time": TIME_COLUMNS, "input tokens": INPUT_COLUMNS, "output tokens": OUTPUT_COLUMNS}
    found = {what: _find_column(columns, aliases) for what, aliases in needed.items()}
    missing = [what for what, column in found.items() if column is None]
    if missing:
        wanted = "; ".join(f"{what} ({', '.join(needed[what])})" for what in missing)
        raise ConfigError(key, path, f"missing column for {wanted}; the file has {', '.join(map(str, columns))}")
    time_col, input_col, output_col = found["arrival time"], found["input tokens"], found["output tokens"]
    assert time_col and input_col and output_col
    times = _times(table, time_col, TIME_UNITS[time_unit], key)
    inputs = _token_counts(table, input_col, key, allow_missing=False)
    outputs = _token_counts(table, output_col, key, allow_missing=False)
    session = _codes(table, _find_column(columns, SESSION_COLUMNS), key)
    group = _codes(table, _find_column(columns, GROUP_COLUMNS), key)
    prefix_col = _find_column(columns, PREFIX_TOKENS_COLUMNS)
    prefix = np.full(len(times), -1.0)
    if prefix_col is not None:
        given = _token_counts(table, prefix_col, key, allow_missing=True)
        over = np.nan_to_num(given, nan=-1.0) > inputs
        if over.any():
            i = int(np.argmax(over))
            raise ConfigError(
                key, path, f"{table.where(i)}: {prefix_col} ({given[i]:g}) exceeds the input tokens ({inputs[i]:g})"
            )
        prefix = np.nan_to_num(given, nan=-1.0)
    keep = (inputs > 0) & (outputs > 0)
    if not keep.any():
        raise ConfigError(key, path, "no row has input and output tokens > 0")
    arrays = [a[keep] for a in (times, inputs, outputs, session, group, prefix)]
    arrays[3], arrays[4] = _dense(arrays[3]), _dense(arrays[4])
    for array in arrays:
        array.setflags(write=False)
    return Trace(
        Path(path),
        _layout(columns),
        arrays[0],
        arrays[1].astype(np.int64),
        arrays[2].astype(np.int64),
        arrays[3],
        arrays[4],
        arrays[5].astype(np.int64),
        int((~keep).sum()),
    )


def _layout(columns: Sequence[object]) -> str:
    names = {_normal(c) for c in columns}
    if {"timestamp", "contexttokens", "generatedtokens"} <= names:
        return "azure"
    if {"requesttokens", "responsetokens"} <= names:
        return "burstgpt"
    return "llmsim"


def _times(table: Table, column: str, unit: float, key: str) -> np.ndarray:
    """Arrival times in seconds from the first row, whatever the column holds.

    Numbers are in ``unit`` seconds; date-times (strings, ``datetime64`` of any resolution,
    timezone-aware or not, mixed offsets) and durations (``timedelta64``) are converted exactly.
    """
    raw = table.frame[column]
    path = str(table.path)
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        seconds = _datetime_seconds(table, raw, key)
    elif pd.api.types.is_timedelta64_dtype(raw.dtype):
        _no_missing_time(table, raw.isna().to_numpy(), key)
        seconds = raw.dt.total_seconds().to_numpy(dtype=np.float64)
    elif _is_numeric_column(raw):
        seconds = numeric_column(table, column, key, allow_missing=False, label="arrival time") * unit
    else:
        seconds = _datetime_seconds(table, _parse_datetimes(table, raw, key), key)
    earlier = np.diff(seconds) < 0
    if earlier.any():
        i = int(np.argmax(earlier)) + 1
        raise ConfigError(
            key,
            path,
            f"{table.where(i)}: arrival time {raw.iloc[i]} is before the previous row's {raw.iloc[i - 1]} "
            "(rows must be sorted by time)",
        )
    return seconds - seconds[0]


def _is_numeric_column(raw: pd.Series) -> bool:
    """Whether a time column holds numbers (judged by its type, or else by its first value)."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return True  # numeric_column refuses it, naming the row
    if pd.api.types.is_numeric_dtype(raw.dtype):
        return True
    present = raw.dropna()
    if present.empty:
        return True
    first = present.iloc[0]
    if isinstance(first, (datetime.date, datetime.timedelta, np.datetime64, np.timedelta64)):
        return False
    return not pd.isna(pd.to_numeric(pd.Series([first]), errors="coerce").iloc[0])


_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)\s*$"  # a UTC offset ending an ISO-8601 date-time


def _parse_datetimes(table: Table, raw: pd.Series, key: str) -> pd.Series:
    """Date-time text (or date/datetime objects) as datetime64; rows with different offsets in UTC."""
    path = str(table.path)
    try:
        parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
    except ValueError:  # "Mixed timezones detected": offsets differ (or some rows have none)
        text = raw.astype("string")
        has_offset = text.str.contains(_OFFSET, regex=True, na=False).to_numpy()
        no_offset = ~has_offset & raw.notna().to_numpy()
        if has_offset.any() and no_offset.any():
            i, j = int(np.argmax(no_offset)), int(np.argmax(has_offset))
            raise ConfigError(
                key,
                path,
                f"{table.where(i)}: arrival time {raw.iloc[i]!r} has no UTC offset while {table.where(j)}'s "
                f"{raw.iloc[j]!r} has one; give every row an offset (or none)",
            ) from None
        try:
            parsed = pd.to_datetime(raw, errors="coerce", format="mixed", utc=True)
        except ValueError as exc:  # pragma: no cover - pandas coerces what it cannot parse
            raise ConfigError(
                key, path, "arrival times cannot be read as date-times: " + " ".join(str(exc).split())
            ) from None
    bad = (parsed.isna() & raw.notna()).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(
            key, path, f"{table.where(i)}: arrival time {raw.iloc[i]!r} is neither a number nor a date-time"
        )
    return parsed


def _datetime_seconds(table: Table, parsed: pd.Series, key: str) -> np.ndarray:
    """Seconds of a datetime64 column (any resolution, any timezone) after its first row."""
    _no_missing_time(table, parsed.isna().to_numpy(), key)
    return (parsed - parsed.iloc[0]).dt.total_seconds().to_numpy(dtype=np.float64)


def _no_missing_time(table: Table, missing: np.ndarray, key: str) -> None:
    if missing.any():
        i = int(np.argmax(missing))
        raise ConfigError(key, str(table.path), f"{table.where(i)}: arrival time is missing")


def _token_counts(table: Table, column: str, key: str, *, allow_missing: bool) -> np.ndarray:
    """A token-count column: whole numbers from 0 to :data:`MAX_TOKENS` (NaN where empty, if allowed)."""
    return numeric_column(
        table, column, key, allow_missing=allow_missing, nonneg=True, integer=True, ceiling=MAX_TOKENS, unit=" tokens"
    )


def _codes(table: Table, column: str | None, key: str) -> np.ndarray:
    """Ids of a column as integer codes in order of appearance; -1 where empty or no column.

    Ids may be text or whole numbers; a number stored as a float must be below 2^53, where floats
    stop telling neighbouring integers apart (two sessions would silently become one).
    """
    if column is None:
        return np.full(len(table.frame), -1, dtype=np.int64)
    raw = table.frame[column]
    if pd.api.types.is_float_dtype(raw.dtype):
        is_float = raw.notna().to_numpy()
    elif raw.dtype == object:  # JSONL: a mix of numbers and text
        is_float = raw.map(lambda v: isinstance(v, float) and not pd.isna(v)).to_numpy(dtype=bool)
    else:
        is_float = np.zeros(len(raw), dtype=bool)
    if is_float.any():
        floats = pd.to_numeric(raw.where(is_float), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.where(is_float & np.isfinite(floats), floats, 0.0)
        for mask, problem in (
            (is_float & ~np.isfinite(floats), "must be finite"),
            (finite != np.floor(finite), "must be a whole number or text"),
            (
                np.abs(finite) >= MAX_EXACT_ID,
                "is 2^53 or more: as a number it cannot be told apart from its neighbours (give smaller ids, or text)",
            ),
        ):
            if mask.any():
                i = int(np.argmax(mask))
                raise ConfigError(key, str(table.path), f"{table.where(i)}: {column!r} ({raw.iloc[i]}) {problem}")
    values = raw.map(lambda v: None if pd.isna(v) else str(v))
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64)


def _dense(codes: np.ndarray) -> np.ndarray:
    """Renumber codes 0..k-1 in order of appearance (after rows were dropped); -1 stays -1."""
    out = np.full(len(codes), -1, dtype=np.int64)
    present = codes >= 0
    if present.any():
        dense, _ = pd.factorize(codes[present])
        out[present] = dense
    return out


# ------------------------------------------------------------------------------------------------
# replay plan: window, time scale, loops, stop rules
# ------------------------------------------------------------------------------------------------
#: Requests made at a time while streaming a replay (their times, rows and streaming draws).
CHUNK = 4096
#: A replay longer than this (loop copies x rows) cannot be counted by the index types it needs.
MAX_REPLAY_REQUESTS = 2**62


@dataclass(frozen=True)
class Replay:
    """Which trace rows are sent, when, and in which loop copy: a rule, not a list.

    Request ``i`` (in send order) is row ``rows[i % n]`` of loop copy ``i // n``, sent at
    ``(local[i % n] + copy * period) * time_scale``; the first ``count`` are sent (``total_duration``
    and ``num_requests`` cut the copies back to back). Nothing is built for a request until it is
    asked for, so a replay of a billion loops costs what the run actually sends.
    """

    rows: np.ndarray  # trace rows of the window, in send order
    local: np.ndarray  # their times after the window's start, before rescaling
    period: float  # seconds between loop copies (0 without loops)
    time_scale: float
    count: int

    def __len__(self) -> int:
        return self.count

    def time(self, index: int) -> float:
        """Send time of request ``index`` (the same arithmetic as :meth:`chunk`, element by element)."""
        copy, position = divmod(index, len(self.rows))
        return float((self.local[position] + copy * self.period) * self.time_scale)

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Trace rows, loop copies and send times of requests ``start`` to ``stop - 1``."""
        copies, positions = np.divmod(np.arange(start, stop, dtype=np.int64), len(self.rows))
        times = (self.local[positions] + copies * self.period) * self.time_scale
        return self.rows[positions], copies, times


class ReplayTimes(Sequence[float]):
    """Send times of a replay, computed a chunk at a time as the generator reads them in order."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self._start = 0
        self._times: list[float] = []

    def __len__(self) -> int:
        return self.replay.count

    def __getitem__(self, index: int) -> float:  # type: ignore[override]  # slices are not needed
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        offset = index - self._start
        if not 0 <= offset < len(self._times):
            self._start = index - index % CHUNK
            self._times = self.replay.chunk(self._start, min(self._start + CHUNK, len(self)))[2].tolist()
            offset = index - self._start
        return self._times[offset]


def _first_at_or_after(replay: Replay, limit: float, total: int) -> int:
    """How many of the first ``total`` requests are sent before ``limit`` (send times never decrease)."""
    low, high = 0, total
    while low < high:
        middle = (low + high) // 2
        if replay.time(middle) < limit:
            low = middle + 1
        else:
            high = middle
    return low


def plan_replay(trace: Trace, workload: WorkloadConfig, key: str = "workload") -> Replay:
    """Apply the window, the rescaling, the loops, ``total_duration`` and ``num_requests``."""
    start, end = workload.start_s, workload.end_s
    if end is not None and end <= start:
        raise ConfigError(f"{key}.end_s", end, f"a time after start_s ({start:g})")
    in_window = trace.time >= start
    if end is not None:
        in_window &= trace.time < end
    rows = np.flatnonzero(in_window)
    span = f"{trace.path.name} spans 0 to {trace.time[-1]:g} s"
    if len(rows) == 0:
        raise ConfigError(f"{key}.start_s", start, f"the window [{start:g}, {end}) holds no request; {span}")
    local = trace.time[rows] - start
    mean_gap = (local[-1] - local[0]) / (len(local) - 1) if len(local) > 1 else 0.0
    if workload.rate is not None and workload.time_scale is not None:
        raise ConfigError(
            f"{key}.time_scale", workload.time_scale, "give workload.rate or workload.time_scale, not both"
        )
    scale = workload.time_scale or 1.0
    if workload.rate is not None:
        if mean_gap <= 0:
            raise ConfigError(f"{key}.rate", workload.rate, f"rescaling needs two requests at different times; {span}")
        scale = 1.0 / (workload.rate * mean_gap)
    period = 0.0
    if workload.loop > 1:
        if end is None and mean_gap <= 0:
            raise ConfigError(f"{key}.loop", workload.loop, "looping needs end_s or two requests at different times")
        period = (end - start) if end is not None else local[-1] + mean_gap
    rows.setflags(write=False)
    local.setflags(write=False)
    total = workload.loop * len(rows)
    replay = Replay(rows, local, period, scale, total)
    count = total
    if workload.total_duration is not None:
        count = _first_at_or_after(replay, workload.total_duration, total)
    if workload.num_requests is not None:
        count = min(count, workload.num_requests)
    if count == 0 and workload.num_requests != 0:  # num_requests=0 asks for no request at all
        raise ConfigError(
            f"{key}.total_duration",
            workload.total_duration,
            f"keeps no request (the first is sent at {replay.time(0):g} s)",
        )
    if count > MAX_REPLAY_REQUESTS:
        raise ConfigError(
            f"{key}.loop",
            workload.loop,
            f"{workload.loop:,} copies of {len(rows):,} requests are more than {MAX_REPLAY_REQUESTS:.3g}; "
            "give workload.total_duration or workload.num_requests",
        )
    return Replay(rows, local, period, scale, count)


def check_trace(workload: WorkloadConfig, key: str = "workload") -> Replay:
    """Validate a trace workload (file, columns, rows, window) before any simulation."""
    if workload.path is None:
        raise ConfigError(f"{key}.path", None, "a trace workload needs workload.path=FILE (CSV, Parquet or JSONL)")
    if len(workload.client_profiles) > 1:
        raise ConfigError(
            f"{key}.client_profiles", len(workload.client_profiles), "a trace uses one client profile (streaming, name)"
        )
    trace = load_trace(workload.path, f"{key}.path", workload.time_unit)
    return plan_replay(trace, workload, key)


# ------------------------------------------------------------------------------------------------
# requests
# ------------------------------------------------------------------------------------------------
def _take(segments: tuple[Segment, ...], tokens: int) -> tuple[Segment, ...]:
    """The first ``tokens`` tokens of a sequence of segments."""
    out = []
    for segment_id, length in segments:
        if tokens <= 0:
            break
        out.append((segment_id, min(length, tokens)))
        tokens -= length
    return tuple(out)


def group_prefix_lengths(trace: Trace) -> np.ndarray:
    """Shared-prompt length of each group: the shortest prompt in it (used without prefix_tokens)."""
    groups = int(trace.prefix_group.max()) + 1 if len(trace) else 0
    lengths = np.full(max(groups, 0), np.iinfo(np.int64).max, dtype=np.int64)
    mask = trace.prefix_group >= 0
    np.minimum.at(lengths, trace.prefix_group[mask], trace.input_tokens[mask])
    return lengths


def trace_sessions(workload: WorkloadConfig, seed: int) -> list[Session]:
    """Every request of the replay as a one-turn unit sent at its trace time, in send order."""
    return list(trace_stream(workload, seed))


def trace_stream(workload: WorkloadConfig, seed: int) -> SessionStream:
    """:func:`trace_sessions`, made as the replay reaches them (the trace itself is read up front).

    Memory and time follow the requests sent: loop copies are made a chunk at a time, so a run
    that stops (``simulation.max_simulation_time``) never builds the copies after it.
    """
    from llmsim.workload.sessions import SessionStream

    trace = load_trace(workload.path or "", "workload.path", workload.time_unit)
    replay = plan_replay(trace, workload)
    if trace.skipped:
        log.warning("trace %s: skipped %d rows with zero input or output tokens", trace.path.name, trace.skipped)
    return SessionStream(ReplayTimes(replay), _replay_units(trace, replay, workload, seed))


def _next_turn_positions(codes: np.ndarray) -> np.ndarray:
    """For each position of a loop copy, the next position in the same session (-1: none, or no session)."""
    order = np.argsort(codes, kind="stable")  # positions grouped by session, in send order within each
    ordered = codes[order]
    following = np.full(len(codes), -1, dtype=np.int64)
    same = (ordered[1:] == ordered[:-1]) & (ordered[1:] >= 0)
    following[order[:-1][same]] = order[1:][same]
    return following


def _replay_units(trace: Trace, replay: Replay, workload: WorkloadConfig, seed: int) -> Iterator[Session]:
    from llmsim.workload.sessions import Session

    profile = workload.client_profiles[0]
    group_lengths = group_prefix_lengths(trace)
    width = len(replay.rows)
    next_turn = _next_turn_positions(trace.session[replay.rows])
    streaming_draws = stream_rng(seed, "trace_streaming")  # drawn a chunk at a time: the same sequence
    history: dict[tuple[int, int], tuple[tuple[Segment, ...], int, int]] = {}  # (copy, session) -> segments, turn, id
    next_session = 0
    for first in range(0, replay.count, CHUNK):
        stop = min(first + CHUNK, replay.count)
        rows, copies, times = replay.chunk(first, stop)
        streaming = streaming_draws.random(stop - first) < profile.streaming_response_probability
        plan = zip(rows.tolist(), times.tolist(), copies.tolist(), streaming.tolist(), strict=True)
        for rid, (row, time, copy, streamed) in enumerate(plan, start=first):
            prompt = int(trace.input_tokens[row])
            code = int(trace.session[row])
            previous = history.get((copy, code)) if code >= 0 else None
            if previous is not None:
                context, turn, session_id = _take(previous[0], prompt), previous[1] + 1, previous[2]
            else:
                context, turn, session_id = (), 0, next_session
                next_session += 1
                group = int(trace.prefix_group[row])
                if group >= 0:
                    given = int(trace.prefix_tokens[row])
                    shared = given if given >= 0 else int(group_lengths[group])
                    context = _take(((shared_prompt_segment(group), shared),), prompt)
            own = prompt - sum(n for _, n in context)
            segments = (*context, (2 * rid + 1, own)) if own > 0 else context
            following = int(next_turn[rid - copy * width])
            last = following < 0 or copy * width + following >= replay.count  # no later turn is sent
            spec = RequestSpec(
                request_id=rid,
                session_id=session_id,
                turn=turn,
                profile=profile.profile_name,
                prompt_tokens=prompt,
                max_output_tokens=int(trace.output_tokens[row]),
                streaming=bool(streamed),
                prompt_segments=segments,
                output_segment=2 * rid + 2,
                stream_chunk_tokens=workload.stream_chunk_tokens,
                output_reuse="never" if last else "any_time",
                private_prompt=not context,
            )
            if code >= 0:
                if last:  # the conversation is over: nothing reads its history again
                    history.pop((copy, code), None)
                else:
                    history[(copy, code)] = (spec.token_segments, turn, session_id)
            yield Session(session_id, time, (spec,))
