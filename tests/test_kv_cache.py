"""Mechanism tests for the paged KV cache: BlockPool, KVCacheManager and chained block hashes.

Requests are built by small factories; every test that allocates ends with a no-leak check.
"""

from __future__ import annotations

import pytest

from llmsim.frameworks.kv_cache import BlockPool, KVCacheManager, block_hashes
from llmsim.workload.request import Request, RequestSpec

BLOCK = 4  # tokens per block in every test below


# ------------------------------------------------------------------------------------------------
# factories and helpers
# ------------------------------------------------------------------------------------------------
def make_request(*prompt_segments: tuple[int, int], output_tokens: int = 4, request_id: int = 0) -> Request:
    """A fresh request whose prompt is the given (segment id, length) runs."""
    spec = RequestSpec(
        request_id=request_id,
        session_id=request_id,
        turn=0,
        profile="test",
        prompt_tokens=sum(n for _, n in prompt_segments),
        max_output_tokens=output_tokens,
        streaming=False,
        prompt_segments=tuple(prompt_segments),
        output_segment=10_000 + request_id,
    )
    return Request(spec, "fw", send_time=0.0, arrival_time=0.0)


def make_manager(num_blocks: int, enable_caching: bool = True) -> KVCacheManager:
    return KVCacheManager(num_blocks=num_blocks, block_size=BLOCK, enable_caching=enable_caching)


def admit(kv: KVCacheManager, request: Request) -> bool:
    """What a scheduler does on first admission: look up the prefix, take slots for the rest, run it."""
    computed = kv.get_computed_blocks(request)
    cached_tokens = len(computed) * kv.block_size
    if not kv.allocate_slots(request, request.num_tokens - cached_tokens, computed):
        return False
    request.num_computed_tokens = request.num_tokens  # the whole prompt is computed this step
    kv.cache_full_blocks(request)
    return True


def run_to_completion(kv: KVCacheManager, request: Request) -> None:
    """Admit, then decode every output token (one slot per token), registering full blocks."""
    assert admit(kv, request)
    while not request.is_finished:
        assert kv.allocate_slots(request, 1)
        request.num_computed_tokens += 1
        request.num_output_tokens += 1
        kv.cache_full_blocks(request)


def assert_no_leak(pool: BlockPool) -> None:
    assert pool.num_free == pool.num_blocks
    assert pool.num_used == 0
    assert all(count == 0 for count in pool.ref_counts)


# ------------------------------------------------------------------------------------------------
# BlockPool
# ------------------------------------------------------------------------------------------------
def test_pool_with_no_blocks_is_rejected():
    with pytest.raises(ValueError):
        BlockPool(0)


def test_pool_allocate_and_release_keep_free_and_used_counts_consistent():
    pool = BlockPool(6)
    first = pool.allocate(2)
    second = pool.allocate(3)
    assert len(set(first) | set(second)) == 5
    assert pool.num_free == 1
    assert pool.num_used == 5
    assert all(pool.ref_counts[b] == 1 for b in first + second)
    pool.release(first)
    assert pool.num_free == 3
    pool.release(second)
    assert_no_leak(pool)


def test_pool_refuses_to_allocate_more_blocks_than_are_free():
    pool = BlockPool(3)
    blocks = pool.allocate(2)
    with pytest.raises(RuntimeError):
        pool.allocate(2)
    assert pool.num_free == 1  # the failed call took nothing
    pool.release(blocks)
    assert_no_leak(pool)


def test_cached_contents_are_evicted_least_recently_freed_first_tail_first():
    pool = BlockPool(4)
    a = pool.allocate(2)
    b = pool.allocate(2)
    for block, content in zip(a + b, (10, 11, 20, 21), strict=True):
        pool.register(block, content)
    pool.release(b)  # freed first: 21, then 20 (a request frees its tail first)
    pool.release(a)  # freed later: 11, then 10
    evicted = []
    for _ in range(4):
        before = set(pool.cached)
        pool.allocate(1)
        evicted.extend(before - set(pool.cached))
    assert evicted == [21, 20, 11, 10]
    pool.release(list(range(4)))
    assert_no_leak(pool)


def test_never_used_blocks_are_taken_before_cached_ones():
    pool = BlockPool(4)
    (block,) = pool.allocate(1)
    pool.register(block, 7)
    pool.release([block])
    taken = pool.allocate(3)
    assert block not in taken
    assert pool.cached == {7: block}
    assert pool.allocate(1) == [block]
    assert pool.cached == {}
    pool.release([*taken, block])
    assert_no_leak(pool)


