"""The KV pools' memory follows the blocks in use, not the pool's size, and keeps vLLM's eviction order.

:class:`ReferencePool` is the plain model of vLLM's free-block queue: one entry per block, all of
them built up front. :class:`BlockPool` stores runs of free blocks without content as lengths; it
must evict cached contents in exactly the reference's order (block labels may differ: the blocks
held at each position of the queue are matched up), while a pool of 10^9 blocks costs nothing to
build and a long run's memory stays flat. Through the CLI, a tiny custom model gives hundreds of
millions of blocks (the bug: 2.6 GB and 10 s with 16-token blocks, ``MemoryError`` with 1-token ones).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.frameworks.kv_cache import BlockPool, KVCacheManager
from llmsim.frameworks.radix_cache import RadixKVManager


class ReferencePool:
    """vLLM's free-block queue with every block as its own entry (the behaviour BlockPool must keep)."""

    def __init__(self, num_blocks: int) -> None:
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.free_queue: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.cached: dict[int, int] = {}

    def longest_cached_prefix(self, hashes: Sequence[int]) -> list[int]:
        blocks = []
        for h in hashes:
            if h not in self.cached:
                break
            blocks.append(self.cached[h])
        return blocks

    def touch(self, blocks: Sequence[int]) -> None:
        for block in blocks:
            if self.ref_counts[block] == 0:
                del self.free_queue[block]
            self.ref_counts[block] += 1

    def allocate(self, count: int) -> list[int]:
        blocks = [self.free_queue.popitem(last=False)[0] for _ in range(count)]
        for block in blocks:
            old = self.block_hash[block]
            if old is not None and self.cached.get(old) == block:
                del self.cached[old]
            self.block_hash[block] = None
            self.ref_counts[block] = 1
        return blocks

    def release(self, blocks: Sequence[int]) -> None:
        for block in reversed(blocks):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free_queue[block] = None

    def register(self, block: int, content: int) -> None:
        if content not in self.cached and self.block_hash[block] is None:
            self.cached[content] = block
            self.block_hash[block] = content


Op = tuple[int, int, int]


def replay(
    num_blocks: int, ops: Sequence[Op], contents: int = 6, check: Callable[[BlockPool], None] | None = None
) -> None:
    """Apply ``ops`` to a BlockPool and a ReferencePool side by side; assert they agree after each.

    An op is (kind, a, b): 0 allocates 1 + a % 4 blocks for a new holder; 1 registers block
    a // 8 of holder a under content b; 2 releases holder a; 3 takes a prefix hit on the chain of
    contents b, b + 1, ... (1 + a % 3 of them), a new holder of the blocks found. Holders and
    contents are taken modulo how many there are.
    """
    pool, ref = BlockPool(num_blocks), ReferencePool(num_blocks)
    holders: list[list[tuple[int, int]]] = []  # (pool label, reference label) of each held block
    to_ref: dict[int, int] = {}  # pool label -> reference label, for blocks held or holding content
    for kind, a, b in ops:
        if kind == 0:
            count = 1 + a % 4
            if count > ref_free(ref):
                with pytest.raises(RuntimeError):
                    pool.allocate(count)
                continue
            cached_labels = {label: content for content, label in pool.cached.items()}
            got, want = pool.allocate(count), ref.allocate(count)
            assert len(set(got)) == count
            for label, ref_label in zip(got, want, strict=True):
                if label in cached_labels:  # an evicted cached block is the reference's block at that position
                    assert to_ref[label] == ref_label
                to_ref[label] = ref_label
            holders.append(list(zip(got, want, strict=True)))
        elif kind == 1 and holders:
            holder = holders[a % len(holders)]
            label, ref_label = holder[a // 8 % len(holder)]
            pool.register(label, b % contents)
            ref.register(ref_label, b % contents)
        elif kind == 2 and holders:
            holder = holders.pop(a % len(holders))
            pool.release([label for label, _ in holder])
            ref.release([ref_label for _, ref_label in holder])
        elif kind == 3:
            chain = [(b + i) % contents for i in range(1 + a % 3)]
            got, want = pool.longest_cached_prefix(chain), ref.longest_cached_prefix(chain)
            assert [to_ref[label] for label in got] == want
            if got:
                pool.touch(got)
                ref.touch(want)
                holders.append(list(zip(got, want, strict=True)))
        assert pool.num_free == ref_free(ref)
        assert pool.num_used == num_blocks - ref_free(ref)
        assert {content: to_ref[label] for content, label in pool.cached.items()} == ref.cached
        assert queue_contents(pool) == [ref.block_hash[block] for block in ref.free_queue]
        for holder in holders:
            for label, ref_label in holder:
                assert pool.ref_counts[label] == ref.ref_counts[ref_label]
        if check is not None:
            check(pool)


def queue_contents(pool: BlockPool) -> list[int | None]:
    """The pool's free queue front first, one entry per block: its cached content, or None."""
    contents: list[int | None] = []
    for key, length in pool.free_queue.items():
        contents.extend([pool.block_hash[key]] if length is None else [None] * length)
    return contents


def ref_free(ref: ReferencePool) -> int:
    return len(ref.free_queue)


OPS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 50)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(num_blocks=st.integers(1, 16), ops=OPS)
def test_pool_evicts_cached_contents_in_the_order_of_a_queue_of_single_blocks(num_blocks, ops):
    replay(num_blocks, ops)


