"""TensorRT-LLM as trtllm-bench runs it: limits sized from the dataset, the longest prompt always fits."""

from __future__ import annotations

import pytest
from conftest import conf_file, constant_profile, make_config, trace_workload
from scenario import framework_for, run_quietly

from llmsim.frameworks.trtllm_bench import calc_engine_setting, finetune_setting, fit_longest_prompt
from llmsim.hardware.spec import GIB


@pytest.mark.parametrize(
    ("requests", "isl", "osl", "expected"),
    [
        (100, 128, 128, (128, 2048)),  # batch rounded up to 32s (at least 64), tokens at least 2048
        (300, 5000, 500, (384, 3328)),  # 300 -> 3 x 128; 300 x 11 = 3300 -> 13 x 256
        (5000, 1000, 1000, (4096, 8192)),  # the batch caps at 4096 requests
        (20000, 2000, 100, (4096, 32768)),  # the tokens cap at 32768
    ],
)
def test_finetune_setting_rounds_the_raw_limits_up_as_trtllm_bench_does(requests, isl, osl, expected):
    assert finetune_setting(requests, isl, osl) == expected


def test_engine_settings_follow_from_the_kv_memory_left_after_the_weights():
    # 80 GiB, 8 GiB of bf16 weights: (80 - 8) x 0.9 = 64.8 GiB of cache; 2 x 32 x 8 x 128 x 2 B = 1/8192
    # GiB per token; 2,000 tokens a request -> 265.4 requests -> batch 384, tokens max(2048, 531) = 2048
    settings = calc_engine_setting(
        gpu_memory_bytes=80 * GIB,
        param_count=4 * GIB,
        weight_dtype="bf16",
        kv_dtype="bf16",
        num_attention_layers=32,
        num_kv_heads=8,
        head_size=128,
        tp=1,
        pp=1,
        target_input_len=1000,
        target_output_len=1000,
        kv_cache_gpu_mem_fraction=0.9,
    )
    assert settings.cache_memory_gib == pytest.approx(64.8)
    assert settings.kv_cache_max_requests == pytest.approx(64.8 * 8192 / 2000)
    assert (settings.max_batch_size, settings.max_num_tokens) == (384, 2048)


def test_without_chunking_the_token_budget_grows_to_the_longest_prompt_plus_a_token_per_request():
    assert fit_longest_prompt(2048, 384, 5000) == 5384
    assert fit_longest_prompt(8192, 384, 5000) == 8192


def trtllm_config(workload: dict, model: str = "llama3_8b", **knobs) -> dict:
    """An H100 running TensorRT-LLM (its conf file plus ``knobs``) on ``workload``."""
    config = make_config(hardware="h100", model=model, workload=workload)
    config["framework"] = {**conf_file("framework", "trtllm"), **knobs}
    return config


def trtllm(workload: dict, **knobs):
    return framework_for(trtllm_config(workload, **knobs))


def test_an_offline_batch_takes_trtllm_bench_limits_and_a_served_workload_the_llm_api_defaults():
    offline = trtllm({"num_requests": 10, "client_profiles": [constant_profile(5000, 500)]})
    served = trtllm({"rate": 1, "total_duration": 5, "client_profiles": [constant_profile(5000, 500)]})
    assert offline.settings_from == "trtllm-bench"
    expected_batch, expected_tokens = finetune_setting(offline.bench_settings.kv_cache_max_requests, 5000, 500)
    assert offline.max_batch_size == expected_batch
    assert offline.max_num_tokens == max(expected_tokens, 5000 + expected_batch)
    assert (served.settings_from, served.max_batch_size, served.max_num_tokens) == ("llm_api", 2048, 8192)


def test_set_limits_win_over_the_heuristic():
    framework = trtllm(
        {"num_requests": 10, "client_profiles": [constant_profile(1000, 100)]}, max_batch_size=8, max_num_tokens=4096
    )
    assert (framework.max_batch_size, framework.max_num_tokens) == (8, 4096)


def test_a_prompt_longer_than_the_llm_api_budget_runs_under_trtllm_bench_instead_of_being_refused():
    workload = {"num_requests": 2, "client_profiles": [constant_profile(10_000, 10)]}
    config = trtllm_config(workload, model="qwen2_5_7b")  # a 32k context
    _, requests, _ = run_quietly(config)
    assert list(requests["status"]) == ["completed", "completed"]
    config["framework"]["settings_from"] = "llm_api"
    _, refused, _ = run_quietly(config)
    assert (refused["status"] != "completed").all()


def two_prompts_sharing_a_system_prompt(tmp_path, **knobs):
    """Two requests at t=0 whose 1,100-token prompts open with the same 1,024-token system prompt."""
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "arrival_time,input_tokens,output_tokens,prefix_group,prefix_tokens\n0,1100,4,g0,1024\n0,1100,4,g0,1024\n"
    )
    config = make_config(hardware="h100", workload=trace_workload(trace, client_link=False))
    config["framework"] = {**conf_file("framework", "trtllm"), "settings_from": "llm_api", **knobs}
    _, requests, _ = run_quietly(config)
    return requests.sort_values("request_id").reset_index(drop=True)


def test_with_block_reuse_a_request_waits_a_step_to_reuse_blocks_another_is_computing(tmp_path):
    requests = two_prompts_sharing_a_system_prompt(tmp_path)
    # the second's first block is being computed by the first: it is skipped for a step, then reuses
    # the 32 full blocks (1,024 tokens) of the shared prompt
    assert requests.loc[1, "first_scheduled_time_s"] > requests.loc[0, "first_scheduled_time_s"]
    assert requests.loc[1, "cached_prompt_tokens"] == 1024


def test_without_block_reuse_both_prompts_are_computed_in_the_same_step(tmp_path):
    requests = two_prompts_sharing_a_system_prompt(tmp_path, enable_block_reuse=False)
    assert requests.loc[1, "first_scheduled_time_s"] == requests.loc[0, "first_scheduled_time_s"]
    assert requests.loc[1, "cached_prompt_tokens"] == 0
