"""Scenario stories: a few requests whose timelines can be computed step by step by hand."""

from __future__ import annotations

import pytest
from conftest import constant_profile, make_config
from scenario import framework_for, run_quietly, step_time

UP_1 = 1e-4  # client link latency (conf/hardware: 100 us, 10 Gbps)
BYTES_PER_TOKEN_BITS = 2 * 8


def link_delay(tokens: int) -> float:
    return UP_1 + tokens * BYTES_PER_TOKEN_BITS / 1e10


def test_single_streamed_request_timeline_is_prefill_then_one_decode_step_per_token():
    config = make_config(
        workload={
            "kind": "offline",
            "num_requests": 1,
            "client_link": True,
            "client_profiles": [constant_profile(100, 3)],
        }
    )
    fw = framework_for(config)
    prefill = step_time(fw, prefill=[(100, 0, True)])
    decode_1 = step_time(fw, decode=[101])
    decode_2 = step_time(fw, decode=[102])
    _, requests, steps = run_quietly(config)
    row = requests.iloc[0]
    arrival = link_delay(100)
    assert row["arrival_time_s"] == pytest.approx(arrival, abs=1e-12)
    assert row["first_scheduled_time_s"] == pytest.approx(arrival, abs=1e-12)
    assert row["first_token_time_s"] == pytest.approx(arrival + prefill + link_delay(1), abs=1e-12)
    assert row["completion_time_s"] == pytest.approx(arrival + prefill + decode_1 + decode_2 + link_delay(1), abs=1e-12)
    assert row["tpot_ms"] == pytest.approx((decode_1 + decode_2) / 2 * 1e3, rel=1e-9)
    assert list(steps["num_prefill_tokens"]) == [100, 0, 0]
    assert list(steps["num_decode_seqs"]) == [0, 1, 1]


def test_long_prompt_is_chunked_by_the_token_budget_and_samples_only_after_the_last_chunk():
    config = make_config(
        framework={"max_num_batched_tokens": 64, "max_num_seqs": 8},
        workload={
            "kind": "offline",
            "num_requests": 1,
            "client_link": True,
            "client_profiles": [constant_profile(100, 2)],
        },
    )
    fw = framework_for(config)
    chunk_1 = step_time(fw, prefill=[(64, 0, False)])
    chunk_2 = step_time(fw, prefill=[(36, 64, True)])
    decode = step_time(fw, decode=[101])
    _, requests, steps = run_quietly(config)
    row = requests.iloc[0]
    arrival = link_delay(100)
    assert list(steps["num_prefill_tokens"]) == [64, 36, 0]
    assert row["first_token_time_s"] == pytest.approx(arrival + chunk_1 + chunk_2 + link_delay(1), abs=1e-12)
    assert row["completion_time_s"] == pytest.approx(arrival + chunk_1 + chunk_2 + decode + link_delay(1), abs=1e-12)


def test_running_requests_are_served_first_and_a_new_prompt_is_chunked_into_the_leftover_budget():
    # Two offline requests of 40 tokens under a 48-token budget: step 1 prefills the first prompt and
    # the first 8 tokens of the second; step 2 decodes the first and finishes the second's prompt.
    config = make_config(
        framework={"max_num_batched_tokens": 48, "max_num_seqs": 8},
        workload={"kind": "offline", "num_requests": 2, "client_profiles": [constant_profile(40, 2)]},
    )
    fw = framework_for(config)
    _, requests, steps = run_quietly(config)
    first = step_time(fw, prefill=[(40, 0, True), (8, 0, False)])
    second = step_time(fw, prefill=[(32, 8, True)], decode=[41])
    # an offline batch runs in-process (no client link): both are queued at t=0, answers reach the client at once
    assert list(steps["num_prefill_tokens"][:2]) == [48, 32]
    assert list(steps["num_decode_seqs"][:2]) == [0, 1]
    r0, r1 = requests.iloc[0], requests.iloc[1]
    assert r1["first_scheduled_time_s"] == 0.0
    assert r0["first_token_time_s"] == pytest.approx(first, abs=1e-12)
    assert r1["first_token_time_s"] == pytest.approx(first + second, abs=1e-12)
    assert r0["completion_time_s"] == pytest.approx(first + second, abs=1e-12)


