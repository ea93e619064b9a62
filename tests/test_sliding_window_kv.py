"""Sliding-window KV (vLLM v1's hybrid KV cache manager): windowed groups hold only the window.

gpt-oss-120b has 18 full-attention and 18 sliding-window (128-token) layers: vLLM 0.33 makes two
KV-cache groups of 18 layers sharing one pool of blocks that each span 18 layers, and frees a
windowed group's blocks once they fall ``window - 1`` tokens behind the computed tokens.
"""

from __future__ import annotations

import contextlib
import io

from conftest import conf_file, constant_profile, make_config
from test_kv_cache import make_request

from llmsim import ExperimentOrchestrator
from llmsim.frameworks.kv_cache import KVCacheManager
from llmsim.frameworks.kv_groups import (
    KVGroup,
    KVGroupLayout,
    sglang_swa_pool_tokens,
    sglang_uses_swa_pool,
    vllm_kv_groups,
)
from llmsim.models import builtin_model_profiles

PROFILES = builtin_model_profiles()
GPT_OSS = vllm_kv_groups(PROFILES["gpt_oss_120b"])


def windowed_real_blocks(kv: KVCacheManager, request) -> int:
    """Blocks the request really holds in its windowed group (the second group of gpt-oss)."""
    return sum(1 for b in kv._tables(request)[1] if b >= 0)


def run(config: dict):
    orchestrator = ExperimentOrchestrator(config)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = orchestrator.run(show_progress=False)
    framework = orchestrator.llm_framework_instances[0]
    return summary["frameworks"][framework.framework_id], orchestrator.metrics_collector, framework


def test_vllm_groups_gpt_oss_into_one_full_and_one_windowed_group_of_18_layers():
    assert KVGroupLayout((KVGroup(18), KVGroup(18, 128))) == GPT_OSS
    assert vllm_kv_groups(PROFILES["mistral_7b"]) == KVGroupLayout((KVGroup(32, 4096),))
    assert vllm_kv_groups(PROFILES["gemma2_9b"]) == KVGroupLayout((KVGroup(21), KVGroup(21, 4096)))
    assert not vllm_kv_groups(PROFILES["llama3_8b"]).is_hybrid


def test_admitting_a_whole_100k_sequence_reserves_the_window_plus_a_batch_in_the_windowed_group():
    # full group: 6250 blocks; windowed group capped at cdiv(127 + 8192, 16) + 1 = 521 (vLLM's admission cap)
    assert GPT_OSS.admission_blocks(100_000, 16, in_flight_tokens=8192, max_model_len=131_072) == 6250 + 521
    # a short sequence needs no more than its own blocks in either group
    assert GPT_OSS.admission_blocks(100, 16, in_flight_tokens=8192, max_model_len=131_072) == 7 + 7


def test_gpt_oss_request_at_100k_context_holds_window_sized_blocks_in_windowed_layers():
    kv = KVCacheManager(20_000, 16, enable_caching=False, groups=GPT_OSS)
    request = make_request((1, 100_000), output_tokens=10)
    # chunked prefill of 8192 tokens a step: chunk one takes 512 blocks in each group
    assert kv.allocate_slots(request, 8192)
    assert kv.num_used == 1024
    request.num_computed_tokens = 8192
    # chunk two: the first 8192 - 127 = 8065 tokens are behind the window: 504 blocks freed
    assert kv.allocate_slots(request, 8192)
    assert windowed_real_blocks(kv, request) == 1024 - 504
    computed = 16_384
    while computed < 100_000:  # the remaining chunks, each allocated after the one before is computed
        request.num_computed_tokens = computed
        chunk = min(8192, 100_000 - computed)
        assert kv.allocate_slots(request, chunk)
        assert windowed_real_blocks(kv, request) <= (127 + 8192) // 16 + 2
        computed += chunk
    request.num_computed_tokens = 100_000
    assert kv.allocate_slots(request, 1)  # the first decode: token 100001 opens block 6251
    # 100000 - 127 = 99873 tokens skipped = 6242 whole blocks; 6251 - 6242 = 9 = window/16 + 1
    assert len(request.blocks) == 6251
    assert windowed_real_blocks(kv, request) == 9
    assert kv.num_used == 6251 + 9
    kv.free(request)
    assert kv.num_used == 0 and kv.held == 0


