"""What the summary reports: populations of each latency, offered load, arrival-window throughput, metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, constant_profile

from llmsim import ExperimentOrchestrator


def run(config: dict) -> tuple[dict, ExperimentOrchestrator]:
    orchestrator = ExperimentOrchestrator(config)
    return orchestrator.run(show_progress=False, print_table=False), orchestrator


def test_ttft_tpot_itl_cover_streamed_requests_and_e2el_covers_all(config_factory):
    profile = constant_profile(200, 50, streaming=0.5)
    summary, orchestrator = run(
        config_factory(workload={"rate": 4.0, "total_duration": 30, "client_profiles": [profile]})
    )
    metrics = summary["frameworks"]["vllm"]
    table = orchestrator.metrics_collector.get_all_request_metrics_df()
    done = table[table["status"] == "completed"]
    streamed = done[done["streaming"]]
    assert 0 < metrics["num_non_streamed"] < metrics["completed"]
    assert metrics["num_streamed"] + metrics["num_non_streamed"] == metrics["completed"] == len(done)
    assert metrics["mean_ttft_ms"] == pytest.approx(streamed["ttft_ms"].mean())
    assert metrics["p99_ttft_ms"] == pytest.approx(np.percentile(streamed["ttft_ms"], 99))
    assert metrics["mean_e2el_ms"] == pytest.approx(done["e2el_ms"].mean())
    # a non-streamed answer arrives whole: counting it would put its E2EL into the TTFT tail
    assert metrics["p99_ttft_ms"] < done["ttft_ms"].max()


def test_offered_request_rate_counts_follow_up_turns_on_top_of_the_session_rate(config_factory):
    profile = constant_profile(
        100,
        20,
        conversational_probability=0.5,
        max_conversation_turns=4,
        conversation_think_time_dist_config={"type": "Constant", "value": 0.5},
    )
    workload = {"rate": 5.0, "total_duration": 120, "client_profiles": [profile]}
    metrics = run(config_factory(workload=workload))[0]["frameworks"]["vllm"]
    assert metrics["offered_session_rate"] == pytest.approx(5.0, rel=0.15)
    assert metrics["offered_request_rate"] > 1.3 * metrics["offered_session_rate"]
    # light load: what completes inside the arrival window keeps up with what is offered in it
    assert metrics["request_throughput_steady"] == pytest.approx(metrics["offered_request_rate"], rel=0.05)


def test_throughput_over_the_arrival_window_leaves_out_the_tail_after_the_last_arrival(config_factory):
    profile = constant_profile(100, 1000)  # answers take seconds: a long tail after arrivals end
    workload = {"rate": 2.0, "total_duration": 40, "client_profiles": [profile]}
    metrics = run(config_factory(workload=workload, metrics={"warm_up_duration_s": 10}))[0]["frameworks"]["vllm"]
    assert metrics["offered_request_rate"] == pytest.approx(2.0, rel=0.25)
    # the benchmark duration runs to the last completion, seconds after the last arrival
    assert metrics["request_throughput"] < 0.9 * metrics["offered_request_rate"]
    # inside the window (after the warm-up) the system keeps up with what is offered
    assert metrics["request_throughput_steady"] == pytest.approx(metrics["offered_request_rate"], rel=0.1)


def test_an_offline_batch_has_no_arrival_window_so_no_offered_rate(config_factory):
    metrics = run(config_factory(workload={"num_requests": 20}))[0]["frameworks"]["vllm"]
    assert metrics["offered_request_rate"] is None
    assert metrics["offered_session_rate"] is None
    assert metrics["request_throughput_steady"] is None
    assert metrics["request_throughput"] > 0


@pytest.mark.parametrize(("hardware", "budget"), [("a100", 8192), ("h100", 16384)])
def test_summary_run_block_records_the_knobs_in_force_with_defaults_resolved(config_factory, hardware, budget):
    summary, _ = run(config_factory(hardware=hardware, workload={"num_requests": 2}))
    info = summary["run"]
    knobs = info["frameworks"]["vllm"]["knobs"]
    # null in the config: vLLM v1's per-GPU default for the LLM class, which an offline batch runs in
    assert knobs["max_num_batched_tokens"] == budget
    assert knobs["usage_context"] == "llm_class"
    assert knobs["enable_chunked_prefill"] is True
    assert knobs["dtype"] == "bf16"
    assert info["frameworks"]["vllm"]["modelled_release"].startswith("vLLM")
    assert info["hardware"]["num_gpus"] == 8
    assert info["model"]["name"] == "llama3_8b"
    assert info["workload"]["kind"] == "offline"
    assert info["workload"]["num_prompts"] == 2
    assert info["seed"] == 42
    assert info["llmsim_version"]
    json.dumps(summary, allow_nan=False)  # the file stays strict JSON


@pytest.mark.slow
def test_default_run_console_has_a_header_and_says_which_requests_each_latency_covers(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", "workload.total_duration=20", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "llama3_8b (bf16), TP=1 on 1 × NVIDIA A100-SXM4-80GB" in out
    assert "modelled on vLLM" in out
    assert "workload chat (open_loop): rate 10.00 sessions/s" in out
    assert "seed 42" in out
    assert f"run dir: {tmp_path}" in out
    assert "Streamed / non-streamed" in out
    assert "TTFT p99 (ms, streamed)" in out
    assert "E2EL p99 (ms, all)" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    metrics = summary["frameworks"]["vllm"]
    assert metrics["num_non_streamed"] > 0  # the seed's chat profile streams 90% of answers
    assert metrics["p99_ttft_ms"] < 200  # a streaming client's tail, not the E2EL of whole answers
    assert summary["run"]["workload"]["name"] == "chat"


def test_ttft_slo_applies_to_streamed_requests_and_e2el_slo_to_every_request(config_factory):
    profile = constant_profile(200, 100, streaming=0.5)
    workload = {"rate": 4.0, "total_duration": 30, "client_profiles": [profile]}
    ttft_only = run(config_factory(workload=workload, metrics={"slo_ttft_ms": 500}))
    metrics, orchestrator = ttft_only[0]["frameworks"]["vllm"], ttft_only[1]
    table = orchestrator.metrics_collector.get_all_request_metrics_df()
    done = table[table["status"] == "completed"]
    assert (done.loc[~done["streaming"], "ttft_ms"] > 500).all()  # whole answers take longer than the SLO
    assert metrics["slo_attainment"] == 1.0  # ... yet a TTFT SLO is a streaming client's, so none miss it
    deadline = float(done["e2el_ms"].median())
    strict = run(config_factory(workload=workload, metrics={"slo_ttft_ms": 500, "slo_e2el_ms": deadline}))[0]
    expected = (done["e2el_ms"] <= deadline).mean()
    assert strict["frameworks"]["vllm"]["slo_attainment"] == pytest.approx(expected)