def test_prefix_hits_between_free_runs_keep_the_order_and_the_queue_short():
    # 40 requests each free a block without content, then a cached one: the free queue alternates
    # runs and cached blocks; prefix hits on the cached blocks leave the runs side by side, and
    # they merge (else 40 runs would stay between no cached blocks at all)
    ops: list[Op] = []
    for i in range(40):
        ops += [(0, 1, 0), (1, 0, i), (2, 0, 0)]  # allocate 2, register the first as content i, free
    ops += [(3, 0, i) for i in range(40)]  # hit every content: 40 holders of one block each
    ops += [(2, 0, 0)] * 40 + [(0, 3, 0)] * 60  # free them all, then take the whole pool
    excess: list[int] = []

    def runs_beyond_cached(pool: BlockPool) -> None:
        runs = sum(1 for key in pool.free_queue if key < 0)
        excess.append(runs - (len(pool.free_queue) - runs))

    replay(200, ops, contents=1000, check=runs_beyond_cached)
    assert max(excess) <= 17


@contextmanager
def memory_headroom(nbytes: int) -> Iterator[None]:
    """Cap this process's address space ``nbytes`` above its current size (Linux), so that a pool
    built the old way fails with ``MemoryError`` instead of taking the machine's memory."""
    status = Path("/proc/self/status")
    if not status.exists():
        yield
        return
    size_kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size_kib * 1024 + nbytes
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_pool_of_a_billion_blocks_costs_nothing_to_build():
    tracemalloc.start()
    try:
        with memory_headroom(256 * 2**20):
            pools = [
                BlockPool(10**9),
                KVCacheManager(num_blocks=10**9, block_size=1, enable_caching=True),
                KVCacheManager(num_blocks=10**9, block_size=16, enable_caching=False),
                RadixKVManager(10**9, True),
            ]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pools[0].num_free == 10**9 and pools[1].capacity == 10**9 and pools[3].capacity == 10**9
    assert peak < 64 * 1024


def test_pool_memory_stays_flat_over_a_long_run_on_a_huge_pool():
    with memory_headroom(256 * 2**20):
        pool = BlockPool(10**9)

    def churn(rounds: int, start: int) -> None:
        # each round: a request of 8 blocks whose first block is cached content (100 distinct
        # contents, so most rounds hit one), freed again
        for i in range(start, start + rounds):
            content = i % 100
            hit = pool.longest_cached_prefix([content])
            pool.touch(hit)
            blocks = hit + pool.allocate(8 - len(hit))
            pool.register(blocks[0], content)
            pool.release(blocks)

    churn(2_000, 0)  # every content cached once
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with memory_headroom(256 * 2**20):
            churn(20_000, 2_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert pool.num_free == 10**9
    assert len(pool.cached) == 100
    assert len(pool.ref_counts) < 2_000  # labels are reused: 20,000 x 8 blocks taken, few labels made
    assert grown < 64 * 1024


# ---- through the CLI ----------------------------------------------------------------------------
TINY_MODEL = [
    "model.hidden_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=1",
    "model.num_key_value_heads=1",
    "model.head_dim=64",
    "model.intermediate_size=128",
    "model.vocab_size=1000",
]
# hundreds of millions of KV blocks (tokens for SGLang): each pool built the old way takes > 4 GiB
HUGE_POOLS = {
    "vllm": ["framework=vllm", "framework.block_size=1"],
    "vllm-v0": ["framework=vllm", "framework.block_size=1", "framework.engine_version=v0"],
    "trtllm": ["framework=trtllm", "framework.tokens_per_block=8"],
    "sglang": ["framework=sglang"],
}
MEMORY_LIMIT = 4 * 2**30
LIMITED = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]),) * 2); "
    "sys.argv = ['llmsim', *sys.argv[2:]]; "
    "runpy.run_module('llmsim', run_name='__main__', alter_sys=True)"
)


@pytest.fixture(scope="module")
def huge_pool_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    root = tmp_path_factory.mktemp("huge-pools")

    def one(name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        run_dir = root / name
        args = [*TINY_MODEL, *HUGE_POOLS[name], "workload.total_duration=5", "simulation.max_simulation_time=20"]
        result = subprocess.run(
            [sys.executable, "-c", LIMITED, str(MEMORY_LIMIT), *args, f"hydra.run.dir={run_dir}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return result, run_dir

    with ThreadPoolExecutor(max_workers=2) as executor:
        return dict(zip(HUGE_POOLS, executor.map(one, HUGE_POOLS), strict=True))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS"), reason="needs an address-space limit")
@pytest.mark.parametrize("name", list(HUGE_POOLS))
def test_tiny_model_with_hundreds_of_millions_of_kv_blocks_runs_in_bounded_memory(huge_pool_runs, name):
    result, run_dir = huge_pool_runs[name]
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    (deployment,) = summary["deployments"].values()
    (metrics,) = summary["frameworks"].values()
    assert deployment["kv_cache_tokens"] > 10**8
    assert metrics["completed"] > 0
