"""Trace replay: exact times and lengths, published layouts, windows, rescaling, loops, sessions, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, make_config, trace_workload
from scenario import run_quietly

from llmsim.config import load_experiment_config
from llmsim.errors import ConfigError
from llmsim.workload.sample_trace import SAMPLE_TRACE, render_sample_trace
from llmsim.workload.trace import load_trace, trace_sessions

TIMES = [0.0, 0.137, 0.5, 0.5, 1.25, 3.0, 3.001, 7.75]
INPUTS = [120, 40, 900, 33, 2048, 5, 777, 64]
OUTPUTS = [10, 1, 64, 200, 3, 17, 1, 40]


def write_csv(path: Path, rows: dict) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def replay(path: Path | str, **extra) -> list:
    """The requests a trace workload would send: (send time, spec) in send order."""
    config = load_experiment_config(make_config(workload=trace_workload(path, **extra)))
    return [(unit.start_time, unit.turns[0]) for unit in trace_sessions(config.workload, config.workload_seed)]


@pytest.fixture
def simple_trace(tmp_path) -> Path:
    return write_csv(tmp_path / "trace.csv", {"arrival_time": TIMES, "input_tokens": INPUTS, "output_tokens": OUTPUTS})


def test_a_replay_sends_every_request_at_its_trace_time_with_its_exact_lengths(simple_trace):
    summary, requests, _ = run_quietly(make_config(workload=trace_workload(simple_trace)))
    requests = requests.sort_values("request_id")
    assert requests["send_time_s"].tolist() == TIMES
    assert requests["prompt_tokens"].tolist() == INPUTS
    assert requests["max_output_tokens"].tolist() == OUTPUTS
    assert requests["output_tokens"].tolist() == OUTPUTS
    assert summary["frameworks"]["vllm"]["completed"] == len(TIMES)


def test_times_are_taken_from_the_first_row(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        {"arrival_time": [1000.0, 1000.5, 1002.0], "input_tokens": [5] * 3, "output_tokens": [2] * 3},
    )
    assert [t for t, _ in replay(path)] == [0.0, 0.5, 2.0]


def test_time_unit_reads_millisecond_timestamps(tmp_path):
    path = write_csv(
        tmp_path / "t.csv", {"timestamp": [0, 250, 1500], "input_length": [5] * 3, "output_length": [2] * 3}
    )
    assert [t for t, _ in replay(path, time_unit="ms")] == [0.0, 0.25, 1.5]


def test_the_azure_trace_layout_with_date_time_stamps_is_recognised(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.0000000,879,55\n"
    )
    trace = load_trace(path)
    assert trace.layout == "azure"
    assert trace.time.tolist() == pytest.approx([0.0, 4.314579, 4.31941], abs=1e-6)
    assert [spec.prompt_tokens for _, spec in replay(path)] == [374, 396, 879]
    assert [spec.max_output_tokens for _, spec in replay(path)] == [44, 109, 55]


def test_the_burstgpt_layout_is_recognised_and_failed_rows_are_skipped(tmp_path):
    path = tmp_path / "BurstGPT_1.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,Conversation log\n"
    )
    trace = load_trace(path)
    assert trace.layout == "burstgpt" and trace.skipped == 1
    assert [(t, s.prompt_tokens, s.max_output_tokens) for t, s in replay(path)] == [(0.0, 472, 18), (113.0, 417, 276)]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_parquet_and_jsonl_traces_replay_like_csv(tmp_path, simple_trace, suffix):
    frame = pd.read_csv(simple_trace)
    path = tmp_path / f"trace{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in frame.to_dict(orient="records")))
    as_csv = [(t, s.prompt_tokens, s.max_output_tokens) for t, s in replay(simple_trace)]
    assert [(t, s.prompt_tokens, s.max_output_tokens) for t, s in replay(path)] == as_csv


def test_a_window_keeps_the_requests_inside_it_and_starts_the_clock_at_its_start(simple_trace):
    sent = replay(simple_trace, start_s=0.5, end_s=3.0)
    assert [t for t, _ in sent] == [0.0, 0.0, 0.75]
    assert [s.prompt_tokens for _, s in sent] == [900, 33, 2048]


def test_time_scale_stretches_the_trace(simple_trace):
    assert [t for t, _ in replay(simple_trace, time_scale=2.0)] == pytest.approx([2 * t for t in TIMES])


def test_rate_rescales_the_trace_to_that_mean_rate(simple_trace):
    times = np.array([t for t, _ in replay(simple_trace, rate=10.0)])
    assert 1 / np.diff(times).mean() == pytest.approx(10.0)
    assert times / times[-1] == pytest.approx(np.array(TIMES) / TIMES[-1])  # the shape is kept


def test_loop_replays_the_trace_back_to_back_as_new_requests(simple_trace):
    sent = replay(simple_trace, loop=3)
    period = TIMES[-1] + TIMES[-1] / (len(TIMES) - 1)
    times = [t for t, _ in sent]
    assert times == pytest.approx([t + k * period for k in range(3) for t in TIMES])
    assert [s.prompt_tokens for _, s in sent] == INPUTS * 3
    assert len({s.request_id for _, s in sent}) == 3 * len(TIMES)


def test_total_duration_and_num_requests_cut_the_replay(simple_trace):
    assert len(replay(simple_trace, total_duration=3.0)) == 5
    assert len(replay(simple_trace, num_requests=2)) == 2


def test_turns_of_a_session_carry_the_conversation_so_far_as_their_prompt_prefix(tmp_path):
    path = write_csv(
        tmp_path / "chat.csv",
        {
            "arrival_time": [0.0, 1.0, 5.0, 9.0],
            "input_tokens": [100, 50, 100 + 20 + 30, 150 + 40 + 10],
            "output_tokens": [20, 5, 40, 8],
            "session_id": ["a", "b", "a", "a"],
        },
    )
    first, other, second, third = (spec for _, spec in replay(path))
    assert other.session_id != first.session_id == second.session_id == third.session_id
    assert [first.turn, second.turn, third.turn] == [0, 1, 2]
    assert second.prompt_segments[:-1] == first.token_segments
    assert third.prompt_segments[:-1] == second.token_segments
    assert second.prompt_tokens == 150 and third.prompt_tokens == 200


def test_a_prefix_group_shares_a_system_prompt(tmp_path):
    path = write_csv(
        tmp_path / "groups.csv",
        {
            "arrival_time": [0.0, 1.0, 2.0],
            "input_tokens": [600, 700, 300],
            "output_tokens": [5, 5, 5],
            "prefix_group": ["sys", "sys", None],
            "prefix_tokens": [512, 512, None],
        },
    )
    one, two, alone = (spec for _, spec in replay(path))
    assert one.prompt_segments[0] == two.prompt_segments[0] == (one.prompt_segments[0][0], 512)
    assert one.prompt_segments[0][0] < 0  # shared segments have negative ids
    assert all(segment_id > 0 for segment_id, _ in alone.prompt_segments)


def test_without_prefix_tokens_a_group_shares_its_shortest_prompt(tmp_path):
    path = write_csv(
        tmp_path / "groups.csv",
        {"arrival_time": [0, 1], "input_tokens": [300, 200], "output_tokens": [5, 5], "prefix_group": [7, 7]},
    )
    one, two = (spec for _, spec in replay(path))
    assert one.prompt_segments[0][1] == two.prompt_segments[0][1] == 200


def test_trace_sessions_and_prefix_groups_produce_prefix_cache_hits():
    summary, requests, _ = run_quietly(make_config(workload=trace_workload(SAMPLE_TRACE, total_duration=60)))
    requests = requests.sort_values(["session_id", "turn"])
    previous = requests.groupby("session_id")[["prompt_tokens", "output_tokens"]].shift()
    history = (previous["prompt_tokens"] + previous["output_tokens"])[requests["turn"] > 0]
    assert len(history) > 10
    # a follow-up finds the whole previous turn in the cache but its last, partial 16-token block
    cached = requests.loc[history.index, "cached_prompt_tokens"]
    assert (cached >= history - 16).all() and (cached <= history).all()
    # first turns of a prefix group find the group's whole system prompt once the group was seen
    trace = pd.read_csv(REPO / SAMPLE_TRACE)
    trace = trace[trace["arrival_time"] - trace["arrival_time"][0] < 60]
    assert summary["frameworks"]["vllm"]["completed"] == len(trace)
    by_id = requests.set_index("request_id")
    first_turns = trace.drop_duplicates("session_id").dropna(subset=["prefix_group"])
    later = first_turns[first_turns.duplicated("prefix_group")]
    assert len(later) > 20
    assert (by_id.loc[later.index, "cached_prompt_tokens"] >= later["prefix_tokens"]).all()
    openers = first_turns.drop_duplicates("prefix_group")
    assert (by_id.loc[openers.index, "cached_prompt_tokens"] == 0).all()


def test_the_shipped_sample_trace_is_what_its_generator_writes():
    assert (REPO / SAMPLE_TRACE).read_text() == render_sample_trace()
    trace = load_trace(SAMPLE_TRACE)
    assert 200 <= len(trace) <= 500
    assert (trace.session >= 0).all() and len(np.unique(trace.session)) < len(trace)
    assert (trace.prefix_group >= 0).any()


@pytest.mark.parametrize(
    ("content", "where"),
    [
        pytest.param("", "empty", id="empty-file"),
        pytest.param("arrival_time,input_tokens,output_tokens\n", "no rows", id="header-only"),
        pytest.param("arrival_time,input_tokens\n0,5\n", "output tokens", id="missing-column"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,5,3\n1,-4,3\n", "line 3", id="negative-input"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,5,3\n1,5,2.5\n", "line 3", id="fractional-output"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,5,3\n1,5,many\n", "line 3", id="text-output"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,5,3\n1,,3\n", "line 3", id="missing-value"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,5,3\n2,5,3\n1,5,3\n", "line 4", id="unsorted"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,5,3\nsoon,5,3\n", "line 3", id="bad-time"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,0,3\n", "no row", id="all-zero-rows"),
        pytest.param("arrival_time,input_tokens,output_tokens\n0,5,3\n\xff\xfe,1,1\n", "line 3", id="undecodable"),
    ],
)
def test_a_malformed_trace_is_a_one_line_config_error_naming_the_file_and_line(tmp_path, content, where):
    path = tmp_path / "bad_trace.csv"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_experiment_config(make_config(workload=trace_workload(path)))
    message = str(info.value)
    assert info.value.key == "workload.path"
    assert "bad_trace.csv" in message and where in message
    assert "\n" not in message


def test_a_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"arrival_time": 0, "input_tokens": 5, "output_tokens": 3}\n\n{not json}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl.*line 3"):
        load_experiment_config(make_config(workload=trace_workload(path)))


def test_a_corrupt_parquet_file_is_a_config_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(ConfigError, match=r"bad\.parquet.*Parquet"):
        load_experiment_config(make_config(workload=trace_workload(path)))


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        pytest.param({"start_s": 100.0}, "workload.start_s", id="empty-window"),
        pytest.param({"start_s": 3.0, "end_s": 2.0}, "workload.end_s", id="end-before-start"),
        pytest.param({"rate": 5.0, "time_scale": 2.0}, "workload.time_scale", id="rate-and-time-scale"),
        pytest.param({"time_scale": 0}, "workload.time_scale", id="zero-time-scale"),
        pytest.param({"loop": 0}, "workload.loop", id="zero-loops"),
        pytest.param({"time_unit": "h"}, "workload.time_unit", id="unknown-time-unit"),
        pytest.param({"burstiness": 0.5}, "workload.burstiness", id="burstiness"),
        pytest.param({"total_duration": 0.1, "start_s": 0.2}, "workload.total_duration", id="nothing-before-stop"),
    ],
)
def test_a_bad_trace_option_is_a_config_error_naming_the_key(simple_trace, extra, key):
    with pytest.raises(ConfigError) as info:
        load_experiment_config(make_config(workload=trace_workload(simple_trace, **extra)))
    assert info.value.key == key


@pytest.mark.parametrize("path", [None, "no/such/trace.csv"], ids=["no-path", "missing-file"])
def test_a_missing_trace_path_is_a_config_error(path):
    with pytest.raises(ConfigError) as info:
        load_experiment_config(make_config(workload={**trace_workload("x"), "path": path}))
    assert info.value.key == "workload.path"


def test_a_relative_trace_path_is_found_from_the_current_directory_first(tmp_path, simple_trace, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(replay("trace.csv")) == len(TIMES)
    assert len(replay(str(SAMPLE_TRACE))) > 200  # not here: found in the repository


@pytest.mark.slow
def test_the_readme_trace_example_runs_through_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", "workload=trace", "workload.total_duration=30", "hydra.run.dir=out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    trace = pd.read_csv(REPO / SAMPLE_TRACE)
    assert summary["frameworks"]["vllm"]["completed"] == (trace["arrival_time"] - trace["arrival_time"][0] < 30).sum()


@pytest.mark.slow
def test_a_bad_trace_on_the_cli_is_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", "workload=trace", "workload.path=missing.csv"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "workload.path='missing.csv'" in result.stderr