def test_non_streamed_response_arrives_whole_so_ttft_equals_e2el():
    config = make_config(
        workload={"kind": "offline", "num_requests": 1, "client_profiles": [constant_profile(100, 20, streaming=0.0)]}
    )
    _, requests, _ = run_quietly(config)
    row = requests.iloc[0]
    assert row["ttft_ms"] == pytest.approx(row["e2el_ms"], abs=1e-9)
    # The whole answer (20 tokens x 2 bytes) crosses the link after the last step.
    assert row["completion_time_s"] > row["first_scheduled_time_s"]


def test_second_turn_of_a_conversation_reuses_the_cached_prefix():
    profile = constant_profile(
        100,
        40,
        conversational_probability=1.0,
        max_conversation_turns=2,
        conversation_think_time_dist_config={"type": "Constant", "value": 1.0},
    )
    config = make_config(workload={"kind": "offline", "num_requests": 1, "client_profiles": [profile]})
    _, requests, _ = run_quietly(config)
    first, second = requests.iloc[0], requests.iloc[1]
    assert second["prompt_tokens"] == 100 + 40 + 100
    # Every full block of the first turn's prompt and answer (140 tokens -> 8 blocks of 16) is reused.
    assert second["cached_prompt_tokens"] == 8 * 16
    assert second["send_time_s"] == pytest.approx(first["completion_time_s"] + 1.0, abs=1e-12)


def test_prefix_caching_off_gives_no_hits():
    profile = constant_profile(100, 40, conversational_probability=1.0, max_conversation_turns=2)
    config = make_config(
        framework={"enable_prefix_caching": False},
        workload={"kind": "offline", "num_requests": 1, "client_profiles": [profile]},
    )
    summary, requests, _ = run_quietly(config)
    assert (requests["cached_prompt_tokens"] == 0).all()
    assert summary["frameworks"]["vllm"]["prefix_cache_hit_rate"] == 0.0


def test_preempted_request_is_recomputed_from_scratch_and_still_completes():
    # 12 blocks of 16 tokens; two requests of 64 prompt + 64 output need 8 blocks each at the end:
    # the later one is preempted when the cache runs out, then recomputed once the first finishes.
    config = make_config(
        framework={"num_gpu_blocks_override": 12, "enable_prefix_caching": False},
        workload={"kind": "offline", "num_requests": 2, "client_profiles": [constant_profile(64, 64)]},
    )
    summary, requests, steps = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    assert metrics["completed"] == 2
    assert metrics["preemptions"] >= 1
    victim = requests.loc[requests["preemptions"] > 0].iloc[0]
    survivor = requests.loc[requests["preemptions"] == 0].iloc[0]
    assert victim["request_id"] == 1  # the last admitted request is the victim
    assert victim["completion_time_s"] > survivor["completion_time_s"]
    assert (requests["output_tokens"] == 64).all()
    # The recomputation prefills prompt + the tokens generated before preemption in one go.
    recompute = steps.iloc[1:].loc[steps["num_prefill_tokens"].iloc[1:] > 64]
    assert len(recompute) == 1
    assert steps["kv_blocks_used"].max() <= 12


def test_request_longer_than_max_model_len_is_rejected_with_a_reason():
    config = make_config(
        framework={"max_model_len": 128},
        workload={"kind": "offline", "num_requests": 1, "client_profiles": [constant_profile(100, 50)]},
    )
    summary, requests, _ = run_quietly(config)
    assert summary["frameworks"]["vllm"]["failed"] == 1
    assert requests.iloc[0]["status"] == "rejected"
    assert "max_model_len 128" in requests.iloc[0]["reason"]


def test_request_that_can_never_fit_in_the_kv_cache_is_rejected_not_deadlocked():
    config = make_config(
        framework={"num_gpu_blocks_override": 4},
        workload={"kind": "offline", "num_requests": 2, "client_profiles": [constant_profile(100, 10)]},
    )
    summary, requests, _ = run_quietly(config)
    assert summary["frameworks"]["vllm"]["failed"] == 2
    assert requests["reason"].str.contains("KV cache").all()
