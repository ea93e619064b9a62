"""Closed-form decode stretches give the same per-request timestamps as step-by-step simulation."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import conf_file, constant_profile, make_config
from scenario import run_quietly

from llmsim.frameworks.kv_cache import KVCacheManager

CHAT = {
    "profile_name": "chat",
    "weight": 1.0,
    "prompt_tokens_dist_config": {"type": "LogNormal", "mean": 300, "sigma": 200, "is_int": True},
    "max_output_tokens_dist_config": {"type": "Uniform", "low": 2, "high": 300, "is_int": True},
    "conversational_probability": 0.3,
    "streaming_response_probability": 0.8,
}
TIMES = ["send_time_s", "arrival_time_s", "first_scheduled_time_s", "first_token_time_s", "completion_time_s"]


def both_ways(config_kwargs: dict, framework: str, **knobs) -> tuple:
    results = []
    for fast in (False, True):
        kwargs = dict(config_kwargs)
        kwargs["simulation"] = {**kwargs.get("simulation", {}), "fast_forward": fast}
        config = make_config(**kwargs)
        fw = conf_file("framework", framework)
        fw.update(knobs)
        config["framework"] = fw
        results.append(run_quietly(config))
    return results


def assert_same_results(slow_run: tuple, fast_run: tuple, framework: str) -> None:
    """Every request, every step and every summary metric identical."""
    (slow_summary, slow, slow_steps), (fast_summary, fast, fast_steps) = slow_run, fast_run
    pd.testing.assert_frame_equal(slow, fast, check_exact=True)
    pd.testing.assert_frame_equal(slow_steps, fast_steps, check_exact=True)
    slow_metrics, fast_metrics = slow_summary["frameworks"][framework], fast_summary["frameworks"][framework]
    assert slow_metrics == fast_metrics


@pytest.mark.parametrize(
    ("framework", "knobs"),
    [
        ("vllm", {}),
        ("vllm", {"num_gpu_blocks_override": 400}),
        ("vllm", {"num_gpu_blocks_override": 400, "enable_prefix_caching": False}),
        ("vllm", {"max_num_batched_tokens": 512, "max_num_seqs": 32}),
        ("vllm", {"max_num_seqs": 4}),
        ("vllm", {"engine_version": "v0"}),
        ("vllm", {"engine_version": "v0", "enable_chunked_prefill": True, "num_gpu_blocks_override": 300}),
        ("vllm", {"engine_version": "v0", "num_gpu_blocks_override": 300, "preemption_mode": "swap"}),
        (
            "vllm",
            {
                "engine_version": "v0",
                "enable_chunked_prefill": True,
                "num_gpu_blocks_override": 300,
                "preemption_mode": "swap",
            },
        ),
        ("trtllm", {}),
        ("trtllm", {"num_gpu_blocks_override": 150}),
        ("trtllm", {"capacity_scheduler_policy": "MAX_UTILIZATION", "num_gpu_blocks_override": 120}),
        ("trtllm", {"enable_chunked_prefill": True, "max_num_tokens": 256, "tokens_per_block": 8}),
        ("trtllm", {"capacity_scheduler_policy": "STATIC_BATCH", "max_batch_size": 16}),
        ("sglang", {}),
        ("sglang", {"num_gpu_blocks_override": 6000}),
    ],
)
def test_fast_forward_matches_step_by_step_per_request(framework, knobs):
    workload = {"rate": 6, "total_duration": 20, "client_profiles": [CHAT]}
    slow_run, fast_run = both_ways({"workload": workload}, framework, **knobs)
    assert_same_results(slow_run, fast_run, framework)


@pytest.mark.parametrize(("framework", "chunk"), [("vllm", 1), ("trtllm", 1), ("vllm", 3)])
def test_fast_forward_matches_step_by_step_when_stopped_mid_run_with_warm_up(framework, chunk):
    """A time limit that cuts requests off mid-answer, a warm-up window, streams in chunks."""
    workload = {"rate": 12, "total_duration": 30, "stream_chunk_tokens": chunk, "client_profiles": [CHAT]}
    slow_run, fast_run = both_ways(
        {
            "workload": workload,
            "simulation": {"max_simulation_time": 17.3},
            "metrics": {"warm_up_duration_s": 3.0},
        },
        framework,
    )
    assert slow_run[0]["frameworks"][framework]["incomplete"] > 0
    assert_same_results(slow_run, fast_run, framework)


def test_fast_forward_matches_step_by_step_in_a_closed_loop():
    """Completion order drives a closed loop's next sends: it must be the same."""
    workload = {
        "kind": "closed_loop",
        "concurrency": 24,
        "num_requests": 300,
        "think_time_dist_config": {"type": "Exponential", "rate": 2.0},
        "client_profiles": [CHAT],
    }
    slow_run, fast_run = both_ways({"workload": workload}, "vllm", num_gpu_blocks_override=600)
    assert_same_results(slow_run, fast_run, "vllm")


