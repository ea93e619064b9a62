"""Radix-tree prefix cache over a token-granular KV pool (SGLang's ``RadixCache`` design).

Token content is described by *runs* ``(segment id, start, end)``; a tree edge is labelled by a
tuple of runs, so matching and inserting cost the number of runs, not of tokens. Cached tokens
live in tree nodes; a node referenced by a running request is *locked* (its lock count covers the
path to the root) and cannot be evicted; unlocked leaves are evicted least recently used first.
The pool holds ``capacity`` token slots: tokens in the tree plus tokens private to running
requests (computed but not yet inserted) never exceed it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmsim.workload.request import Request, Segment

Run = tuple[int, int, int]  # (segment id, start offset, end offset) within the segment


def runs_of(segments: Sequence[Segment], length: int) -> tuple[Run, ...]:
    """The first ``length`` tokens of a sequence described by (segment id, length) pieces."""
    runs: list[Run] = []
    remaining = length
    for seg_id, seg_len in segments:
        if remaining <= 0:
            break
        take = min(seg_len, remaining)
        if take > 0:
            runs.append((seg_id, 0, take))
        remaining -= take
    return tuple(runs)


def run_length(runs: Sequence[Run]) -> int:
    """Tokens covered by ``runs``."""
    return sum(end - start for _, start, end in runs)


def split_runs(runs: Sequence[Run], n: int) -> tuple[tuple[Run, ...], tuple[Run, ...]]:
    """(first ``n`` tokens, the rest)."""
    head: list[Run] = []
    tail: list[Run] = []
    remaining = n
    for seg, start, end in runs:
        if remaining >= end - start:
            head.append((seg, start, end))
            remaining -= end - start
        elif remaining > 0:
            head.append((seg, start, start + remaining))
            tail.append((seg, start + remaining, end))
            remaining = 0
        else:
            tail.append((seg, start, end))
    return tuple(head), tuple(tail)


def common_prefix(a: Sequence[Run], b: Sequence[Run]) -> int:
    """Tokens two run sequences share from their starts."""
    total = 0
    i = j = 0
    a_off = b_off = 0  # tokens of a[i] / b[j] already consumed
    while i < len(a) and j < len(b):
        sa, start_a, end_a = a[i]
        sb, start_b, end_b = b[j]
        if sa != sb or start_a + a_off != start_b + b_off:
            break
        step = min(end_a - start_a - a_off, end_b - start_b - b_off)
        total += step
        a_off += step
        b_off += step
        if a_off == end_a - start_a:
            i, a_off = i + 1, 0
        if b_off == end_b - start_b:
            j, b_off = j + 1, 0
    return total


@dataclass(eq=False)
class RadixNode:
    """A tree node: the runs on the edge from its parent, children by their first token."""

    runs: tuple[Run, ...]
    parent: RadixNode | None
    children: dict[tuple[int, int], RadixNode] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: float = 0.0

    @property
    def length(self) -> int:
        """Tokens on the edge into this node."""
        return run_length(self.runs)

    @property
    def first_token(self) -> tuple[int, int]:
        """Identity (segment, offset) of the edge's first token."""
        seg, start, _ = self.runs[0]
        return seg, start


@dataclass
class RadixState:
    """A request's hold on the cache: the locked node and how many of its tokens the tree covers."""

    node: RadixNode
    tree_tokens: int
    private_tokens: int = 0


class RadixCache:
    """The tree, its lock counts and LRU eviction of unlocked leaves."""

    def __init__(self, capacity: int, enabled: bool = True) -> None:
        self.capacity = capacity
        self.enabled = enabled
        self.root = RadixNode((), None, lock_ref=1)
        self.tree_tokens = 0
        self.evictable_tokens = 0
        self.private_tokens = 0
        self._clock = itertools.count()

    @property
    def free_tokens(self) -> int:
        """Slots holding nothing."""
        return self.capacity - self.tree_tokens - self.private_tokens

    @property
    def available_tokens(self) -> int:
        """Slots free now or freeable by evicting unlocked cached tokens."""
        return self.free_tokens + self.evictable_tokens

    # ---- matching and inserting ---------------------------------------------------------------
    def _split(self, node: RadixNode, at: int) -> RadixNode:
        """Split ``node``'s edge after ``at`` tokens; returns the new upper node."""
        head, tail = split_runs(node.runs, at)
        parent = node.parent
        assert parent is not None
        upper = RadixNode(head, parent, lock_ref=node.lock_ref, last_access=node.last_access)
        parent.children[upper.first_token] = upper
        node.runs = tail
        node.parent = upper
        upper.children[node.first_token] = node
        return upper

    def match_prefix(self, runs: Sequence[Run], max_tokens: int) -> tuple[RadixNode, int]:
        """Deepest node whose path is a prefix of ``runs`` (at most ``max_tokens``), splitting an edge if needed."""
        node, matched = self.root, 0
        if not self.enabled:
            return node, 0
        query, _ = split_runs(runs, max_tokens)
        stamp = next(self._clock)
        while query:
            child = node.children.get((query[0][0], query[0][1]))
            if child is None:
                break
            shared = common_prefix(child.runs, query)
            if shared == 0:
                break
            if shared < child.length:
                child = self._split(child, shared)
            child.last_access = stamp
            node, matched = child, matched + shared
            _, query = split_runs(query, shared)
        return node, matched

    def insert(self, runs: Sequence[Run]) -> tuple[RadixNode, int]:
        """Add ``runs`` to the tree; returns the node covering its end and how many tokens were new."""
        node, matched = self.match_prefix(runs, run_length(runs))
        _, rest = split_runs(runs, matched)
        if not rest:
            return node, 0
        leaf = RadixNode(tuple(rest), node, last_access=next(self._clock))
        node.children[leaf.first_token] = leaf
        added = leaf.length
        self.tree_tokens += added
        if self._unlocked_path(leaf):
            self.evictable_tokens += added
        return leaf, added

    @staticmethod
    def _unlocked_path(node: RadixNode) -> bool:
        return node.lock_ref == 0

    # ---- locks ----------------------------------------------------------------------------------
    def lock(self, node: RadixNode) -> None:
        """A request now uses the path from ``node`` to the root."""
        while node is not None and node is not self.root:
            if node.lock_ref == 0:
                self.evictable_tokens -= node.length
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: RadixNode) -> None:
        """Release a :meth:`lock`."""
        while node is not None and node is not self.root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.evictable_tokens += node.length
            node = node.parent  # type: ignore[assignment]

    # ---- eviction -------------------------------------------------------------------------------
    def evict(self, num_tokens: int) -> int:
        """Drop unlocked leaves, least recently used first, until ``num_tokens`` are freed (or none is left)."""
        heap: list[tuple[float, int, RadixNode]] = []
        counter = itertools.count()
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if not node.children and node.lock_ref == 0 and node is not self.root:
                heap.append((node.last_access, next(counter), node))
        heapq.heapify(heap)
        freed = 0
        while heap and freed < num_tokens:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.first_token]
            freed += leaf.length
            self.tree_tokens -= leaf.length
            self.evictable_tokens -= leaf.length
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, next(counter), parent))
        return freed


