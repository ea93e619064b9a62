"""Trace files read exactly: unit-aware timestamps, bounded counts and lazily streamed loops.

Each defect here was found through the CLI (issue 16, items 5, 6, 9 and 14), so each has a test
through ``python -m llmsim workload=trace`` or ``python -m llmsim.workload fit`` as well as faster
API tests of the same reading code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, make_config, trace_workload

from llmsim.config import load_experiment_config
from llmsim.errors import ConfigError
from llmsim.workload.trace import load_trace, trace_sessions

STAMPS = ["2024-01-01 00:00:00.000", "2024-01-01 00:00:00.250", "2024-01-01 00:00:02.000"]
SECONDS = [0.0, 0.25, 2.0]
INPUTS = [50, 60, 70]
OUTPUTS = [4, 5, 6]


def send_times(path: Path | str, **extra) -> list[float]:
    config = load_experiment_config(make_config(workload=trace_workload(path, **extra)))
    return [unit.start_time for unit in trace_sessions(config.workload, config.workload_seed)]


def cli(tmp_path: Path, *args: str, module: str = "llmsim") -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in ``tmp_path`` (the checkout on the path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def replayed(tmp_path: Path, path: Path, *overrides: str) -> pd.DataFrame:
    """The requests ``python -m llmsim workload=trace workload.path=PATH`` sent, by request id."""
    result = cli(tmp_path, "workload=trace", f"workload.path={path}", "hydra.run.dir=out", *overrides)
    assert result.returncode == 0, result.stderr
    return pd.read_parquet(tmp_path / "out" / "requests.parquet").sort_values("request_id")


def fitted_duration(tmp_path: Path, path: Path) -> str:
    result = cli(tmp_path, "fit", str(path), module="llmsim.workload")
    assert result.returncode == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if line.startswith("duration:"))


def datetime_frame(unit: str = "us", tz: str | None = None) -> pd.DataFrame:
    stamps = pd.to_datetime(pd.Series(STAMPS)).dt.as_unit(unit)
    if tz is not None:
        stamps = stamps.dt.tz_localize(tz)
    return pd.DataFrame({"timestamp": stamps, "input_tokens": INPUTS, "output_tokens": OUTPUTS})


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# ------------------------------------------------------------------------------------------------
# item 5: datetime64 timestamps are read with their unit, the same from CSV, Parquet and JSONL
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York"])
def test_a_parquet_datetime64_column_of_any_resolution_and_timezone_is_read_in_seconds(tmp_path, unit, tz):
    frame = datetime_frame(unit, tz)
    if unit == "s":  # whole seconds only at this resolution
        frame["timestamp"] = frame["timestamp"].dt.floor("s")
    path = tmp_path / "trace.parquet"
    frame.to_parquet(path)
    expected = [0.0, 0.0, 2.0] if unit == "s" else SECONDS
    assert send_times(path) == expected


def test_timestamps_read_the_same_from_csv_parquet_and_jsonl(tmp_path):
    frame = datetime_frame()
    as_text = frame.assign(timestamp=STAMPS)
    as_text.to_csv(tmp_path / "text.csv", index=False)
    as_text.to_parquet(tmp_path / "text.parquet")
    frame.to_parquet(tmp_path / "datetime.parquet")
    write_jsonl(tmp_path / "text.jsonl", as_text.to_dict(orient="records"))
    numbers = pd.DataFrame({"timestamp": [0, 250, 2000], "input_tokens": INPUTS, "output_tokens": OUTPUTS})
    numbers.to_parquet(tmp_path / "ms.parquet")
    write_jsonl(tmp_path / "ms.jsonl", numbers.to_dict(orient="records"))
    for name in ("text.csv", "text.parquet", "datetime.parquet", "text.jsonl"):
        assert send_times(tmp_path / name) == SECONDS, name
    for name in ("ms.parquet", "ms.jsonl"):
        assert send_times(tmp_path / name, time_unit="ms") == SECONDS, name


def test_a_timedelta_time_column_is_read_in_seconds(tmp_path):
    frame = datetime_frame()
    frame["timestamp"] = pd.to_timedelta(SECONDS, unit="s")
    frame.to_parquet(tmp_path / "durations.parquet")
    assert send_times(tmp_path / "durations.parquet") == SECONDS


def test_a_missing_datetime64_timestamp_names_its_row(tmp_path):
    frame = datetime_frame()
    frame.loc[1, "timestamp"] = pd.NaT
    frame.to_parquet(tmp_path / "gap.parquet")
    with pytest.raises(ConfigError, match=r"gap\.parquet.*row 2: arrival time is missing"):
        send_times(tmp_path / "gap.parquet")


@pytest.mark.slow
def test_a_datetime64_parquet_trace_runs_and_fits_with_its_real_gaps_through_the_cli(tmp_path):
    path = tmp_path / "trace.parquet"
    datetime_frame("ns").to_parquet(path)
    requests = replayed(tmp_path, path)
    assert requests["send_time_s"].tolist() == SECONDS
    assert requests["prompt_tokens"].tolist() == INPUTS
    assert (requests["status"] == "completed").all()
    assert fitted_duration(tmp_path, path).startswith("duration: 2.000 s")


# ------------------------------------------------------------------------------------------------
# item 14: timestamps with different UTC offsets are converted to UTC
# ------------------------------------------------------------------------------------------------
MIXED_OFFSETS = (
    "timestamp,input_tokens,output_tokens\n"
    "2024-03-10T01:59:00-08:00,50,4\n"  # 09:59 UTC, before the daylight-saving switch
    "2024-03-10T03:00:00-07:00,60,5\n"  # 10:00 UTC, after it
    "2024-03-10T10:00:30Z,70,6\n"
)


def test_timestamps_with_mixed_utc_offsets_are_converted_to_utc(tmp_path):
    (tmp_path / "dst.csv").write_text(MIXED_OFFSETS)
    records = [
        dict(zip(("timestamp", "input_tokens", "output_tokens"), line.split(","), strict=True))
        for line in MIXED_OFFSETS.splitlines()[1:]
    ]
    write_jsonl(tmp_path / "dst.jsonl", [{**r, "input_tokens": int(r["input_tokens"])} for r in records])
    assert send_times(tmp_path / "dst.csv") == [0.0, 60.0, 90.0]
    assert send_times(tmp_path / "dst.jsonl") == [0.0, 60.0, 90.0]


def test_a_column_mixing_local_and_offset_timestamps_is_refused_naming_the_lines(tmp_path):
    path = tmp_path / "ambiguous.csv"
    path.write_text("timestamp,input_tokens,output_tokens\n2024-03-10T03:00:00-07:00,5,1\n2024-03-10 11:00:00,5,1\n")
    with pytest.raises(ConfigError) as info:
        load_trace(path)
    message = str(info.value)
    assert "ambiguous.csv" in message and "line 3" in message and "no UTC offset" in message
    assert "\n" not in message


@pytest.mark.slow
def test_a_trace_with_mixed_utc_offsets_runs_and_fits_through_the_cli(tmp_path):
    path = tmp_path / "dst.csv"
    path.write_text(MIXED_OFFSETS)
    requests = replayed(tmp_path, path)
    assert requests["send_time_s"].tolist() == [0.0, 60.0, 90.0]
    assert fitted_duration(tmp_path, path).startswith("duration: 90.000 s")


# ------------------------------------------------------------------------------------------------
# item 6: every count is bounded on read, so none overflows int64
# ------------------------------------------------------------------------------------------------
COUNT_COLUMNS = ("arrival_time", "input_tokens", "output_tokens", "session_id", "prefix_group", "prefix_tokens")


def count_rows(column: str, value: object) -> list[dict]:
    """Two good rows, then one whose ``column`` holds ``value``."""
    rows = [dict(zip(COUNT_COLUMNS, (t, 100, 5, 1, 0, 10), strict=True)) for t in (0.0, 0.5, 1.0)]
    rows[2][column] = value
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    frame = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        pytest.param("input_tokens", 1e19, "exceeds 1,000,000,000 tokens", id="input-1e19"),
        pytest.param("input_tokens", 2**63, "exceeds 1,000,000,000 tokens", id="input-2^63"),
        pytest.param("output_tokens", 1e19, "exceeds 1,000,000,000 tokens", id="output-1e19"),
        pytest.param("prefix_tokens", 1e19, "exceeds 1,000,000,000 tokens", id="prefix-1e19"),
        pytest.param("session_id", 1e19, "2^53 or more", id="session-1e19"),
        pytest.param("prefix_group", 1e19, "2^53 or more", id="group-1e19"),
        pytest.param("session_id", 1.5, "whole number", id="session-fraction"),
        pytest.param("input_tokens", True, "is not a number", id="input-boolean"),
    ],
)
def test_a_count_past_its_ceiling_is_a_one_line_error_naming_file_line_and_column(
    tmp_path, suffix, column, value, problem
):
    if suffix == ".parquet" and isinstance(value, int):
        pytest.skip("a Parquet column has one type: see the uint64 and bool column tests")
    path = write_rows(tmp_path / f"huge{suffix}", count_rows(column, value))
    with pytest.raises(ConfigError) as info:
        load_experiment_config(make_config(workload=trace_workload(path)))
    message = str(info.value)
    where = "row 3" if suffix == ".parquet" else ("line 3" if suffix == ".jsonl" else "line 4")
    assert info.value.key == "workload.path"
    assert f"huge{suffix}" in message and where in message and repr(column) in message and problem in message
    assert "\n" not in message


def test_parquet_uint64_and_bool_count_columns_are_bounded_and_refused(tmp_path):
    frame = pd.DataFrame(count_rows("input_tokens", 100))
    frame["input_tokens"] = pd.Series([100, 100, 2**64 - 1], dtype="uint64")
    frame.to_parquet(tmp_path / "uint64.parquet")
    with pytest.raises(ConfigError, match=r"uint64\.parquet.*row 3: 'input_tokens' .* exceeds 1,000,000,000 tokens"):
        load_trace(tmp_path / "uint64.parquet")
    frame["input_tokens"] = [True, True, True]
    frame.to_parquet(tmp_path / "bool.parquet")
    with pytest.raises(ConfigError, match=r"bool\.parquet.*row 1: 'input_tokens' True is not a number"):
        load_trace(tmp_path / "bool.parquet")


def test_counts_up_to_the_ceiling_are_read_exactly(tmp_path):
    path = write_rows(tmp_path / "big.csv", count_rows("input_tokens", 1_000_000_000))
    trace = load_trace(path)
    assert trace.input_tokens.tolist() == [100, 100, 1_000_000_000]
    ids = write_rows(tmp_path / "ids.csv", count_rows("session_id", 2**53 - 1))
    assert load_trace(ids).session.tolist() == [0, 0, 1]


def test_large_integer_ids_written_as_integers_stay_distinct(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text(
        "arrival_time,input_tokens,output_tokens,session_id\n"
        "0,10,2,18446744073709551614\n1,10,2,18446744073709551615\n2,10,2,18446744073709551614\n"
    )
    assert load_trace(path).session.tolist() == [0, 1, 0]


@pytest.mark.slow
def test_a_row_of_1e19_tokens_is_refused_by_the_cli_naming_file_line_and_column(tmp_path):
    path = write_rows(tmp_path / "huge.csv", count_rows("input_tokens", 1e19))
    result = cli(tmp_path, "workload=trace", f"workload.path={path}", "hydra.run.dir=out")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "huge.csv" in result.stderr and "line 4" in result.stderr and "'input_tokens'" in result.stderr
    fit = cli(tmp_path, "fit", str(path), module="llmsim.workload")
    assert fit.returncode == 2 and "line 4" in fit.stderr and fit.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_a_row_past_the_models_context_is_rejected_and_the_others_are_served(tmp_path):
    path = write_rows(tmp_path / "long.csv", count_rows("input_tokens", 500_000_000))
    requests = replayed(tmp_path, path, "workload.total_duration=null")
    assert requests["status"].tolist() == ["completed", "completed", "rejected"]


# ------------------------------------------------------------------------------------------------
# item 9: loop copies are streamed, so memory and time follow the requests actually sent
# ------------------------------------------------------------------------------------------------
SAMPLE = "conf/workload/traces/sample_trace.csv"
# Runs python -m llmsim and writes its peak resident memory (bytes) to $LLMSIM_TEST_RSS. The peak is the
# address space's high-water mark (VmHWM, reset by exec); ru_maxrss is kept across fork and exec, so it
# would report the pytest parent's size whenever that is larger.
MEASURED = (
    "import atexit, os, re, resource, runpy, sys\n"
    "def peak():\n"
    "    try:\n"
    "        status = open('/proc/self/status').read()\n"
    "        return int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) * 1024\n"
    "    except (OSError, AttributeError):\n"
    "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
    "atexit.register(lambda: open(os.environ['LLMSIM_TEST_RSS'], 'w').write(str(peak())))\n"
    "sys.argv = ['llmsim', *sys.argv[1:]]\n"
    "runpy.run_module('llmsim', run_name='__main__', alter_sys=True)\n"
)


def test_a_billion_loops_validate_and_stream_in_little_memory():
    import time
    import tracemalloc

    tracemalloc.start()
    began = time.perf_counter()
    config = load_experiment_config(make_config(workload=trace_workload(SAMPLE, loop=1_000_000_000)))
    from llmsim.workload.trace import trace_stream

    stream = trace_stream(config.workload, config.workload_seed)
    units = iter(stream)
    first = [next(units) for _ in range(10_000)]  # 35 copies of the 283-request sample
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(stream) == 283 * 1_000_000_000
    assert stream.start_times[len(stream) - 1] > stream.start_times[10_000] > first[-1].start_time
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB traced"
    assert time.perf_counter() - began < 20


def test_streamed_loop_copies_are_the_requests_a_short_replay_sends():
    """The lazily made copies equal the first copies of the same replay cut by num_requests."""
    looped = load_experiment_config(make_config(workload=trace_workload(SAMPLE, loop=10**9, time_scale=0.1)))
    cut = load_experiment_config(
        make_config(workload=trace_workload(SAMPLE, loop=30, time_scale=0.1, num_requests=283 * 30))
    )
    from llmsim.workload.trace import trace_stream

    units = iter(trace_stream(looped.workload, looped.workload_seed))
    made = [next(units) for _ in range(283 * 30)]
    expected = trace_sessions(cut.workload, cut.workload_seed)
    assert [(u.session_id, u.start_time, u.turns) for u in made] == [
        (u.session_id, u.start_time, u.turns) for u in expected
    ]


@pytest.mark.slow
def test_a_billion_loop_replay_runs_to_its_time_limit_fast_and_small_through_the_cli(tmp_path):
    import time

    rss = tmp_path / "rss"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LLMSIM_TEST_RSS": str(rss)}
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", MEASURED, "workload=trace", "workload.loop=1000000000",
         "simulation.max_simulation_time=30", "hydra.run.dir=out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    assert result.returncode == 0, result.stderr
    requests = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    trace = pd.read_csv(REPO / SAMPLE)
    assert len(requests) == int((trace["arrival_time"] - trace["arrival_time"][0] < 30).sum())
    assert int(rss.read_text()) < 1024 * 2**20, f"peak RSS {int(rss.read_text()) / 2**20:.0f} MiB"
    assert elapsed < 60


def test_streamed_send_times_and_streaming_draws_equal_the_whole_replay_computed_at_once():
    """Chunked streaming keeps the bytes of the eager replay: times and draws across chunk borders."""
    import numpy as np

    from llmsim.rng import stream_rng

    extra = {"loop": 40, "start_s": 5.0, "end_s": 50.0, "time_scale": 0.3}
    profile = [{"profile_name": "trace", "streaming_response_probability": 0.5}]
    config = load_experiment_config(
        make_config(workload={**trace_workload(SAMPLE, **extra), "client_profiles": profile})
    )
    units = trace_sessions(config.workload, config.workload_seed)
    trace = load_trace(SAMPLE)
    local = trace.time[(trace.time >= 5.0) & (trace.time < 50.0)] - 5.0
    copies = np.repeat(np.arange(40), len(local))
    times = (np.tile(local, 40) + copies * 45.0) * 0.3
    streaming = stream_rng(config.workload_seed, "trace_streaming").random(len(times)) < 0.5
    assert len(units) == len(times) > 4096
    assert [u.start_time for u in units] == times.tolist()
    assert [u.turns[0].streaming for u in units] == streaming.tolist()


def test_a_conversation_cut_by_num_requests_ends_with_the_last_turn_sent(tmp_path):
    path = write_rows(
        tmp_path / "chat.csv",
        [
            {"arrival_time": t, "input_tokens": 100 * (i + 1), "output_tokens": 5, "session_id": 7}
            for i, t in enumerate([0.0, 1.0, 2.0])
        ],
    )
    config = load_experiment_config(make_config(workload=trace_workload(path, loop=3, num_requests=5)))
    units = trace_sessions(config.workload, config.workload_seed)
    reuse = [u.turns[0].output_reuse for u in units]
    assert reuse == ["any_time", "any_time", "never", "any_time", "never"]
    assert [u.session_id for u in units] == [0, 0, 0, 1, 1]
