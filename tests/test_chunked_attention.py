"""Chunked local attention (Llama-4): a token sees only the tokens of its own chunk.

Layers with chunked attention read ``p mod chunk + 1`` keys for the token at position ``p`` (0-based),
and vLLM's hybrid KV manager keeps them in their own KV-cache groups that free every block before the
current chunk (``ChunkedLocalAttentionManager``).
"""

from __future__ import annotations

import pytest
from conftest import conf_file, constant_profile, make_config
from scenario import run_quietly
from test_fast_forward import CHAT, assert_same_results

from llmsim.frameworks.kv_groups import KVGroup, vllm_kv_groups
from llmsim.hardware.perf_model import BatchShape, LayerKind
from llmsim.models import ModelProfile, builtin_model_profiles

PROFILES = builtin_model_profiles()


def brute_pairs(new: int, context: int, chunk: int) -> int:
    """Query-key pairs of ``new`` tokens after ``context`` cached ones, one position at a time."""
    return sum(position % chunk + 1 for position in range(context, context + new))


@pytest.mark.parametrize(("new", "context"), [(1, 0), (5, 3), (8, 0), (9, 0), (3, 7), (20, 5), (16, 16), (1, 31)])
def test_a_prefill_chunk_attends_within_each_tokens_own_chunk(new, context):
    batch = BatchShape(window=8, chunked=True)
    batch.add_prefill(new, context, samples_token=True)
    assert batch.windowed_prefill_attn_pairs == brute_pairs(new, context, 8)
    assert batch.windowed_prefill_kv_tokens == context % 8 + new
    assert batch.prefill_attn_pairs == new * (context + (new + 1) / 2)  # full layers see everything


@pytest.mark.parametrize(("context", "attended"), [(1, 1), (8, 8), (9, 1), (12, 4), (16, 8), (17, 1)])
def test_a_decode_token_reads_only_its_chunk(context, attended):
    batch = BatchShape(window=8, chunked=True)
    batch.add_decode(context)
    assert batch.windowed_decode_kv_tokens == attended
    assert batch.decode_kv_tokens == context


def test_a_sliding_window_keeps_the_last_tokens_where_a_chunk_starts_afresh():
    sliding, chunked = BatchShape(window=8), BatchShape(window=8, chunked=True)
    for batch in (sliding, chunked):
        batch.add_decode(12)
    assert (sliding.windowed_decode_kv_tokens, chunked.windowed_decode_kv_tokens) == (8, 4)


def test_llama4_scout_has_36_chunked_moe_layers_and_12_global_moe_layers():
    scout = PROFILES["llama4_scout"]
    assert [scout.is_window_layer(i) for i in range(8)] == [True, True, True, False] * 2
    assert (scout.num_moe_layers, scout.num_window_layers, scout.attention_window) == (48, 36, 8192)


def test_llama4_maverick_alternates_dense_and_moe_layers_and_its_global_layers_are_moe():
    maverick = PROFILES["llama4_maverick"]
    assert [maverick.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    assert maverick.num_moe_layers == 24
    kinds = {}
    for index in range(48):
        kind = LayerKind(maverick.is_moe_layer(index), maverick.is_window_layer(index))
        kinds[kind] = kinds.get(kind, 0) + 1
    # global layers 3, 7, ..., 47 are odd, so MoE (transformers: moe_layers 1, 3, ...; NoPE every 4th)
    assert kinds == {LayerKind(False, True): 24, LayerKind(True, True): 12, LayerKind(True, False): 12}


def test_vllm_groups_llama4_into_one_full_and_three_chunked_groups_of_12_layers():
    layout = vllm_kv_groups(PROFILES["llama4_scout"])
    assert [(g.layers, g.window, g.chunked) for g in layout.groups] == [(12, None, False)] + [(12, 8192, True)] * 3


def test_a_chunked_group_frees_every_block_before_the_current_chunk():
    group = KVGroup(12, 64, chunked=True)
    assert [group.skipped_tokens(c) for c in (0, 63, 64, 65, 130)] == [0, 0, 64, 64, 128]
    # 130 tokens computed, slots for 131: blocks of 16: 9 in all, the first 128 // 16 = 8 freed
    assert group.blocks_held(131, 130, 16) == 1
    # vLLM ChunkedLocalAttentionSpec.max_admission_blocks_per_request: cdiv(min(chunk + batch, len), bs)
    assert group.max_blocks_per_request(2048, 1 << 20, 16) == (64 + 2048) // 16
    assert KVGroup(12, 64).max_blocks_per_request(2048, 1 << 20, 16) == (63 + 2048 + 15) // 16 + 1


def test_a_model_has_a_sliding_window_or_an_attention_chunk_not_both():
    fields = conf_file("model", "llama3_8b")
    with pytest.raises(ValueError, match="either sliding_window or attention_chunk_size"):
        ModelProfile(**{**fields, "sliding_window": 4096, "attention_chunk_size": 8192})


def chunked_llama(chunk: int = 512) -> dict:
    """Llama-3-8B with chunked local attention on three of every four layers (a small Llama-4-like model)."""
    return {**conf_file("model", "llama3_8b"), "attention_chunk_size": chunk, "chunked_attention_layers": 24}


def both_ways(framework: str, workload: dict, **knobs) -> tuple:
    results = []
    for fast in (False, True):
        config = make_config(workload=workload, simulation={"fast_forward": fast})
        config["model"] = chunked_llama()
        config["framework"] = {**conf_file("framework", framework), **knobs}
        results.append(run_quietly(config))
    return results


@pytest.mark.parametrize(
    ("framework", "knobs"),
    [
        ("vllm", {}),
        ("vllm", {"num_gpu_blocks_override": 900}),
        ("trtllm", {}),
        ("trtllm", {"capacity_scheduler_policy": "MAX_UTILIZATION", "num_gpu_blocks_override": 700}),
        ("sglang", {}),
    ],
)
def test_fast_forward_matches_step_by_step_when_decoders_cross_chunk_boundaries(framework, knobs):
    """Contexts around the 512-token chunk: decoders start new chunks at different steps."""
    crossing = {
        **CHAT,
        "prompt_tokens_dist_config": {"type": "Uniform", "low": 300, "high": 1100, "is_int": True},
        "max_output_tokens_dist_config": {"type": "Uniform", "low": 50, "high": 900, "is_int": True},
    }
    workload = {"rate": 4, "total_duration": 20, "client_profiles": [crossing]}
    slow_run, fast_run = both_ways(framework, workload, **knobs)
    assert_same_results(slow_run, fast_run, framework)


def test_chunked_layers_make_long_decodes_cheaper_than_full_attention():
    def decode_time(model: dict) -> float:
        config = make_config(workload={"num_requests": 1, "client_profiles": [constant_profile(6000, 200)]})
        config["model"] = model
        _, requests, _ = run_quietly(config)
        return float(requests["completion_time_s"].iloc[0] - requests["first_token_time_s"].iloc[0])

    assert decode_time(chunked_llama()) < decode_time(conf_file("model", "llama3_8b"))
