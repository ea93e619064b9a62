"""The radix-tree prefix cache mechanism: runs, matching, insertion, locks, LRU eviction, accounting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmsim.frameworks.radix_cache import (
    RadixCache,
    RadixKVManager,
    common_prefix,
    run_length,
    runs_of,
    split_runs,
)
from llmsim.workload.request import Request, RequestSpec


def expand(runs) -> list[tuple[int, int]]:
    return [(seg, i) for seg, start, end in runs for i in range(start, end)]


def test_runs_of_takes_the_first_tokens_of_the_segments():
    assert runs_of(((7, 10), (8, 5)), 12) == ((7, 0, 10), (8, 0, 2))
    assert runs_of(((7, 10),), 0) == ()


@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 6)), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 6)), min_size=1, max_size=4),
    st.integers(0, 30),
)
def test_run_helpers_agree_with_token_by_token_arithmetic(a_segments, b_segments, cut):
    a = runs_of(a_segments, sum(n for _, n in a_segments))
    b = runs_of(b_segments, sum(n for _, n in b_segments))
    head, tail = split_runs(a, cut)
    assert expand(head) + expand(tail) == expand(a)
    assert run_length(head) == min(cut, run_length(a))
    ta, tb = expand(a), expand(b)
    shared = 0
    while shared < min(len(ta), len(tb)) and ta[shared] == tb[shared]:
        shared += 1
    assert common_prefix(a, b) == shared


def test_insert_then_match_finds_the_longest_shared_prefix_and_splits_edges():
    cache = RadixCache(capacity=1000)
    _, added = cache.insert(((1, 0, 100),))
    assert added == 100 and cache.tree_tokens == 100
    node, matched = cache.match_prefix(((1, 0, 40), (2, 0, 10)), 50)
    assert matched == 40 and node.length == 40  # the 100-token edge was split at 40
    _, added = cache.insert(((1, 0, 40), (2, 0, 10)))
    assert added == 10 and cache.tree_tokens == 110


def test_locked_paths_are_not_evicted_and_unlocked_leaves_go_least_recently_used_first():
    cache = RadixCache(capacity=1000)
    cache.insert(((1, 0, 50),))
    cache.insert(((2, 0, 50),))
    held, _ = cache.insert(((3, 0, 50),))
    cache.lock(held)
    assert cache.evictable_tokens == 100
    assert cache.evict(10) == 50  # a whole leaf: the least recently used one
    assert cache.match_prefix(((1, 0, 50),), 50)[1] == 0
    assert cache.match_prefix(((2, 0, 50),), 50)[1] == 50
    assert cache.evict(1000) == 50  # only the unlocked one can go
    assert cache.match_prefix(((3, 0, 50),), 50)[1] == 50
    cache.unlock(held)
    assert cache.evictable_tokens == 50


def make_request(request_id: int, prefix: int, own: int, output: int) -> Request:
    segments = ((-1, prefix), (2 * request_id + 1, own)) if prefix else ((2 * request_id + 1, own),)
    spec = RequestSpec(request_id, request_id, 0, "p", prefix + own, output, True, segments, 2 * request_id + 2)
    return Request(spec, "sglang", 0.0, 0.0)


def test_manager_shares_a_finished_requests_prompt_and_frees_everything_when_drained():
    kv = RadixKVManager(capacity_tokens=2000, enable_cache=True)
    first = make_request(0, prefix=500, own=100, output=10)
    assert kv.start(first) == 0
    assert kv.allocate(first, 600)
    first.num_computed_tokens = 600
    kv.cache_full_blocks(first)  # the prompt joins the tree once prefilled
    second = make_request(1, prefix=500, own=100, output=10)
    assert kv.start(second) == 500  # shares the system prompt, not the other request's own text
    assert kv.allocate(second, 100)
    for request in (first, second):
        request.num_computed_tokens = request.num_tokens
        request.num_output_tokens = request.spec.max_output_tokens
        kv.free(request)
    assert kv.cache.private_tokens == 0
    assert kv.cache.evictable_tokens == kv.cache.tree_tokens
    assert kv.num_used == 0


def test_allocation_evicts_unlocked_cache_and_refuses_beyond_capacity():
    kv = RadixKVManager(capacity_tokens=1000, enable_cache=True)
    done = make_request(0, prefix=0, own=800, output=1)
    kv.start(done)
    kv.allocate(done, 800)
    done.num_computed_tokens = 800
    done.num_output_tokens = 1
    kv.free(done)
    assert kv.cache.tree_tokens == 800 and kv.cache.free_tokens == 200
    fresh = make_request(1, prefix=0, own=600, output=1)
    kv.start(fresh)
    assert kv.allocate(fresh, 600)  # evicts the finished request's tokens
    assert kv.cache.tree_tokens == 0
    assert not kv.allocate(fresh, 500)
    fresh.num_computed_tokens = 0
    kv.free(fresh)  # retracted: its private tokens go back
    assert kv.cache.free_tokens == 1000


def test_disabled_cache_never_matches():
    kv = RadixKVManager(capacity_tokens=1000, enable_cache=False)
    request = make_request(0, prefix=100, own=10, output=1)
    assert kv.start(request) == 0 and kv.peek_prefix(request) == 0
