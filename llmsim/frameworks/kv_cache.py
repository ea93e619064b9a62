"""Paged KV-cache mechanism: a block pool with prefix caching, and a per-request slot manager.

Mechanism only: these classes answer "does it fit", allocate, free and look up cached prefixes;
which request gets blocks, and who is preempted, is each framework's policy.

Prefix caching follows vLLM's design: a full block is identified by a hash chained over the
content of every block before it; freed blocks keep their hash and stay findable until the pool
reuses them, least recently freed first (a request frees its blocks tail first, so a prefix's
leading blocks survive longest).

A hybrid model (sliding-window layers, :mod:`~llmsim.frameworks.kv_groups`) gives each request one
block table per KV-cache group, all drawing on the one pool; windowed groups free the blocks that
fall behind their window before every allocation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import islice
from typing import ClassVar

import numpy as np

from llmsim.frameworks.kv_groups import KVGroupLayout
from llmsim.workload.request import Request, Segment

_ID_MASK = (1 << 60) - 1


class BlockPool:
    """A fixed number of KV blocks with reference counts, an LRU free queue and a hash -> block map.

    The free queue is vLLM's: never-used blocks first, then freed blocks in the order they were
    freed; allocation takes from its front, evicting the cached content of the blocks it takes, and
    a prefix hit takes a cached block out of the middle. Only blocks that hold cached content are
    told apart in it: a run of free blocks without content is stored as its length, and its blocks
    get labels (the ints in ``Request.blocks``) when they are allocated, from labels that came back
    without content or from new ones. Contents are evicted in exactly the order of a queue of
    individual blocks, and memory follows the blocks that are held or hold cached content, not
    ``num_blocks`` (a pool of 10^9 blocks costs nothing until it is used).
    """

    def __init__(self, num_blocks: int, enable_caching: bool = True, free_plain_blocks_first: bool = False) -> None:
        if num_blocks < 1:
            raise ValueError("a block pool needs at least one block")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        #: freed blocks without cached content go to the front of the free queue (reused first) and
        #: cached ones to its end; False: every freed block joins the end in the order freed
        self.free_plain_blocks_first = free_plain_blocks_first
        #: reference count and content hash by label (labels 0.. are made as they are first needed)
        self.ref_counts: list[int] = []
        self.block_hash: list[int | None] = []
        #: the free queue, front first: a cached block by its label (-> None), or a run of blocks
        #: without content by a negative key (-> its length); it starts as one run of every block
        self.free_queue: OrderedDict[int, int | None] = OrderedDict({-1: num_blocks})
        #: content hash -> the block that holds it
        self.cached: dict[int, int] = {}
        self._num_free = num_blocks
        self._spare: list[int] = []  # labels of free blocks without content (reused last in, first out)
        self._runs = 1  # run entries in the free queue
        self._tail_run: int | None = -1  # key of the run at the queue's end, if it ends with one
        self._next_run_key = -2

    @property
    def num_free(self) -> int:
        """Blocks not referenced by any request (cached ones included: they can be evicted)."""
        return self._num_free

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one request."""
        return self.num_blocks - self._num_free

    def longest_cached_prefix(self, hashes: Sequence[int], limit: int | None = None) -> list[int]:
        """Blocks holding the longest run of ``hashes`` (the first ``limit`` of them) that is still cached."""
        blocks: list[int] = []
        if not self.enable_caching:
            return blocks
        get = self.cached.get
        for h in hashes if limit is None else islice(hashes, limit):
            block = get(h)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def touch(self, blocks: Sequence[int]) -> None:
        """Take a reference on blocks found in the cache (removing free ones from the free queue)."""
        ref_counts, free_queue = self.ref_counts, self.free_queue
        for block in blocks:
            if ref_counts[block] == 0:
                del free_queue[block]  # a cached block: it has its own entry
                self._num_free -= 1
                if self._tail_run is None and free_queue and next(reversed(free_queue)) < 0:
                    self._tail_run = next(reversed(free_queue))  # it was the last entry: a run ends the queue now
            ref_counts[block] += 1
        if 2 * self._runs > len(free_queue) + 16:
            self._merge_adjacent_runs()

    def _merge_adjacent_runs(self) -> None:
        """Join runs that touched blocks left side by side (bounds runs by the cached free blocks + 1)."""
        merged: OrderedDict[int, int | None] = OrderedDict()
        last: int | None = None
        for key, length in self.free_queue.items():
            if length is None:
                merged[key] = None
                last = None
            elif last is None:
                merged[key] = length
                last = key
            else:
                merged[last] += length  # type: ignore[operator]
        self.free_queue = merged
        self._runs = sum(1 for key in merged if key < 0)
        self._tail_run = last

    def allocate(self, count: int) -> list[int]:
        """Take ``count`` blocks from the front of the free queue, evicting their cached content."""
        if count > self._num_free:
            raise RuntimeError(f"asked for {count} blocks with {self._num_free} free")
        self._num_free -= count
        free_queue, ref_counts, block_hash, cached = self.free_queue, self.ref_counts, self.block_hash, self.cached
        blocks: list[int] = []
        need = count
        while need:
            key = next(iter(free_queue))
            length = free_queue[key]
            if length is None:  # a block holding cached content: evict it
                del free_queue[key]
                old = block_hash[key]
                if cached.get(old) == key:  # type: ignore[arg-type]
                    del cached[old]  # type: ignore[arg-type]
                block_hash[key] = None
                ref_counts[key] = 1
                blocks.append(key)
                need -= 1
                continue
            take = min(length, need)
            if take == length:
                del free_queue[key]
                self._runs -= 1
                if key == self._tail_run:
                    self._tail_run = None
            else:
                free_queue[key] = length - take
            need -= take
            blocks.extend(self._labels(take))
        return blocks

    def _labels(self, count: int) -> list[int]:
        """Labels for ``count`` blocks without content, each with a reference count of 1."""
        spare, ref_counts = self._spare, self.ref_counts
        reused = min(count, len(spare))
        labels = spare[len(spare) - reused :]
        del spare[len(spare) - reused :]
        for label in labels:
            ref_counts[label] = 1
        new = count - reused
        if new:
            start = len(ref_counts)
            labels.extend(range(start, start + new))
            ref_counts.extend([1] * new)
            self.block_hash.extend([None] * new)
        return labels

    def release(self, blocks: Sequence[int], full_blocks: int = 0) -> None:
        """Drop one reference on each block, tail first; unreferenced blocks join the free queue.

        With :attr:`free_plain_blocks_first`, blocks that hold cached content go to the queue's end and
        the others to its front (vLLM 0.33 ``BlockPool.free_blocks``: "LIFO reuse of non-cached
        blocks", so a freed request's cached prefix is evicted last). The first ``full_blocks`` of
        ``blocks`` count as cached even without a hash here: vLLM hashes every full block, while this
        pool skips the hashes nobody can look up (duplicates, private prompts) - at the queue's end
        such a block is a block without content.
        """
        if self.free_plain_blocks_first:
            self._release_plain_first(blocks, full_blocks)
            return
        ref_counts, block_hash, free_queue, spare = self.ref_counts, self.block_hash, self.free_queue, self._spare
        plain = 0  # blocks without content freed since the last cached one (they join the tail run)
        freed = 0
        for block in reversed(blocks):
            count = ref_counts[block] - 1
            ref_counts[block] = count
            if count == 0:
                freed += 1
                if block_hash[block] is None:
                    spare.append(block)
                    plain += 1
                else:
                    if plain:
                        self._append_run(plain)
                        plain = 0
                    free_queue[block] = None
                    self._tail_run = None
            elif count < 0:  # pragma: no cover - a scheduler bug
                raise RuntimeError(f"block {block} released more often than taken")
        if plain:
            self._append_run(plain)
        self._num_free += freed

    def _release_plain_first(self, blocks: Sequence[int], full_blocks: int) -> None:
        """:meth:`release` with blocks that hold no content to the front, the others to the end in order."""
        ref_counts, block_hash, free_queue, spare = self.ref_counts, self.block_hash, self.free_queue, self._spare
        front = tail_plain = freed = 0
        for index in range(len(blocks) - 1, -1, -1):
            block = blocks[index]
            count = ref_counts[block] - 1
            ref_counts[block] = count
            if count == 0:
                freed += 1
                if block_hash[block] is not None:
                    if tail_plain:
                        self._append_run(tail_plain)
                        tail_plain = 0
                    free_queue[block] = None
                    self._tail_run = None
                    continue
                spare.append(block)
                if index < full_blocks:
                    tail_plain += 1
                else:
                    front += 1
            elif count < 0:  # pragma: no cover - a scheduler bug
                raise RuntimeError(f"block {block} released more often than taken")
        if tail_plain:
            self._append_run(tail_plain)
        if front:
            self._prepend_run(front)
        self._num_free += freed

    def _prepend_run(self, length: int) -> None:
        """``length`` free blocks without content join the front of the queue."""
        free_queue = self.free_queue
        head = next(iter(free_queue), None)
        if head is not None and head < 0:
            free_queue[head] += length  # type: ignore[operator]
            return
        key = self._next_run_key
        self._next_run_key -= 1
        free_queue[key] = length
        free_queue.move_to_end(key, last=False)
        self._runs += 1
        if head is None:
            self._tail_run = key  # the queue was empty: the run is also its end

    def _append_run(self, length: int) -> None:
        """``length`` free blocks without content join the end of the queue."""
        tail = self._tail_run
        if tail is None:
            tail = self._tail_run = self._next_run_key
            self._next_run_key -= 1
            self.free_queue[tail] = length
            self._runs += 1
        else:
            self.free_queue[tail] += length  # type: ignore[operator]

    def register(self, block: int, block_hash: int) -> None:
        """Make a full block findable by its content hash (the first copy wins)."""
        self.register_many([block], [block_hash], 0, 1)

    def register_many(self, blocks: Sequence[int], hashes: Sequence[int], start: int, end: int) -> None:
        """:meth:`register` ``blocks[i]`` under ``hashes[i]`` for ``start <= i < end``, in order."""
        if not self.enable_caching:
            return
        cached, block_hash = self.cached, self.block_hash
        for i in range(start, end):
            content, block = hashes[i], blocks[i]
            if content not in cached and block >= 0 and block_hash[block] is None:  # -1: freed behind a window
                cached[content] = block
                block_hash[block] = content


