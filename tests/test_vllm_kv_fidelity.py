"""vLLM 0.33's KV-cache behaviours that decide admission and eviction under pressure.

Each was found by driving vLLM 0.33.0's real scheduler beside llmsim (``tests/conformance``): the
whole-sequence admission gate (``scheduler_reserve_full_isl``), the reserved null block, the free
queue's order (blocks without content first) and prefix hits on blocks allocated earlier in the
same step. Older releases keep the behaviour they had (``framework.version``).
"""

from __future__ import annotations

from conftest import constant_profile, make_config
from scenario import framework_for, run_quietly
from test_kv_cache import make_request

from llmsim.frameworks.kv_cache import BlockPool, KVCacheManager


def test_the_null_block_leaves_one_of_the_overridden_blocks_unusable():
    v1 = framework_for(make_config(framework={"num_gpu_blocks_override": 100}))
    v0 = framework_for(make_config(framework={"num_gpu_blocks_override": 100, "engine_version": "v0"}))
    assert (v1.kv.capacity, v0.kv.capacity) == (99, 100)


def pool_after_two_freed_requests(plain_first: bool) -> BlockPool:
    """Six blocks; requests A and B each held a full cached block and a partial one, A freed first."""
    pool = BlockPool(6, enable_caching=True, free_plain_blocks_first=plain_first)
    a, b = pool.allocate(2), pool.allocate(2)
    pool.register(a[0], 111)
    pool.register(b[0], 222)
    pool.release(a)
    pool.release(b)
    return pool


def test_freed_blocks_without_content_are_reused_before_any_cached_block():
    # queue: B's partial, A's partial, the 2 never used, A's cached, B's cached: 4 blocks evict nothing
    pool = pool_after_two_freed_requests(plain_first=True)
    pool.allocate(4)
    assert set(pool.cached) == {111, 222}
    pool.allocate(1)
    assert set(pool.cached) == {222}  # least recently freed cached content goes first


def test_before_0_33_every_freed_block_joined_the_end_of_the_queue():
    # queue: the 2 never used, A's partial, A's cached, B's partial, B's cached: the 4th block evicts A's
    pool = pool_after_two_freed_requests(plain_first=False)
    pool.allocate(4)
    assert set(pool.cached) == {222}


def test_a_full_block_freed_without_a_hash_still_goes_to_the_end():
    # vLLM hashes every full block; a pool that skipped the hash (nobody can look it up) keeps its place
    pool = BlockPool(4, enable_caching=True, free_plain_blocks_first=True)
    held = pool.allocate(3)
    pool.register(held[0], 111)
    pool.release(held, full_blocks=2)  # blocks 0-1 full (0 cached), block 2 partial
    pool.allocate(2)  # the partial block, then the never-used one
    assert set(pool.cached) == {111}
    assert pool.num_free == 2


def test_a_request_later_in_the_same_step_hits_blocks_allocated_earlier_in_it():
    def hit_blocks(cache_at_allocation: bool) -> int:
        kv = KVCacheManager(100, 16, True, cache_at_allocation=cache_at_allocation)
        first = make_request((-1, 64), (1, 10), request_id=0)  # a 64-token shared system prompt
        second = make_request((-1, 64), (2, 10), request_id=1)
        assert kv.allocate_slots(first, 74, kv.get_computed_blocks(first))
        return len(kv.get_computed_blocks(second))  # before the step that computes the first has run

    assert (hit_blocks(True), hit_blocks(False)) == (4, 0)


def two_long_prompts(**knobs) -> tuple[dict, object]:
    """100 usable blocks of 16 tokens; two 1,000-token prompts (63 blocks each, 75 with the first's
    answer) under a 512-token budget: in step 2 the first finishes its prompt and 24 tokens are left."""
    summary, requests, _ = run_quietly(
        make_config(
            framework={"num_gpu_blocks_override": 101, "max_num_batched_tokens": 512, "max_num_seqs": 4, **knobs},
            workload={"num_requests": 2, "client_profiles": [constant_profile(1000, 200)]},
        )
    )
    return summary["frameworks"]["vllm"], requests.sort_values("request_id").reset_index(drop=True)


def test_a_waiting_request_is_admitted_only_when_its_whole_prompt_fits():
    # after step 2 the first holds 63 blocks: 37 free are enough for a 24-token chunk, not for 63 blocks
    _, requests = two_long_prompts()
    assert requests["preemptions"].sum() == 0
    assert requests.loc[1, "first_scheduled_time_s"] >= requests.loc[0, "completion_time_s"]


def test_admitting_on_the_first_chunk_alone_preempts_when_the_prompt_outgrows_the_cache():
    _, requests = two_long_prompts(scheduler_reserve_full_isl=False)
    assert requests["preemptions"].sum() > 0
    assert requests.loc[1, "first_scheduled_time_s"] < requests.loc[0, "completion_time_s"]


def test_the_whole_prompt_gate_is_the_default_from_0_33_and_off_before():
    newest = framework_for(make_config())
    older = framework_for(make_config(framework={"version": "0.17.0"}))
    assert (newest.reserve_full_isl, older.reserve_full_isl) == (True, False)
    assert newest.describe()["kv_mechanics"]["free_plain_blocks_first"] is True
    assert older.describe()["kv_mechanics"]["free_plain_blocks_first"] is False