@pytest.mark.parametrize(
    ("model", "framework", "knobs"),
    [
        ("mistral_7b", "vllm", {}),
        ("gemma2_9b", "vllm", {"num_gpu_blocks_override": 2500}),
        ("mistral_7b", "trtllm", {"capacity_scheduler_policy": "MAX_UTILIZATION", "num_gpu_blocks_override": 700}),
    ],
)
def test_fast_forward_matches_step_by_step_when_contexts_cross_the_sliding_window(model, framework, knobs):
    """Prompts just under the 4,096-token window: decoders cross it at different steps."""
    long_chat = {
        **CHAT,
        "prompt_tokens_dist_config": {"type": "Uniform", "low": 3600, "high": 4200, "is_int": True},
        "max_output_tokens_dist_config": {"type": "Uniform", "low": 50, "high": 600, "is_int": True},
    }
    workload = {"rate": 3, "total_duration": 20, "client_profiles": [long_chat]}
    slow_run, fast_run = both_ways({"workload": workload, "model": model}, framework, **knobs)
    assert_same_results(slow_run, fast_run, framework)


def test_fast_forward_handles_sliding_window_models():
    workload = {"kind": "offline", "num_requests": 6, "client_profiles": [constant_profile(4000, 300)]}
    (_, slow, _), (_, fast, _) = both_ways({"workload": workload, "model": "mistral_7b"}, "vllm")
    pd.testing.assert_frame_equal(slow[TIMES], fast[TIMES], check_exact=True)


@pytest.mark.parametrize(
    ("framework", "time_scale", "blocks"), [("vllm", 0.05, 1500), ("vllm", 0.3, 3000), ("trtllm", 0.05, 800)]
)
def test_fast_forward_matches_step_by_step_on_a_compressed_trace_with_early_follow_ups(framework, time_scale, blocks):
    """A compressed trace sends conversation turns (containing the previous answer) while it still decodes."""
    workload = conf_file("workload", "trace")
    workload.update({"time_scale": time_scale, "num_requests": 600})
    slow_run, fast_run = both_ways({"workload": workload}, framework, num_gpu_blocks_override=blocks)
    assert slow_run[0]["frameworks"][framework]["prefix_cache_hit_rate"] > 0
    assert_same_results(slow_run, fast_run, framework)


@pytest.mark.parametrize(
    ("framework", "knobs", "workload"),
    [
        ("vllm", {"num_gpu_blocks_override": 400}, {"rate": 6, "total_duration": 20, "client_profiles": [CHAT]}),
        ("trtllm", {"capacity_scheduler_policy": "MAX_UTILIZATION", "num_gpu_blocks_override": 120}, None),
        ("vllm", {"num_gpu_blocks_override": 1500}, "trace"),
    ],
)
def test_registering_private_prompts_when_freed_changes_nothing(monkeypatch, framework, knobs, workload):
    """Private prompts' blocks are hashed and registered only when freed; every result is the same."""
    if workload is None:
        workload = {"rate": 8, "total_duration": 20, "client_profiles": [CHAT]}
    elif workload == "trace":
        workload = {**conf_file("workload", "trace"), "time_scale": 0.05, "num_requests": 600}
    config = make_config(workload=workload)
    config["framework"] = {**conf_file("framework", framework), **knobs}
    shortcut = run_quietly(config)
    monkeypatch.setattr(KVCacheManager, "private_shortcuts", False)
    as_they_fill = run_quietly(config)
    metrics = shortcut[0]["frameworks"][framework]
    assert metrics["prefix_cache_hit_rate"] > 0 or metrics["preemptions"] > 0  # lookups that could differ
    assert_same_results(as_they_fill, shortcut, framework)


def test_fast_forward_matches_step_by_step_with_three_frameworks_side_by_side():
    """Each framework fast-forwards past the others' events (and its stretches end on the exact clock)."""
    results = []
    for fast in (False, True):
        workload = {**conf_file("workload", "chat"), "rate": 12, "total_duration": 60}
        config = make_config(workload=workload, simulation={"fast_forward": fast})
        config.pop("framework")
        config["frameworks"] = {name: conf_file("framework", name) for name in ("vllm", "trtllm", "sglang")}
        results.append(run_quietly(config))
    (slow_summary, slow, slow_steps), (fast_summary, fast, fast_steps) = results
    pd.testing.assert_frame_equal(slow, fast, check_exact=True)
    # frameworks record their steps in an order fast-forwarding changes; the series is by framework
    assert list(pd.unique(fast_steps["framework"])) == ["sglang", "trtllm", "vllm"]
    pd.testing.assert_frame_equal(slow_steps, fast_steps, check_exact=True)
    assert slow_summary["frameworks"] == fast_summary["frameworks"]


def test_bucketed_step_series_is_the_same_to_the_bit_with_and_without_fast_forward(monkeypatch):
    """Chunks cut the recorded steps of three frameworks at places fast-forwarding moves: each bucket
    is still summed over its own steps in one pass."""
    import llmsim.metrics.step_series as step_series_module

    monkeypatch.setattr(step_series_module, "STEP_CHUNK", 1000)
    tables = []
    for fast in (False, True):
        workload = {**conf_file("workload", "chat"), "rate": 12, "total_duration": 30}
        config = make_config(
            workload=workload, simulation={"fast_forward": fast}, metrics={"step_series_bucket_s": 1.0}
        )
        config.pop("framework")
        config["frameworks"] = {name: conf_file("framework", name) for name in ("vllm", "trtllm", "sglang")}
        tables.append(run_quietly(config)[2])
    assert len(tables[0]) > 90 and tables[0]["steps"].sum() > 5 * 1000
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