class RadixKVManager:
    """Per-request use of a :class:`RadixCache`: prefix hits, token allocation, caching, freeing."""

    block_size = 1

    def __init__(self, capacity_tokens: int, enable_cache: bool) -> None:
        self.cache = RadixCache(capacity_tokens, enable_cache)

    @property
    def num_used(self) -> int:
        """Slots holding tokens that running requests reference (cached-but-unlocked ones excluded)."""
        return self.cache.capacity - self.cache.available_tokens

    @property
    def capacity(self) -> int:
        """Token slots in the pool."""
        return self.cache.capacity

    @staticmethod
    def _runs(request: Request, length: int) -> tuple[Run, ...]:
        return runs_of(request.spec.token_segments, length)

    def peek_prefix(self, request: Request) -> int:
        """Cached prefix length of a waiting request, without locking (for cache-aware ordering)."""
        if not self.cache.enabled:
            return 0
        return self.cache.match_prefix(self._runs(request, request.num_tokens), request.num_tokens - 1)[1]

    def start(self, request: Request) -> int:
        """Lock the request's longest cached prefix (at most all tokens but the last); returns its length."""
        node, matched = self.cache.match_prefix(self._runs(request, request.num_tokens), request.num_tokens - 1)
        self.cache.lock(node)
        request.kv_state = RadixState(node, matched)
        return matched

    def allocate(self, request: Request, num_tokens: int) -> bool:
        """Reserve ``num_tokens`` slots for the request, evicting unlocked cache if needed."""
        cache = self.cache
        if cache.free_tokens < num_tokens:
            if cache.available_tokens < num_tokens:
                return False
            cache.evict(num_tokens - cache.free_tokens)
        cache.private_tokens += num_tokens
        request.kv_state.private_tokens += num_tokens
        return True

    def decode_stretch_limit(self, requests: Sequence[Request], steps: int) -> int:
        """Most decode steps (<= ``steps``) before a step would start with less room than one token each."""
        n = len(requests)
        return max(1, min(steps, 1 + (self.cache.available_tokens - n) // n)) if n else steps

    def decode_usage(self, requests: Sequence[Request], steps: int) -> list[int]:
        """Slots in use after each of ``steps`` decode steps (one more token per request and step)."""
        return [self.num_used + k * len(requests) for k in range(steps)]

    def reserve_decode_steps(self, request: Request, steps: int) -> None:
        """Take the slots of ``steps - 1`` more tokens (the first step's was taken when scheduled)."""
        if steps > 1 and not self.allocate(request, steps - 1):  # pragma: no cover - guarded by the limit
            raise RuntimeError("decode stretch ran out of KV slots")

    def cache_full_blocks(self, request: Request) -> None:
        """Insert the request's computed tokens into the tree once its prompt (or a chunk of it) is done."""
        state: RadixState | None = request.kv_state
        if state is None or not self.cache.enabled or request.num_output_tokens > 0:
            return
        self._absorb(request, request.num_computed_tokens)

    def _absorb(self, request: Request, length: int) -> None:
        """Move the request's first ``length`` tokens into the tree and lock the node that ends them."""
        state: RadixState = request.kv_state
        if length <= state.tree_tokens:
            return
        node, _ = self.cache.insert(self._runs(request, length))
        moved = length - state.tree_tokens
        self.cache.private_tokens -= moved
        state.private_tokens -= moved
        self.cache.lock(node)
        self.cache.unlock(state.node)
        state.node, state.tree_tokens = node, length

    def free(self, request: Request) -> None:
        """Finished: its tokens join the cache. Retracted: its private tokens are freed. Either way unlock."""
        state: RadixState | None = request.kv_state
        if state is None:
            return
        if request.is_finished and self.cache.enabled:
            self._absorb(
                request, request.num_tokens - 1 if request.num_tokens > request.prompt_len else request.num_tokens
            )
        self.cache.private_tokens -= state.private_tokens
        self.cache.unlock(state.node)
        request.kv_state = None