def test_freed_blocks_without_content_ahead_of_a_cached_one_are_taken_first():
    pool = BlockPool(3)
    blocks = pool.allocate(3)
    pool.register(blocks[0], 1)
    pool.release(blocks)  # queue: blocks[2], blocks[1] (no content), then blocks[0] (content 1)
    first = pool.allocate(2)
    assert sorted(first) == sorted(blocks[1:])
    assert pool.cached == {1: blocks[0]}
    assert pool.allocate(1) == [blocks[0]]
    assert pool.cached == {}
    pool.release([*first, blocks[0]])
    assert_no_leak(pool)


def test_register_keeps_the_first_block_with_a_given_hash():
    pool = BlockPool(4)
    blocks = pool.allocate(2)
    pool.register(blocks[0], 1234)
    pool.register(blocks[1], 1234)
    assert pool.cached == {1234: blocks[0]}
    assert pool.block_hash[blocks[1]] is None
    assert pool.longest_cached_prefix([1234, 999]) == [blocks[0]]
    pool.release(blocks)
    assert_no_leak(pool)


def test_allocating_a_cached_free_block_evicts_its_hash():
    pool = BlockPool(1)
    (block,) = pool.allocate(1)
    pool.register(block, 42)
    pool.release([block])
    assert pool.longest_cached_prefix([42]) == [block]  # freed but still findable
    assert pool.allocate(1) == [block]
    assert pool.cached == {}
    assert pool.block_hash[block] is None
    assert pool.longest_cached_prefix([42]) == []
    pool.release([block])
    assert_no_leak(pool)


def test_touching_a_free_cached_block_takes_it_off_the_free_queue():
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    pool.register(block, 7)
    pool.release([block])
    assert pool.num_free == 2
    pool.touch([block])
    assert pool.ref_counts[block] == 1
    assert pool.num_free == 1
    # the only block left to allocate is the other one; the touched block keeps its content
    (other,) = pool.allocate(1)
    assert other != block
    assert pool.cached == {7: block}
    pool.release([block, other])
    assert_no_leak(pool)


# ------------------------------------------------------------------------------------------------
# KVCacheManager: slots and accounting
# ------------------------------------------------------------------------------------------------
def test_allocate_slots_takes_one_block_per_block_size_tokens_and_free_returns_them():
    kv = make_manager(8)
    request = make_request((1, 10))
    assert kv.allocate_slots(request, 10)
    assert len(request.blocks) == 3  # ceil(10 / 4)
    assert kv.pool.num_used == 3
    request.num_computed_tokens = 10

    assert kv.allocate_slots(request, 2)  # 12 tokens still fit in 3 blocks
    assert len(request.blocks) == 3
    request.num_computed_tokens = 12

    assert kv.allocate_slots(request, 1)  # the 13th token needs a fourth block
    assert len(request.blocks) == 4
    assert kv.pool.num_free == 4

    kv.free(request)
    assert request.blocks == []
    assert request.num_hashed_blocks == 0
    assert_no_leak(kv.pool)


def test_allocate_slots_refuses_when_not_enough_blocks_are_free_and_takes_nothing():
    kv = make_manager(3)
    request = make_request((1, 13))  # needs 4 blocks
    assert not kv.allocate_slots(request, 13)
    assert request.blocks == []
    assert_no_leak(kv.pool)


