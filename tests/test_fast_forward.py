"""Closed-form decode stretches give the same per-request timestamps as step-by-step simulation."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import conf_file, constant_profile, make_config
from scenario import run_quietly

CHAT = {
    "profile_name": "chat",
    "weight": 1.0,
    "prompt_tokens_dist_config": {"type": "LogNormal", "mean": 300, "sigma": 200, "is_int": True},
    "max_output_tokens_dist_config": {"type": "Uniform", "low": 2, "high": 300, "is_int": True},
    "conversational_probability": 0.3,
    "streaming_response_probability": 0.8,
}
TIMES = ["send_time", "arrival_time", "first_scheduled_time", "first_token_time", "completion_time"]


def both_ways(config_kwargs: dict, framework: str, **knobs) -> tuple:
    results = []
    for fast in (False, True):
        config = make_config(simulation={"fast_forward": fast}, **config_kwargs)
        fw = conf_file("framework", framework)
        fw.update(knobs)
        config["framework"] = fw
        results.append(run_quietly(config))
    return results


@pytest.mark.parametrize(
    ("framework", "knobs"),
    [
        ("vllm", {}),
        ("vllm", {"num_gpu_blocks_override": 400}),
        ("vllm", {"engine_version": "v0"}),
        ("trtllm", {}),
        ("trtllm", {"capacity_scheduler_policy": "MAX_UTILIZATION", "num_gpu_blocks_override": 120}),
        ("trtllm", {"capacity_scheduler_policy": "STATIC_BATCH", "max_batch_size": 16}),
        ("sglang", {}),
        ("sglang", {"num_gpu_blocks_override": 6000}),
    ],
)
def test_fast_forward_matches_step_by_step_per_request(framework, knobs):
    workload = {"rate": 6, "total_duration": 20, "client_profiles": [CHAT]}
    (slow_summary, slow, slow_steps), (fast_summary, fast, fast_steps) = both_ways(
        {"workload": workload}, framework, **knobs
    )
    columns = ["request_id", "status", "output_tokens", "cached_prompt_tokens", "preemptions", *TIMES]
    pd.testing.assert_frame_equal(slow[columns], fast[columns], check_exact=True)
    slow_metrics, fast_metrics = slow_summary["frameworks"][framework], fast_summary["frameworks"][framework]
    for key in (
        "completed",
        "num_steps",
        "mean_ttft_ms",
        "p99_tpot_ms",
        "mean_itl_ms",
        "p99_itl_ms",
        "output_throughput",
    ):
        assert slow_metrics[key] == fast_metrics[key], key
    assert len(slow_steps) == len(fast_steps)
    assert slow_steps["time"].tolist() == fast_steps["time"].tolist()


def test_fast_forward_handles_sliding_window_models():
    workload = {"kind": "offline", "num_requests": 6, "client_profiles": [constant_profile(4000, 300)]}
    (_, slow, _), (_, fast, _) = both_ways({"workload": workload, "model": "mistral_7b"}, "vllm")
    pd.testing.assert_frame_equal(slow[TIMES], fast[TIMES], check_exact=True)