def test_windowed_blocks_are_freed_as_the_window_slides_during_decode():
    kv = KVCacheManager(1000, 16, enable_caching=False, groups=GPT_OSS)
    request = make_request((1, 200), output_tokens=100)
    assert kv.allocate_slots(request, 200)
    used = []
    for computed in range(200, 260):
        request.num_computed_tokens = computed
        assert kv.allocate_slots(request, 1)
        used.append(kv.num_used)
        full = -(-(computed + 1) // 16)
        assert kv.num_used == full + full - (computed - 127) // 16
        assert windowed_real_blocks(kv, request) <= 9  # window / block + 1
    # at 200 computed: 13 + 13 - 4 = 22; at 259: 17 + 17 - 8 = 26 (only the full group grows)
    assert used[0] == 22 and used[-1] == 26


def test_allocation_is_refused_by_the_per_group_footprint_not_the_full_length():
    # a 1000-token decoder holds 63 full + 9 windowed blocks = 72 (its prefill took 63 + 63 at once);
    # 200 blocks of 18 layers are the memory of 100 blocks of 36 layers, where each needs 63
    kv = KVCacheManager(200, 16, enable_caching=False, groups=GPT_OSS)
    first, second = make_request((1, 999), output_tokens=50), make_request((2, 999), output_tokens=50, request_id=1)
    for request in (first, second):
        assert kv.allocate_slots(request, 999)
        request.num_computed_tokens = 999
        assert kv.allocate_slots(request, 1)
    assert kv.num_used == 2 * (63 + 63 - 54)  # 999 - 127 = 872 skipped tokens = 54 whole blocks
    third = make_request((3, 999), output_tokens=50, request_id=2)
    assert not kv.allocate_slots(third, 999)  # a third needs 126 blocks at once, 56 are free


def test_a_windowed_model_fits_twice_the_blocks_and_more_long_requests_than_full_attention():
    def plan(model: dict):
        config = make_config(hardware="h200", model="gpt_oss_120b", workload={"num_requests": 1})
        config["model"].update(model)
        _, _, framework = run(config)
        return framework

    windowed = plan({})
    full = plan({"sliding_window": None, "sliding_window_layers": None})
    assert full.kv_groups is None
    assert windowed.memory_plan.num_blocks in (2 * full.memory_plan.num_blocks, 2 * full.memory_plan.num_blocks + 1)
    per_request_full = -(-100_000 // 16)
    per_request_windowed = windowed.kv_groups.steady_blocks(100_000, 16)
    assert per_request_windowed == 6250 + 8  # 99999 - 127 skipped = 6242 of 6250 blocks
    assert windowed.memory_plan.num_blocks // per_request_windowed > full.memory_plan.num_blocks // per_request_full
    assert windowed.memory_plan.kv_capacity_tokens > full.memory_plan.kv_capacity_tokens


def test_models_without_windows_keep_one_group_and_the_old_block_count():
    config = make_config(hardware="h200", model="llama3_8b", workload={"num_requests": 1})
    _, _, framework = run(config)
    assert framework.kv_groups is None and framework.kv.groups is None
    plan = framework.memory_plan
    assert plan.max_request_tokens is None
    assert plan.kv_bytes_per_token == PROFILES["llama3_8b"].kv_bytes_per_token("bf16")


def test_fast_forward_gives_identical_results_for_a_windowed_model_under_pressure():
    def once(fast: bool):
        config = make_config(
            hardware="h200",
            model="gpt_oss_120b",
            framework={"num_gpu_blocks_override": 600},
            workload={"num_requests": 12, "client_profiles": [constant_profile(700, 300)]},
            simulation={"fast_forward": fast},
        )
        _, collector, framework = run(config)
        assert framework.kv.num_used == 0
        return collector.get_all_request_metrics_df(), framework.num_preemptions

    fast, slow = once(True), once(False)
    assert fast[1] == slow[1]
    assert fast[0].equals(slow[0])


def sglang_framework(model: str, **knobs):
    config = make_config(hardware="h200", model=model, workload={"num_requests": 1})
    framework = {**conf_file("framework", "sglang"), **knobs}
    config["framework"] = framework
    return run(config)[2]


def test_sglang_splits_gpt_oss_memory_into_full_and_swa_pools_by_swa_full_tokens_ratio():
    # 100 slots in each of 36 layers = 3600 layer-slots; full * 18 + 0.8 * full * 18 = 3600 -> full = 111, swa = 88
    assert sglang_swa_pool_tokens(PROFILES["gpt_oss_120b"], 100, 0.8) == (111, 88)
    hybrid = sglang_framework("gpt_oss_120b", num_gpu_blocks_override=100_000)
    assert hybrid.kv.capacity == int(100_000 * 36 / (0.8 * 18 + 18)) == 111_111
    single = sglang_framework("gpt_oss_120b", num_gpu_blocks_override=100_000, disable_hybrid_swa_memory=True)
    assert single.kv.capacity == 100_000
    ratio_one = sglang_framework("gpt_oss_120b", num_gpu_blocks_override=100_000, swa_full_tokens_ratio=1.0)
    assert ratio_one.kv.capacity == 100_000  # equal pools: every layer holds the same tokens


def test_sglang_gives_gemma2_one_full_length_pool():
    assert not sglang_uses_swa_pool(PROFILES["gemma2_9b"])  # not in SGLang's hybrid-SWA architectures
    framework = sglang_framework("gemma2_9b", num_gpu_blocks_override=50_000)
    assert framework.kv.capacity == 50_000


def test_the_same_memory_preempts_less_when_windowed_layers_hold_only_the_window():
    # 600 blocks of 18 layers are the bytes of 300 blocks of 36 layers: twelve 700 + 300-token requests
    # need 63 blocks each at full attention (756 > 300) but 63 + 9 of the smaller blocks (864 > 600) with windows
    def preemptions(blocks: int, model: dict) -> int:
        config = make_config(
            hardware="h200",
            model="gpt_oss_120b",
            framework={"num_gpu_blocks_override": blocks},
            workload={"num_requests": 12, "client_profiles": [constant_profile(700, 300)]},
        )
        config["model"].update(model)
        _, _, framework = run(config)
        return framework.num_preemptions

    windowed = preemptions(600, {})
    full = preemptions(300, {"sliding_window": None, "sliding_window_layers": None})
    # vLLM 0.33 reserves the null block (599 usable) and reuses freed partial blocks first: one more
    # preemption with windows than with all 600 blocks and tail-only freeing (3), still fewer than full attention
    assert (windowed, full) == (4, 5)


def test_a_prefix_hit_in_a_windowed_group_takes_only_the_cached_blocks_inside_the_window():
    layout = KVGroupLayout((KVGroup(32, 64),))  # every layer windowed (as Mistral), a 64-token window
    kv = KVCacheManager(100, 16, enable_caching=True, groups=layout)
    kv.private_shortcuts = False
    first = make_request((-5, 200), output_tokens=2)
    assert kv.allocate_slots(first, 200)
    first.num_computed_tokens = 200
    kv.cache_full_blocks(first)
    kv.free(first)
    second = make_request((-5, 200), output_tokens=2, request_id=1)
    computed = kv.get_computed_blocks(second)
    assert len(computed) == 12  # 199 // 16 full blocks are cached
    assert kv.allocate_slots(second, 8, computed)
    # 192 cached tokens: the first (192 - 63) // 16 = 8 blocks lie before the window and are not taken
    assert second.blocks[:8] == [-1] * 8 and second.blocks[8:12] == computed[8:]
    assert len(second.blocks) == 13 and kv.num_used == 4 + 1
    kv.free(second)
    assert kv.num_used == 0 and kv.held == 0