def test_blocks_needed_rounds_up_to_whole_blocks():
    kv = make_manager(4)
    assert [kv.blocks_needed(n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


# ------------------------------------------------------------------------------------------------
# KVCacheManager: prefix caching
# ------------------------------------------------------------------------------------------------
def test_prefix_hit_covers_full_blocks_only():
    kv = make_manager(16)
    first = make_request((1, 10), output_tokens=1)
    assert admit(kv, first)  # 10 computed tokens: blocks 0 and 1 full, block 2 half full
    assert len(kv.pool.cached) == 2
    second = make_request((1, 10), (2, 6), request_id=1)  # same 10 tokens, then different ones
    hit = kv.get_computed_blocks(second)
    assert hit == first.blocks[:2]  # the partial third block is never shared
    kv.free(first)
    assert_no_leak(kv.pool)


def test_prefix_hit_is_capped_at_one_token_less_than_the_request():
    kv = make_manager(16)
    first = make_request((1, 8), output_tokens=1)
    assert admit(kv, first)  # both blocks of the 8-token prompt are full and cached
    assert len(kv.pool.cached) == 2
    # an identical 8-token prompt may reuse at most 7 tokens: the last one must be computed
    twin = make_request((1, 8), request_id=1)
    assert kv.get_computed_blocks(twin) == first.blocks[:1]
    kv.free(first)
    assert_no_leak(kv.pool)


def test_single_block_request_gets_no_prefix_hit():
    kv = make_manager(4)
    first = make_request((1, 4), output_tokens=1)
    assert admit(kv, first)
    assert kv.get_computed_blocks(make_request((1, 4), request_id=1)) == []
    kv.free(first)
    assert_no_leak(kv.pool)


def test_requests_sharing_a_prefix_share_its_blocks_with_reference_counts():
    kv = make_manager(16)
    first = make_request((1, 8), (2, 4), output_tokens=2)
    second = make_request((1, 8), (3, 4), output_tokens=2, request_id=1)
    assert admit(kv, first)
    assert admit(kv, second)
    shared = first.blocks[:2]
    assert second.blocks[:2] == shared
    assert second.blocks[2] != first.blocks[2]  # the differing third block is private
    assert [kv.pool.ref_counts[b] for b in shared] == [2, 2]
    assert kv.pool.num_used == 4

    kv.free(first)
    assert [kv.pool.ref_counts[b] for b in shared] == [1, 1]
    assert kv.pool.num_used == 3
    kv.free(second)
    assert_no_leak(kv.pool)


def test_freed_prefix_stays_findable_until_its_blocks_are_reused():
    kv = make_manager(16)
    first = make_request((1, 8), output_tokens=4)
    run_to_completion(kv, first)
    prefix = first.blocks[:2]
    kv.free(first)
    later = make_request((1, 8), (5, 8), request_id=1)
    assert admit(kv, later)
    assert later.blocks[:2] == prefix
    assert later.num_computed_tokens == 16
    kv.free(later)
    assert_no_leak(kv.pool)


def test_cached_block_is_evicted_when_the_pool_reuses_it():
    kv = make_manager(3)
    first = make_request((1, 12), output_tokens=1)
    assert admit(kv, first)
    assert len(kv.pool.cached) == 3
    kv.free(first)
    # an unrelated request needs every block: all cached content goes
    other = make_request((9, 12), output_tokens=1, request_id=1)
    assert kv.get_computed_blocks(other) == []
    assert kv.allocate_slots(other, 12)
    assert len(kv.pool.cached) == 0
    kv.free(other)
    again = make_request((1, 12), output_tokens=1, request_id=2)
    assert kv.get_computed_blocks(again) == []
    assert_no_leak(kv.pool)


def test_leading_prefix_blocks_survive_longest_after_a_request_frees():
    kv = make_manager(3)
    first = make_request((1, 12), output_tokens=1)
    assert admit(kv, first)
    blocks = list(first.blocks)
    kv.free(first)
    # one new block evicts the tail of the freed prefix, not its head
    other = make_request((9, 4), output_tokens=1, request_id=1)
    assert kv.allocate_slots(other, 4)
    assert other.blocks == [blocks[2]]
    again = make_request((1, 12), (2, 4), request_id=2)
    assert kv.get_computed_blocks(again) == blocks[:2]
    kv.free(other)
    assert_no_leak(kv.pool)


def test_allocate_slots_counts_cached_free_blocks_it_would_touch_as_unavailable():
    kv = make_manager(4)
    first = make_request((1, 12), output_tokens=1)
    assert admit(kv, first)
    kv.free(first)  # 3 cached free blocks + 1 never used: num_free == 4
    assert kv.pool.num_free == 4

    # 20 tokens: 3 cached blocks hit, 2 more needed, but touching the hit leaves only 1 free
    big = make_request((1, 12), (2, 8), request_id=1)
    computed = kv.get_computed_blocks(big)
    assert len(computed) == 3
    assert not kv.allocate_slots(big, 8, computed)
    assert big.blocks == []
    assert_no_leak(kv.pool)
    assert len(kv.pool.cached) == 3  # a refusal evicts nothing

    # 16 tokens: 3 hit + 1 new block fits exactly
    fits = make_request((1, 12), (3, 4), request_id=2)
    computed = kv.get_computed_blocks(fits)
    assert kv.allocate_slots(fits, 4, computed)
    assert fits.blocks[:3] == computed
    assert kv.pool.num_free == 0
    kv.free(fits)
    assert_no_leak(kv.pool)


def test_disabled_caching_gives_no_prefix_hits():
    kv = make_manager(16, enable_caching=False)
    assert not kv.enable_caching
    first = make_request((1, 12), output_tokens=4)
    run_to_completion(kv, first)
    assert kv.pool.cached == {}
    twin = make_request((1, 12), (2, 4), request_id=1)
    assert kv.get_computed_blocks(twin) == []
    assert kv.pool.longest_cached_prefix(block_hashes(twin.spec.token_segments, BLOCK, 0, 3, 0)) == []
    kv.free(first)
    assert_no_leak(kv.pool)


def test_request_that_already_computed_tokens_gets_no_prefix_lookup():
    kv = make_manager(16)
    first = make_request((1, 12), output_tokens=1)
    assert admit(kv, first)
    resumed = make_request((1, 12), (2, 4), request_id=1)
    resumed.num_computed_tokens = 4
    assert kv.get_computed_blocks(resumed) == []
    kv.free(first)
    assert_no_leak(kv.pool)


def test_blocks_filled_by_generated_tokens_are_cached_for_the_next_turn():
    kv = make_manager(16)
    turn1 = make_request((1, 6), output_tokens=6)  # 12 tokens once finished: 3 full blocks
    run_to_completion(kv, turn1)
    assert len(kv.pool.cached) == 3
    blocks = list(turn1.blocks)
    kv.free(turn1)
    # the next turn's prompt is the whole first conversation plus a new user message
    turn2 = make_request(*turn1.spec.token_segments, (7, 5), request_id=1)
    assert kv.get_computed_blocks(turn2) == blocks
    assert_no_leak(kv.pool)


# ------------------------------------------------------------------------------------------------
# block_hashes
# ------------------------------------------------------------------------------------------------
def test_block_hashes_are_equal_for_identical_content():
    segments = ((1, 6), (2, 10))
    assert block_hashes(segments, BLOCK, 0, 4, 0) == block_hashes(segments, BLOCK, 0, 4, 0)
    # the same content described by a copy of the segments hashes the same
    assert block_hashes(((1, 6), (2, 10)), BLOCK, 0, 4, 0) == block_hashes(segments, BLOCK, 0, 4, 0)


def test_block_hashes_differ_when_content_differs():
    a = block_hashes(((1, 8),), BLOCK, 0, 2, 0)
    b = block_hashes(((2, 8),), BLOCK, 0, 2, 0)
    assert a[0] != b[0] and a[1] != b[1]
    # same segment, different offsets: the second block of a run differs from its first
    assert a[0] != a[1]
    # a block that switches segments midway differs from one that does not
    c = block_hashes(((1, 6), (3, 2)), BLOCK, 0, 2, 0)
    assert c[0] == a[0]
    assert c[1] != a[1]


def test_block_hashes_are_chained_over_the_preceding_blocks():
    # block 1 holds the same tokens (segment 3, offsets 0..4) after different first blocks
    after_one = block_hashes(((1, 4), (3, 4)), BLOCK, 0, 2, 0)
    after_two = block_hashes(((2, 4), (3, 4)), BLOCK, 0, 2, 0)
    assert after_one[0] != after_two[0]
    assert after_one[1] != after_two[1]


def test_block_hashes_computed_in_pieces_equal_those_computed_at_once():
    segments = ((1, 5), (2, 7), (3, 9))
    whole = block_hashes(segments, BLOCK, 0, 5, 0)
    head = block_hashes(segments, BLOCK, 0, 2, 0)
    tail = block_hashes(segments, BLOCK, 2, 5, head[-1])
    assert head + tail == whole


def test_block_hashes_of_an_empty_range_is_empty():
    assert block_hashes(((1, 8),), BLOCK, 2, 2, 0) == []
    assert block_hashes(((1, 8),), BLOCK, 2, 1, 0) == []


@pytest.mark.parametrize("shared_tokens", [3, 8, 10, 12])  # shorter than a block, whole blocks, a partial last one
def test_a_shared_system_prompt_hashes_the_same_from_its_memoised_chain_as_from_scratch(shared_tokens):
    kv = make_manager(64)
    for request_id in range(3):  # the first request computes the chain, the others reuse it
        request = make_request((-2, shared_tokens), (2 * request_id + 1, 5), request_id=request_id)
        expected = block_hashes(request.spec.token_segments, BLOCK, 0, (shared_tokens + 5 + 4) // BLOCK, 0)
        assert kv._hashes(request, len(expected))[: len(expected)] == expected