def block_hashes(
    segments: Sequence[Segment], block_size: int, start_block: int, end_block: int, parent: int
) -> list[int]:
    """Chained content hashes of blocks ``start_block..end_block-1`` of a token sequence.

    ``segments`` describe the sequence as runs of (segment id, length); ``parent`` is the hash of
    block ``start_block - 1`` (0 for the first block). Integer tuples hash identically in every
    process, so the result is deterministic.
    """
    hashes: list[int] = []
    if end_block <= start_block:
        return hashes
    segments = [segment for segment in segments if segment[1] > 0]
    seg_index = 0
    seg_start = 0  # token position where segments[seg_index] begins
    position = start_block * block_size
    while seg_index < len(segments) and seg_start + segments[seg_index][1] <= position:
        seg_start += segments[seg_index][1]
        seg_index += 1
    for _ in range(start_block, end_block):
        block_end = position + block_size
        if seg_index < len(segments) and block_end < seg_start + segments[seg_index][1]:
            # the block lies inside one segment, not at its end (most blocks): one piece
            offset = position - seg_start
            parent = hash((parent, ((segments[seg_index][0] & _ID_MASK, offset, offset + block_size),)))
            hashes.append(parent)
            position = block_end
            continue
        pieces = []
        while position < block_end and seg_index < len(segments):
            seg_id, length = segments[seg_index]
            take_end = min(block_end, seg_start + length)
            # ids are masked to non-negative ints: CPython hashes -1 like -2, which would merge contents
            pieces.append((seg_id & _ID_MASK, position - seg_start, take_end - seg_start))
            position = take_end
            if position >= seg_start + length:
                seg_start += length
                seg_index += 1
        parent = hash((parent, tuple(pieces)))
        hashes.append(parent)
    return hashes


