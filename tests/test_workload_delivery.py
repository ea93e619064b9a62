"""Network delivery and stop rules: streamed chunks, whole answers, and nothing lost when a run stops."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from conftest import constant_profile, make_config
from scenario import framework_for, run_quietly, step_time

from llmsim import ExperimentOrchestrator

LATENCY = 1e-4  # client link of conf/hardware/a100.yaml: 100 us, 10 Gbps, 2 bytes a token


def link_delay(tokens: int) -> float:
    return LATENCY + tokens * 2 * 8 / 1e10


def run_with_itl(config: dict) -> tuple[dict, object, np.ndarray]:
    """Summary, requests table and the pooled ITL gaps (one entry per gap) of a run."""
    orchestrator = ExperimentOrchestrator(config)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = orchestrator.run()
    collector = orchestrator.metrics_collector
    values, counts = collector.itl_samples("vllm")
    return summary, collector.get_all_request_metrics_df(), np.repeat(values, counts)


def one_request(prompt: int, output: int, *, streaming: float = 1.0, **workload) -> dict:
    profile = constant_profile(prompt, output, streaming=streaming)
    return make_config(
        workload={"kind": "offline", "num_requests": 1, "client_link": True, "client_profiles": [profile], **workload}
    )


def token_times(config: dict, prompt: int, output: int) -> list[float]:
    """Server times of each output token of a lone request: a prefill step, then one decode step a token."""
    fw = framework_for(config)
    times = [link_delay(prompt) + step_time(fw, prefill=[(prompt, 0, True)])]
    for k in range(1, output):
        times.append(times[-1] + step_time(fw, decode=[prompt + k]))
    return times


def test_streamed_chunks_set_ttft_at_the_first_full_chunk_and_itl_between_chunk_arrivals():
    config = one_request(100, 7, stream_chunk_tokens=3)
    t = token_times(config, 100, 7)
    _, requests, itl = run_with_itl(config)
    row = requests.iloc[0]
    # chunks: tokens 1-3 leave with token 3, tokens 4-6 with token 6, token 7 alone
    assert row["first_token_time_s"] == pytest.approx(t[2] + link_delay(3), abs=1e-12)
    assert row["completion_time_s"] == pytest.approx(t[6] + link_delay(1), abs=1e-12)
    # ITL gaps are pooled at 1 us resolution
    assert sorted(itl) == pytest.approx(sorted([t[5] - t[2], t[6] + link_delay(1) - t[5] - link_delay(3)]), abs=5e-7)
    assert row["tpot_ms"] == pytest.approx((row["e2el_ms"] - row["ttft_ms"]) / 6)


def test_an_answer_shorter_than_a_chunk_arrives_whole_in_its_first_chunk():
    config = one_request(100, 2, stream_chunk_tokens=4)
    t = token_times(config, 100, 2)
    _, requests, itl = run_with_itl(config)
    row = requests.iloc[0]
    assert row["first_token_time_s"] == row["completion_time_s"] == pytest.approx(t[1] + link_delay(2), abs=1e-12)
    assert len(itl) == 0


def test_one_token_chunks_give_one_itl_gap_per_token():
    config = one_request(100, 6)
    t = token_times(config, 100, 6)
    _, requests, itl = run_with_itl(config)
    assert requests.iloc[0]["first_token_time_s"] == pytest.approx(t[0] + link_delay(1), abs=1e-12)
    assert sorted(itl) == pytest.approx(sorted(np.diff(t)), abs=5e-7)  # pooled at 1 us resolution


def test_chunks_cut_the_number_of_itl_gaps_and_stretch_them():
    workload = {"rate": 4, "total_duration": 10, "client_profiles": [constant_profile(200, 64)]}
    per_token = run_with_itl(make_config(workload=workload))
    chunked = run_with_itl(make_config(workload={**workload, "stream_chunk_tokens": 8}))
    completed = per_token[0]["frameworks"]["vllm"]["completed"]
    assert len(per_token[2]) == completed * 63
    assert len(chunked[2]) == completed * 7
    assert chunked[0]["frameworks"]["vllm"]["mean_itl_ms"] == pytest.approx(
        8 * per_token[0]["frameworks"]["vllm"]["mean_itl_ms"], rel=0.05
    )
    assert chunked[1]["ttft_ms"].mean() > per_token[1]["ttft_ms"].mean()


def test_a_non_streamed_answer_arrives_whole_so_its_ttft_equals_its_e2el():
    profile = constant_profile(300, 50, streaming=0.5)
    config = make_config(workload={"rate": 5, "total_duration": 20, "client_profiles": [profile]})
    _, requests, itl = run_with_itl(config)
    whole = requests[~requests["streaming"]]
    streamed = requests[requests["streaming"]]
    assert len(whole) > 20 and len(streamed) > 20
    assert (whole["ttft_ms"] == whole["e2el_ms"]).all()
    assert (streamed["ttft_ms"] < streamed["e2el_ms"]).all()
    assert whole["tpot_ms"].isna().all()
    assert len(itl) == len(streamed) * 49  # only streamed answers have inter-token gaps


def test_total_duration_ends_arrivals_but_requests_in_flight_still_complete():
    workload = {"rate": 10, "total_duration": 5, "client_profiles": [constant_profile(200, 300)]}
    summary, requests, _ = run_quietly(make_config(workload=workload))
    assert requests["send_time_s"].max() < 5
    assert requests["completion_time_s"].max() > 5
    assert (requests["status"] == "completed").all()
    assert summary["stopped_by_time_limit"] is False


def test_requests_in_flight_when_the_time_limit_hits_are_reported_incomplete():
    config = make_config(
        workload={
            "kind": "offline",
            "num_requests": 40,
            "client_link": True,
            "client_profiles": [constant_profile(500, 400)],
        },
        simulation={"max_simulation_time": 2.0},
    )
    summary, requests, _ = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    assert summary["stopped_by_time_limit"] is True
    assert metrics["incomplete"] > 0
    assert metrics["completed"] + metrics["incomplete"] == 40
    assert len(requests) == 40


def test_requests_still_on_the_network_when_the_run_stops_are_reported_incomplete():
    config = make_config(
        workload={
            "kind": "offline",
            "num_requests": 3,
            "client_link": True,
            "client_profiles": [constant_profile(100, 10)],
        },
        simulation={"max_simulation_time": 2.0},
    )
    config["hardware"]["network_links"][0]["latency_s"] = 5.0  # the upload takes 5 s
    summary, requests, _ = run_quietly(config)
    assert summary["frameworks"]["vllm"]["incomplete"] == 3
    assert (requests["status"] == "incomplete").all()
    assert (requests["send_time_s"] == 0).all()
    assert requests["first_scheduled_time_s"].isna().all()  # no framework ever saw them


def test_every_sent_request_is_accounted_for_when_an_open_loop_run_is_cut_short():
    config = make_config(
        workload={"rate": 20, "total_duration": 30, "client_profiles": [constant_profile(1500, 300)]},
        simulation={"max_simulation_time": 6.0},
    )
    config["hardware"]["network_links"][0]["latency_s"] = 0.2
    summary, requests, _ = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    assert metrics["completed"] + metrics["incomplete"] + metrics["failed"] == len(requests)
    assert len(requests) == requests["request_id"].nunique()
    assert (requests["send_time_s"] <= 6.0).all()
    late = requests[requests["send_time_s"] > 6.0 - 0.2]  # sent, but the upload had not finished at the stop
    assert len(late) > 0
    assert (late["status"] == "incomplete").all() and late["first_scheduled_time_s"].isna().all()
