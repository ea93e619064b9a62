"""The engine loop every iteration-level scheduler shares: schedule, price the batch, advance, repeat.

``ContinuousBatchingFramework`` keeps a waiting queue and a running list, asks its subclass's
``schedule()`` for a :class:`StepPlan` (which requests compute how many new tokens this step), prices
the batch with the performance model (one SimPy timeout per step), then advances each scheduled
request: a request whose computed tokens catch up with its known tokens samples one token; a
request with all its output tokens finishes. Evicting a request (vLLM preemption, SGLang
retraction, TensorRT-LLM pausing) frees its KV cache and queues it again at the front, to be
recomputed from its prompt and the tokens generated so far.

With ``simulation.fast_forward`` (default), policies that serve every running request each step
(vLLM v1, TensorRT-LLM in-flight batching) keep steady decoders as lazy decoders
(:mod:`~llmsim.frameworks.lazy_decode`): ``running`` then lists only the others, a step takes
the decoders as one aggregate (:meth:`ContinuousBatchingFramework.serve_running`), and whenever
admission order could matter they become explicit again. The shortcuts themselves are in
:mod:`~llmsim.frameworks.fast_forward`; every result is identical to step-by-step simulation.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy

from llmsim.errors import SimulationError
from llmsim.frameworks.base import AbstractLLMFramework
from llmsim.frameworks.fast_forward import FastForward
from llmsim.frameworks.lazy_decode import LazyDecoders, admission_order
from llmsim.hardware.perf_model import BatchShape
from llmsim.workload.request import Request


class KVManager(Protocol):
    """What the loop needs from a KV-cache mechanism (paged blocks or a radix token pool)."""

    @property
    def num_used(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    def cache_full_blocks(self, request: Request) -> None: ...

    def free(self, request: Request) -> None: ...

    def decode_stretch_limit(self, requests: list[Request], steps: int) -> int: ...

    def reserve_decode_steps(self, request: Request, steps: int) -> None: ...

    def decode_usage(self, requests: list[Request], steps: int) -> list[int]: ...


@dataclass
class StepPlan:
    """One step: (request, new tokens) pairs, how many requests were evicted, extra serial time.

    ``lazy`` counts the lazily advanced decoders (:mod:`~llmsim.frameworks.lazy_decode`) that also
    decode one token each in this step without being listed.
    """

    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    evicted: int = 0
    extra_time_s: float = 0.0
    lazy: int = 0

    @property
    def num_seqs(self) -> int:
        """Sequences in the step."""
        return len(self.scheduled) + self.lazy


class ContinuousBatchingFramework(FastForward, AbstractLLMFramework):
    """Shared loop and bookkeeping of vLLM, TensorRT-LLM and SGLang models (see module docstring)."""

    kv: KVManager

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.fast_forward = True
        self._last_step_duration = 0.0
        #: steady decoders advanced by a step counter (set up when the loop starts, if supported)
        self.lazy: LazyDecoders | None = None
        self._next_seq = 0
        #: tokens one step may compute (policies with lazy decoders set it)
        self.step_token_budget = 0
        #: steps whose time passed without a SimPy event (:meth:`advance_clock_inline`)
        self.inline_steps = 0
        self._inline_run = 0

    # ---- policy hooks ---------------------------------------------------------------------------
    @abstractmethod
    def schedule(self) -> StepPlan:
        """Choose the requests of the next step and how many new tokens each computes."""

    def on_step_applied(self, plan: StepPlan) -> None:
        """Called after a step's tokens are accounted (policies with adaptive state override it)."""

    def on_idle(self) -> None:
        """Called when nothing runs or waits, before the engine waits for the next request."""

    def holds_parked_requests(self) -> bool:
        """Whether requests wait outside the running and waiting lists (vLLM v0's swapped-out ones)."""
        return False

    def supports_lazy_decode(self) -> bool:
        """Whether this policy suits lazy decoders: a paged KV cache and every step serving all
        running requests first (through :meth:`serve_running`)."""
        return False

    @property
    def num_running(self) -> int:
        """Running requests, lazily advanced decoders included."""
        return len(self.running) + (len(self.lazy.members) if self.lazy is not None else 0)

    def release_lazy(self) -> None:
        """Give every lazy decoder its explicit state back and merge it into ``running`` (admission order)."""
        if self.lazy:
            self._rejoin_running(self.lazy.release_all())

    def _rejoin_running(self, released: list[Request]) -> None:
        """Former lazy decoders join ``running`` again, everyone in admission order."""
        self.running = sorted([*self.running, *released], key=admission_order)

    # ---- the loop -------------------------------------------------------------------------------
    def admit_arrivals(self) -> None:
        """Move arrived requests to the waiting queue, rejecting those that can never be served."""
        arrivals = self.admissible_arrivals()
        lazy = self.lazy
        if lazy is not None:
            for request in arrivals:
                released = lazy.note_arrival(request)
                if released:
                    self._rejoin_running(released)
        self.waiting.extend(arrivals)

    def finish(self, request: Request, now: float) -> None:
        """The last token is out (see the base class); lazy decoders stop counting its prompt."""
        if self.lazy is not None:
            self.lazy.note_done(request)
        super().finish(request, now)

    def reject(self, request: Request, reason: str) -> None:
        """Refuse a request (see the base class); lazy decoders stop counting its prompt."""
        if self.lazy is not None and request.status not in ("queued", "rejected"):
            self.lazy.note_done(request)
        super().reject(request, reason)

    def processing_loop(self) -> Generator[simpy.Event, Any, None]:
        """Repeat: take arrivals, schedule one step, wait its duration, apply its outcome."""
        env = self.env
        if self.fast_forward and self.supports_lazy_decode():
            self.lazy = LazyDecoders(
                self.kv,  # type: ignore[arg-type]
                self.metrics.config.warm_up_duration_s,
                self.model.attention_window,
                chunked=self.model.window_is_chunked,
            )
        lazy = self.lazy
        members = lazy.members if lazy is not None else {}
        while True:
            self.admit_arrivals()
            if not self.running and not self.waiting and not members and not self.holds_parked_requests():
                self.on_idle()
                request = yield self.request_arrival_queue.get()
                self.request_arrival_queue.items.insert(0, request)
                continue
            if members and self.only_lazy_decoders_run(lazy):  # type: ignore[arg-type]
                yield from self.lazy_only_iteration(lazy)  # type: ignore[arg-type]
                continue
            plan = self.schedule()
            if not plan.scheduled and not plan.lazy:
                self.unblock()
                continue
            if self.fast_forward and (yield from self.fast_forward_plan(plan)):
                continue
            batch = self.batch_shape(plan.scheduled, plan.lazy)
            start = env.now
            duration = self.step_duration(batch, plan.num_seqs) + plan.extra_time_s
            self._last_step_duration = duration
            if not self.advance_clock_inline(duration):
                yield env.timeout(duration)
            self.apply(plan)
            self.on_step_applied(plan)
            self.num_steps += 1
            self.record_step(start, duration, batch, plan.num_seqs, plan.evicted)

    def batch_shape(self, scheduled: list[tuple[Request, int]], lazy_decodes: int = 0) -> BatchShape:
        """Aggregate the step's work: prefill chunks (sampling only at their end) and decodes.

        ``lazy_decodes`` lazy decoders add their aggregate decode work (context and windowed context).
        """
        batch = self.perf_model.new_batch()
        window, chunked = batch.window, batch.chunked
        decodes = decode_kv = windowed_kv = 0
        if lazy_decodes:
            lazy = self.lazy
            assert lazy is not None
            decodes, decode_kv = lazy_decodes, lazy.kv_tokens
            windowed_kv = decode_kv if lazy.window is None else lazy.window_tokens
        for request, num_new in scheduled:
            computed = request.num_computed_tokens
            known = request.spec.prompt_tokens + request.num_output_tokens
            if num_new == 1 and request.num_output_tokens > 0 and computed + 1 >= known:
                decodes += 1
                decode_kv += computed + 1
                if chunked:
                    windowed_kv += computed % window + 1  # type: ignore[operator]
                else:
                    windowed_kv += computed + 1 if window is None or computed + 1 < window else window
            else:
                batch.add_prefill(num_new, computed, samples_token=computed + num_new >= known)
        if decodes:
            batch.decode_seqs += decodes
            batch.decode_kv_tokens += decode_kv
            batch.windowed_decode_kv_tokens += windowed_kv
            batch.logits_rows += decodes
        return batch

    def record_step(self, start: float, duration: float, batch: BatchShape, num_seqs: int, evicted: int) -> None:
        """Append the step to the metrics' per-step series."""
        self.record_batch_step(
            start,
            duration,
            batch,
            num_seqs=num_seqs,
            kv_used=self.kv.num_used,
            kv_total=self.kv.capacity,
            num_running=self.num_running,
            num_waiting=len(self.waiting),
            num_preempted=evicted,
        )

    def unblock(self) -> None:
        """Nothing could be scheduled while work waits: refuse the head request rather than hang."""
        if self.running:
            raise SimulationError(
                f"{self.framework_id}: no request could be scheduled although {len(self.running)} are running"
            )
        request = self.waiting.popleft()
        self.reject(request, "could not be scheduled: its KV cache needs exceed the free cache with nothing running")

    def apply(self, plan: StepPlan) -> None:
        """Advance computed tokens; requests that caught up sample a token; finished ones leave."""
        now = self.env.now
        finished = []
        cache_full_blocks = self.kv.cache_full_blocks
        # a paged cache only has work when a block fills up: check that here, without a call per token
        block_size = self.kv.block_size if getattr(self.kv, "enable_caching", False) and self.kv.block_size > 1 else 0
        for request, num_new in plan.scheduled:
            request.num_computed_tokens += num_new
            if not block_size or request.num_computed_tokens // block_size > request.num_hashed_blocks:
                cache_full_blocks(request)
            if request.num_computed_tokens >= request.spec.prompt_tokens + request.num_output_tokens:
                self.on_token(request, now)
                if request.num_output_tokens >= request.spec.max_output_tokens:
                    finished.append(request)
        lazy = self.lazy
        if lazy is not None:
            done = self._advance_lazy(lazy, now)
            if done:
                finished.extend(done)
                finished.sort(key=admission_order)  # the order step-by-step simulation finishes them in
        self.release_finished(finished, now)
        if finished:
            self.running = [r for r in self.running if r.status == "running"]
        if lazy is not None and self.running:
            join = lazy.try_join
            self.running = [r for r in self.running if not join(r)]

    def serve_running(self, plan: StepPlan, budget: int, chunked: bool = True) -> int:
        """Schedule running requests first, in admission order, under the token ``budget`` (paged caches).

        Each gets its remaining tokens (a chunk of them when ``chunked``; without chunking a request
        that does not fit whole waits). When the KV cache has no room for a request, the last running
        request makes room (:meth:`make_room`) until it fits or the request itself was the victim.
        Returns the budget left.
        """
        block_size = self.kv.block_size
        lazy = self.lazy
        if lazy:
            budget = self._serve_lazy(plan, lazy, budget, block_size)
        running = self.running
        index = 0
        slides = getattr(self.kv, "slides", False)  # sliding windows free blocks at every allocation
        while index < len(running) and budget > 0:
            request = running[index]
            computed = request.num_computed_tokens
            remaining = request.spec.prompt_tokens + request.num_output_tokens - computed
            # a decode step with room left in its last block needs no allocation, unless it fills a block
            # that a request admitted in this very step could hit (a trace's next turn)
            if (
                remaining == 1
                and computed < len(request.blocks) * block_size
                and not slides
                and not self.kv.decode_fills_a_findable_block(request)
            ):
                plan.scheduled.append((request, 1))
                budget -= 1
                index += 1
                continue
            num_new = min(remaining, budget)
            if not chunked and num_new < remaining:
                index += 1
                continue
            while not self.kv.allocate_slots(request, num_new):
                victim = running.pop()
                self.make_room(victim, plan)
                if victim is request:
                    break
            else:
                plan.scheduled.append((request, num_new))
                budget -= num_new
                index += 1
                continue
            break  # the request gave up its own room: nothing after it remains
        return budget

    def _serve_lazy(self, plan: StepPlan, lazy: LazyDecoders, budget: int, block_size: int) -> int:
        """Schedule the lazy decoders as one aggregate when that cannot change anyone's share.

        That holds when the budget covers every running request's remaining tokens and the free
        blocks cover everyone's allocations: then admission order decides nothing. Otherwise the
        decoders become explicit again and the step is scheduled one request at a time.
        """
        count = len(lazy)
        due = lazy.blocks_due()
        demand, need = count, due
        for request in self.running:
            computed = request.num_computed_tokens
            remaining = request.spec.prompt_tokens + request.num_output_tokens - computed
            demand += remaining
            need += max(0, -(-(computed + remaining) // block_size) - len(request.blocks))
        if demand > budget or need > self.kv.pool.num_free:  # type: ignore[attr-defined]
            self.release_lazy()
            return budget
        lazy.take_blocks(due)
        plan.lazy = count
        return budget - count

    def make_room(self, victim: Request, plan: StepPlan) -> None:
        """Free a running request's KV cache for others (default: preemption by recompute)."""
        self.evict(victim)
        plan.evicted += 1

    # ---- shared mechanics -----------------------------------------------------------------------
    def start_running(self, request: Request, cached_tokens: int) -> None:
        """Admit a waiting request with ``cached_tokens`` already in the cache."""
        request.num_computed_tokens = cached_tokens
        if request.num_cached_tokens < 0:
            request.num_cached_tokens = min(cached_tokens, request.prompt_len)
            request.first_scheduled_time = self.env.now
        request.status = "running"
        self.mark_admitted(request)
        self.running.append(request)

    def mark_admitted(self, request: Request) -> None:
        """Number the request in admission order (it joins the end of ``running``)."""
        request.seq = self._next_seq
        self._next_seq += 1

    def evict(self, request: Request, kind: str = "preempted") -> None:
        """Free the request's KV cache; it goes back to the front of the queue to be recomputed.

        ``kind`` names the event in the summary: ``preempted`` (vLLM), ``retracted`` (SGLang),
        ``paused`` (TensorRT-LLM).
        """
        self.kv.free(request)
        request.num_computed_tokens = 0
        request.preemptions += 1
        request.status = kind
        self.metrics.count_event(self.framework_id, kind)
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def in_flight(self) -> list[Request]:
        """Running and waiting requests."""
        self.release_lazy()
        return [*self.running, *self.waiting]