class KVCacheManager:
    """Per-framework view of a :class:`BlockPool`: slots for requests, prefix hits, freeing."""

    #: Register private prompts' blocks when freed, and skip their first lookup (no observable
    #: difference: tests turn it off to check that)
    private_shortcuts: ClassVar[bool] = True

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_caching: bool,
        groups: KVGroupLayout | None = None,
        *,
        free_plain_blocks_first: bool = False,
        cache_at_allocation: bool = False,
    ) -> None:
        self.block_size = block_size
        self.pool = BlockPool(num_blocks, enable_caching, free_plain_blocks_first)
        #: register a prefilling request's blocks as soon as they are allocated, so requests scheduled
        #: later in the same step hit them (vLLM v1's ``allocate_slots`` calls ``cache_blocks``); False:
        #: blocks become findable once the step that fills them has run
        self.cache_at_allocation = cache_at_allocation
        #: KV-cache groups of a hybrid (sliding-window) model sharing the pool; None: one full-attention
        #: group. ``Request.blocks`` is the first group's block table (-1: a block freed behind the window,
        #: vLLM's null block); the other groups' tables are in :attr:`_group_tables` (their blocks are
        #: never shared by content: a simplification, vLLM also caches windowed groups' blocks)
        self.groups = groups if groups is not None and groups.is_hybrid else None
        self._group_tables: dict[int, list[list[int]]] = {}
        # block hashes of finished conversation turns, by output segment, for their next turn to reuse
        self._history: dict[int, list[int]] = {}
        #: hash chains of shared prompt segments' full blocks, by (segment id, blocks)
        self._shared_chains: dict[tuple[int, int], list[int]] = {}
        #: blocks held by requests, summed over requests (a block shared by two counts twice)
        self.held = 0

    @property
    def enable_caching(self) -> bool:
        """Whether full blocks are shared by content."""
        return self.pool.enable_caching

    @property
    def num_used(self) -> int:
        """Blocks referenced by running requests."""
        return self.pool.num_used

    @property
    def capacity(self) -> int:
        """Blocks in the pool."""
        return self.pool.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold ``num_tokens`` tokens."""
        return -(-num_tokens // self.block_size)

    def _hashes(self, request: Request, num_blocks: int) -> list[int]:
        """The request's chained block hashes, at least its first ``num_blocks`` (its own list: not a copy)."""
        known = request.block_hashes
        if not known and self._history:
            self._reuse_history(request)
        if not known:
            self._start_with_shared_chain(request)
        if len(known) < num_blocks:
            parent = known[-1] if known else 0
            # every full block of the prompt at once: the lookup and the prefill's registration both need them
            end = max(num_blocks, request.spec.prompt_tokens // self.block_size)
            known.extend(block_hashes(request.spec.token_segments, self.block_size, len(known), end, parent))
        return known

    def _start_with_shared_chain(self, request: Request) -> None:
        """A prompt that opens with a shared segment (a system prompt) starts with that segment's hash
        chain, computed once per segment: its full blocks hash the same in every request."""
        segment_id, length = request.spec.prompt_segments[0]
        count = length // self.block_size
        if segment_id >= 0 or count == 0:  # own content (ids >= 0) is hashed once anyway
            return
        chain = self._shared_chains.get((segment_id, count))
        if chain is None:
            chain = block_hashes(((segment_id, length),), self.block_size, 0, count, 0)
            self._shared_chains[(segment_id, count)] = chain
        request.block_hashes.extend(chain)

    def _reuse_history(self, request: Request) -> None:
        """A conversation's next turn starts with the previous turn's whole sequence: take its block hashes."""
        segments = request.spec.prompt_segments
        if len(segments) < 2:
            return
        previous = self._history.pop(segments[-2][0], None)
        if previous is not None:
            shared_blocks = sum(length for _, length in segments[:-1]) // self.block_size
            request.block_hashes.extend(previous[:shared_blocks])

    def get_computed_blocks(self, request: Request) -> list[int]:
        """Cached blocks that hold a prefix of the request (at most ``num_tokens - 1`` tokens)."""
        if not self.enable_caching or request.num_computed_tokens:
            return []
        if self._unshared(request):
            return []  # no other request holds its content, and it never ran before
        max_blocks = (request.num_tokens - 1) // self.block_size
        if max_blocks <= 0:
            return []
        return self.pool.longest_cached_prefix(self._hashes(request, max_blocks), max_blocks)

    def _unshared(self, request: Request) -> bool:
        """A private prompt that never ran: no other request holds its content (lookups and hashes skipped)."""
        return request.preemptions == 0 and request.spec.private_prompt and self.private_shortcuts

    def decode_fills_a_findable_block(self, request: Request) -> bool:
        """Whether the request's next decode token fills a block that must be registered when allocated
        (:meth:`_registers_at_allocation`): the scheduler then allocates even with room left."""
        return (
            self.enable_caching
            and self.cache_at_allocation
            and request.spec.output_reuse == "any_time"
            and (request.num_computed_tokens + 1) % self.block_size == 0
        )

    def content_hashes(self, request: Request, start_block: int, end_block: int) -> list[int]:
        """Content hashes of the request's full blocks ``start_block..end_block-1`` (fewer past its last
        full block; none for a prompt nobody else can share, or without caching)."""
        if not self.enable_caching or self._unshared(request):
            return []
        end = min(end_block, request.num_tokens // self.block_size)
        if end <= start_block:
            return []
        return self._hashes(request, end)[start_block:end]

    def allocate_slots(self, request: Request, num_new_tokens: int, computed_blocks: Sequence[int] = ()) -> bool:
        """Give the request room for ``num_new_tokens`` more tokens (after ``computed_blocks``), or refuse."""
        if self.groups is not None:
            return self._allocate_hybrid(request, num_new_tokens, computed_blocks)
        if (
            not computed_blocks
            and request.num_computed_tokens + num_new_tokens <= len(request.blocks) * self.block_size
        ):
            if self.cache_at_allocation and self._registers_at_allocation(request):
                self._cache_at_allocation(request, request.num_computed_tokens + num_new_tokens)
            return True  # its last block still has room (most decode steps)
        total = request.num_computed_tokens + len(computed_blocks) * self.block_size + num_new_tokens
        need = self.blocks_needed(total) - len(request.blocks) - len(computed_blocks)
        reusable_free = sum(1 for b in computed_blocks if self.pool.ref_counts[b] == 0)
        if need > self.pool.num_free - reusable_free:
            return False
        if computed_blocks:
            self.pool.touch(computed_blocks)
            request.blocks.extend(computed_blocks)
            request.num_hashed_blocks = len(request.blocks)
            self.held += len(computed_blocks)
        if need > 0:
            request.blocks.extend(self.pool.allocate(need))
            self.held += need
        if self.cache_at_allocation and self._registers_at_allocation(request):
            self._cache_at_allocation(request, total)
        return True

    def _registers_at_allocation(self, request: Request) -> bool:
        """Whether this allocation registers the blocks it fills (vLLM does it for every allocation).

        Prefill (and recompute) allocations do. A decode's new block matters only to a request that
        may contain this one's output while it still decodes (``output_reuse == "any_time"``: a trace's
        next turn, replayed at its own time): it can be admitted in the very step that fills the
        block and hit it, as in vLLM. For everyone else registering after the step is the same.
        """
        return request.num_computed_tokens < request.num_tokens - 1 or request.spec.output_reuse == "any_time"

    def _cache_at_allocation(self, request: Request, total: int) -> None:
        """Register the blocks a prefilling request fills by the end of this step (``total`` tokens).

        vLLM registers up to ``min(total, request.num_tokens)`` tokens' full blocks in ``allocate_slots``
        (which allocations come here: :meth:`_registers_at_allocation`).
        """
        if not self.enable_caching or self._registers_at_free(request):
            return
        full = min(min(total, request.num_tokens) // self.block_size, len(request.blocks))
        if full > request.num_hashed_blocks:
            self.pool.register_many(request.blocks, self._hashes(request, full), request.num_hashed_blocks, full)
            request.num_hashed_blocks = full

    def blocks_to_admit(
        self,
        request: Request,
        num_tokens: int,
        computed_blocks: Sequence[int] = (),
        window_caps: Sequence[int | None] = (),
    ) -> int:
        """Free blocks a waiting request needs for slots for ``num_tokens`` tokens, its cached prefix
        ``computed_blocks`` included (those that sit in the free queue count: taking them shrinks it).

        vLLM's ``get_num_blocks_to_allocate`` for its whole-prompt admission gate
        (``scheduler_reserve_full_isl``). A windowed group of a hybrid model needs at most the most a
        request ever holds in it (``window_caps``, one per group: vLLM's
        ``max_admission_blocks_per_request``; None for a full-attention group).
        """
        size = self.block_size
        hit = len(computed_blocks)
        reusable_free = sum(1 for b in computed_blocks if b >= 0 and self.pool.ref_counts[b] == 0)
        required = self.blocks_needed(num_tokens)
        if self.groups is None:
            return max(0, required - len(request.blocks) - hit) + reusable_free
        computed = request.num_computed_tokens + hit * size
        total = 0
        for index, (group, table) in enumerate(zip(self.groups.groups, self._tables(request), strict=True)):
            cap = window_caps[index] if index < len(window_caps) else None
            cap = required if cap is None else min(required, cap)
            skipped = group.skipped_tokens(computed) // size
            held = len(table) + (hit if index == 0 else 0)
            total += max(0, cap - max(skipped, held))
        return total + reusable_free

    # ---- hybrid models: several KV-cache groups, windowed ones freeing blocks as the window slides ----
    @property
    def slides(self) -> bool:
        """Whether requests free blocks behind a sliding window (every allocation must run)."""
        return self.groups is not None

    def _tables(self, request: Request) -> list[list[int]]:
        """Every group's block table of the request, the first group's being ``request.blocks``."""
        assert self.groups is not None
        tables = self._group_tables.get(id(request))
        if tables is None:
            tables = self._group_tables[id(request)] = [[] for _ in self.groups.groups[1:]]
        return [request.blocks, *tables]

    def slide_windows(self, request: Request) -> None:
        """Free the blocks before each windowed group's window (vLLM's ``remove_skipped_blocks``).

        With ``c`` tokens computed, a group of window ``w`` no longer needs its first
        ``max(0, c - w + 1) // block_size`` blocks; they go back to the pool, last first, and leave
        a -1 (the null block) in the table.
        """
        assert self.groups is not None
        computed = request.num_computed_tokens
        for group, table in zip(self.groups.groups, self._tables(request), strict=True):
            end = min(group.skipped_tokens(computed) // self.block_size, len(table))
            start = end
            while start > 0 and table[start - 1] >= 0:  # back to the last block already freed
                start -= 1
            if start < end:
                freed = table[start:end]
                table[start:end] = [-1] * (end - start)
                self.pool.release(freed, len(freed) if self.enable_caching else 0)  # full, computed blocks
                self.held -= end - start

    def _allocate_hybrid(self, request: Request, num_new_tokens: int, computed_blocks: Sequence[int]) -> bool:
        """:meth:`allocate_slots` over every group: slide the windows, then take each group's new blocks.

        vLLM's ``get_num_blocks_to_allocate``: a group needs ``cdiv(total, bs)`` blocks less those it
        holds; a new request skips the blocks before the window of its cached prefix (in the first
        group the cached blocks there are not taken at all: they stay where they are in the free queue).
        """
        assert self.groups is not None
        self.slide_windows(request)
        size = self.block_size
        hit = len(computed_blocks)
        required = self.blocks_needed(request.num_computed_tokens + hit * size + num_new_tokens)
        tables = self._tables(request)
        before_window = [
            0 if table else min(group.skipped_tokens(request.num_computed_tokens + hit * size) // size, required)
            for group, table in zip(self.groups.groups, tables, strict=True)
        ]
        needs = [
            max(0, required - len(table)) if table else max(0, required - max(skipped, hit if index == 0 else 0))
            for index, (table, skipped) in enumerate(zip(tables, before_window, strict=True))
        ]
        taken = computed_blocks[min(before_window[0], hit) :]  # the cached blocks inside the window
        reusable_free = sum(1 for b in taken if self.pool.ref_counts[b] == 0)
        if sum(needs) > self.pool.num_free - reusable_free:
            return False
        if computed_blocks:
            self.pool.touch(taken)
            request.blocks.extend([-1] * (hit - len(taken)))
            request.blocks.extend(taken)
            request.num_hashed_blocks = len(request.blocks)
            self.held += len(taken)
        for index, (table, skipped, need) in enumerate(zip(tables, before_window, needs, strict=True)):
            if not table or (index == 0 and len(table) == hit):
                table.extend([-1] * max(0, skipped - len(table)))  # null blocks before the window
            if need:
                table.extend(self.pool.allocate(need))
                self.held += need
        if self.cache_at_allocation and self._registers_at_allocation(request):
            self._cache_at_allocation(request, request.num_computed_tokens + hit * size + num_new_tokens)
        return True

    def _free_hybrid(self, request: Request) -> None:
        """Return every group's remaining blocks, group by group, each table last block first."""
        tables = self._tables(request)
        del self._group_tables[id(request)]
        full_end = request.num_computed_tokens // self.block_size if self.enable_caching else 0
        for table in tables:
            real = [b for b in table if b >= 0]
            self.pool.release(real, sum(1 for b in table[:full_end] if b >= 0))
            self.held -= len(real)
        request.blocks = []
        request.num_hashed_blocks = 0

    def _registers_at_free(self, request: Request) -> bool:
        """Whether the request's blocks are registered when it frees them rather than as they fill.

        For a private prompt (``RequestSpec.private_prompt``) whose next turn, if any, comes only
        after it finishes, nobody can look its blocks up while it holds them: registering them at
        :meth:`free` gives every lookup the same answer and saves the hashing when nobody ever will.
        """
        spec = request.spec
        return spec.private_prompt and spec.output_reuse != "any_time" and self.private_shortcuts

    def cache_full_blocks(self, request: Request) -> None:
        """Register every block the request has completely computed (some requests: when freed)."""
        if self.enable_caching and not self._registers_at_free(request):
            self._register_full_blocks(request)

    def _register_full_blocks(self, request: Request) -> None:
        full = min(request.num_computed_tokens // self.block_size, len(request.blocks))
        if full <= request.num_hashed_blocks:
            return
        self.pool.register_many(request.blocks, self._hashes(request, full), request.num_hashed_blocks, full)
        request.num_hashed_blocks = full

    def decode_stretch_limit(self, requests: Sequence[Request], steps: int) -> int:
        """Most decode steps (<= ``steps``) every request can take before the pool runs out of blocks.

        Each step adds one token to each request; its first step's room was allocated when it was
        scheduled. Blocks needed grow with the steps, so the answer is found by bisection.
        """
        if self.groups is not None:
            return 1  # windows slide at every step: no closed-form stretch (each step is simulated)
        size = self.block_size
        free = self.pool.num_free
        current = [(r.num_computed_tokens, len(r.blocks)) for r in requests]

        def needed(k: int) -> int:
            return sum(max(0, -(-(c + k) // size) - held) for c, held in current)

        if needed(steps) <= free:
            return steps
        low, high = 1, steps  # needed(1) == 0: step one is allocated already
        while high - low > 1:
            middle = (low + high) // 2
            if needed(middle) <= free:
                low = middle
            else:
                high = middle
        return low

    def decode_usage(self, requests: Sequence[Request], steps: int) -> list[int]:
        """Blocks in use after each of ``steps`` decode steps (step one's room is already allocated)."""
        size = self.block_size
        base = self.pool.num_used
        tokens = np.fromiter((r.num_computed_tokens + 1 for r in requests), dtype=np.int64, count=len(requests))
        held = np.fromiter((len(r.blocks) for r in requests), dtype=np.int64, count=len(requests))
        # a request needs a new block when its tokens cross a block boundary: count those crossings per step
        usage = []
        for k in range(steps):
            usage.append(base + int(np.maximum(-(-(tokens + k) // size) - held, 0).sum()))
        return usage

    def reserve_decode_steps(self, request: Request, steps: int) -> None:
        """Take the blocks ``steps`` decode steps need (checked by :meth:`decode_stretch_limit`)."""
        if not self.allocate_slots(request, steps):  # pragma: no cover - guarded by decode_stretch_limit
            raise RuntimeError("decode stretch ran out of KV blocks")

    def free(self, request: Request) -> None:
        """Return the request's blocks (they stay cached until reused)."""
        if self.enable_caching:
            next_turn_follows = request.spec.output_reuse == "after_finish"
            # registered at free: unless it is a finished last turn, itself or its next turn may look them up
            if self._registers_at_free(request) and (not request.is_finished or next_turn_follows):
                self._register_full_blocks(request)
            if next_turn_follows and request.block_hashes:
                # the next turn is sent only after this one is answered (kept until it comes, once per turn)
                self._history[request.spec.output_segment] = request.block_hashes
        if self.groups is not None:
            self._free_hybrid(request)
            return
        full = max(request.num_computed_tokens // self.block_size, request.num_hashed_blocks)
        self.pool.release(request.blocks, full if self.enable_caching else 0)
        self.held -= len(request.blocks)
        request.blocks = []
        request.num_hashed_blocks = 0
