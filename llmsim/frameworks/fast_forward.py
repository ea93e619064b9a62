"""Fast-forward: the engine loop's shortcuts that leave every result exactly as step-by-step simulation.

:class:`FastForward` is mixed into :class:`~llmsim.frameworks.continuous.ContinuousBatchingFramework`
and used when ``simulation.fast_forward`` is on (the default):

* *closed-form decode stretches*: when the planned step starts a run of identical decode steps
  (nothing finishes, the KV cache suffices and nothing can arrive before the run ends), the run's
  step times come from one vectorised formula, added in the same order as step by step;
* *lazy decoders* (:mod:`~llmsim.frameworks.lazy_decode`): steady decoders advance from one step
  counter, so a step of only lazy decoders needs no scheduling and a constant amount of work;
* *inline clock*: a step whose end comes before any other pending event moves the SimPy clock by
  the same sum a timeout would, without the event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import simpy

from llmsim.frameworks.lazy_decode import LazyDecoders, admission_order
from llmsim.workload.request import Request

if TYPE_CHECKING:
    from llmsim.frameworks.continuous import StepPlan


@dataclass
class DecodeStretch:
    """A run of identical decode steps of ``requests``: per-step durations and end times."""

    requests: list[Request]
    steps: int
    start: float
    durations: np.ndarray
    ends: np.ndarray
    usage: list[int] | np.ndarray


class FastForward:
    """Closed-form decode stretches, steps of only lazy decoders and the inline clock (module docstring).

    Expects the attributes and methods of a continuous-batching framework (``env``, ``kv``,
    ``perf_model``, ``metrics``, ``running``, ``waiting``, ``lazy``, ``finish`` ...).
    """

    #: Whether waiting requests stay unadmittable while the running batch only decodes (true when
    #: admission depends only on free memory, seats and token budget, which decoding never increases).
    steady_while_waiting: ClassVar[bool] = True
    MAX_STRETCH: ClassVar[int] = 4096
    #: consecutive steps at most without giving SimPy (and the livelock guard) control
    MAX_INLINE_STEPS: ClassVar[int] = 1024

    env: simpy.Environment
    kv: Any
    perf_model: Any
    metrics: Any
    config: Any
    model: Any
    framework_id: str
    running: list[Request]
    waiting: deque[Request]
    lazy: LazyDecoders | None
    step_token_budget: int
    step_overhead_s: float
    per_seq_overhead_s: float
    num_steps: int
    inline_steps: int
    _inline_run: int
    _last_step_duration: float

    if TYPE_CHECKING:  # provided by the framework class this is mixed into

        def finish(self, request: Request, now: float) -> None: ...

        def with_overheads(self, gpu_s: Any, num_seqs: int) -> Any: ...

        def next_arrival_bound(self) -> float: ...

        def holds_parked_requests(self) -> bool: ...

        @property
        def num_running(self) -> int: ...

    def advance_clock_inline(self, delay: float) -> bool:
        """Let ``delay`` pass without a SimPy event when no other event comes first (True if done).

        The clock moves by the same sum a timeout would be scheduled at, so every time is
        identical; only the event itself (and the resumption of this process) is saved. Used with
        lazy decoders (fast-forward on); at most :attr:`MAX_INLINE_STEPS` times in a row.
        """
        env = self.env
        if self.lazy is None or self._inline_run >= self.MAX_INLINE_STEPS or env.peek() <= env.now + delay:
            self._inline_run = 0
            return False
        env._now += delay  # SimPy's own clock: a Timeout(delay) would be scheduled at this very sum
        self._inline_run += 1
        self.inline_steps += 1
        return True

    def wait_for_stretch(self, stretch: DecodeStretch) -> Generator[simpy.Event, Any, None]:
        """Let the stretch's time pass; the clock then reads its last step's end exactly.

        ``now + (end - now)`` can differ from ``end`` in the last bit (early in a run, when ``end``
        exceeds twice ``now``), while step by step the clock is the running sum the stretch's end is.
        """
        env = self.env
        end = float(stretch.ends[-1])
        delay = end - env.now
        if not self.advance_clock_inline(delay):
            yield env.timeout(delay)
        env._now = end  # at most one unit in the last place from where the timeout landed

    def only_lazy_decoders_run(self, lazy: LazyDecoders) -> bool:
        """Whether the next step is only the lazy decoders and needs no scheduling decision.

        Nothing else runs, waits or is parked, and the token budget and free blocks cover them all:
        then :meth:`schedule` could only take every decoder, which :meth:`lazy_only_iteration` does.
        """
        return (
            not self.running
            and not self.waiting
            and not self.holds_parked_requests()
            and len(lazy) <= self.step_token_budget
            and lazy.blocks_due() <= self.kv.pool.num_free
        )

    def lazy_only_iteration(self, lazy: LazyDecoders) -> Generator[simpy.Event, Any, None]:
        """A stretch of lazy-only steps when one fits, else one such step."""
        lazy.take_blocks(lazy.blocks_due())
        stretch = self.lazy_stretch(len(lazy))
        if stretch is None:
            yield from self._lazy_only_step(lazy)
            return
        yield from self.wait_for_stretch(stretch)
        self.apply_lazy_stretch(stretch)

    def fast_forward_plan(self, plan: StepPlan) -> Generator[simpy.Event, Any, bool]:
        """Run the planned step as the start of a closed-form stretch if it is one (True if done)."""
        lazy = self.lazy
        if lazy is not None:
            only_lazy = plan.lazy and not (plan.scheduled or plan.evicted or plan.extra_time_s or self.running)
            stretch = self.lazy_stretch(plan.lazy) if only_lazy else None
            if stretch is not None:
                yield from self.wait_for_stretch(stretch)
                self.apply_lazy_stretch(stretch)
                return True
        if lazy is None or not lazy.members:
            stretch = self.steady_stretch(plan)
            if stretch is not None:
                yield from self.wait_for_stretch(stretch)
                self.apply_stretch(stretch)
                if lazy is not None:  # no members: only the counter and the clock move
                    lazy.advance(stretch.steps, float(stretch.ends[-1]))
                return True
        return False

    def _lazy_only_step(self, lazy: LazyDecoders) -> Generator[simpy.Event, Any, None]:
        """One step of only lazy decoders (blocks already taken): priced, timed, applied and recorded."""
        env = self.env
        n = len(lazy)
        start = env.now
        windowed = lazy.kv_tokens if lazy.window is None else lazy.window_tokens
        duration = self.with_overheads(self.perf_model.decode_step_time(n, lazy.kv_tokens, windowed), n)
        self._last_step_duration = duration
        if not self.advance_clock_inline(duration):
            yield env.timeout(duration)
        now = env.now
        self.release_finished(self._advance_lazy(lazy, now), now)
        self.num_steps += 1
        self.metrics.record_step(
            self.framework_id,
            start,
            duration,
            num_seqs=n,
            num_tokens=n,
            num_prefill_tokens=0,
            num_decode_seqs=n,
            kv_blocks_used=self.kv.num_used,
            kv_blocks_total=self.kv.capacity,
            num_running=self.num_running,
            num_waiting=len(self.waiting),
            num_preempted=0,
        )

    def _advance_lazy(self, lazy: LazyDecoders, now: float) -> list[Request]:
        """The lazy decoders took one step ending at ``now``: ITL, the counter; returns who finished."""
        if lazy.itl_count:
            # every lazy decoder's previous token came out when the previous step ended
            self.metrics.record_itl_count(self.framework_id, now - lazy.last_end, lazy.itl_count)
        lazy.advance(1, now)
        return lazy.finished_now()

    def steady_stretch(self, plan: StepPlan) -> DecodeStretch | None:
        """If the planned step starts a run of identical decode steps, the run (None otherwise).

        The run lasts until a request finishes, the KV cache would run short, or the first step
        boundary at or after the next possible arrival (or the time limit): exactly the steps
        step-by-step simulation would take with nothing changing in between. Their times come from
        the same decode-step formula, added in the same order, so timestamps are bit-identical.
        """
        scheduled = plan.scheduled
        if plan.evicted or plan.extra_time_s or len(scheduled) != len(self.running) or len(scheduled) < 1:
            return None
        next_event = self.next_arrival_bound()
        if not self._stretch_may_start(next_event):
            return None
        remaining = self.MAX_STRETCH
        requests = []
        for request, num_new in scheduled:
            if num_new != 1 or request.num_output_tokens == 0 or request.spec.stream_chunk_tokens != 1:
                return None
            remaining = min(remaining, request.spec.max_output_tokens - request.num_output_tokens)
            requests.append(request)
        if remaining < 2:
            return None
        steps = self.kv.decode_stretch_limit(requests, remaining)
        if steps < 2:
            return None
        n = len(requests)
        contexts = np.fromiter((r.num_computed_tokens + 1 for r in requests), dtype=np.int64, count=n)
        offsets = np.arange(steps, dtype=np.int64)
        kv_tokens = int(contexts.sum()) + n * offsets
        window = self.model.attention_window
        if window is None:
            windowed = kv_tokens
        elif self.model.window_is_chunked:
            # sequence i reads (r_i + t) mod window + 1 keys at step t, r_i = (context_i - 1) mod window
            residues = np.sort((contexts - 1) % window)
            wrapped = n - np.searchsorted(residues, window - offsets % window, side="left")
            windowed = int(residues.sum()) + n * (offsets + 1) - window * (n * (offsets // window) + wrapped)
        else:
            ordered = np.sort(contexts)
            below = np.searchsorted(ordered, window - offsets, side="left")  # contexts still under the window
            prefix = np.concatenate(([0], np.cumsum(ordered)))
            windowed = prefix[below] + below * offsets + (n - below) * window
        timed = self._timed_steps(n, kv_tokens, windowed, next_event)
        if timed is None:
            return None
        steps, durations, ends = timed
        usage = self.kv.decode_usage(requests, steps)
        return DecodeStretch(requests, steps, self.env.now, durations[:steps], ends[:steps], usage)

    def _stretch_may_start(self, next_event: float) -> bool:
        """The cheap tests a stretch must pass first: the next possible arrival (``next_event``) is
        not before two more steps could end (else stepping is cheaper), and nothing waiting could be
        admitted during the stretch."""
        if next_event < self.env.now + 2.0 * self._last_step_duration:
            return False
        return not (self.waiting and not self.steady_while_waiting)

    def _timed_steps(
        self, n: int, kv_tokens: np.ndarray, windowed: np.ndarray, next_event: float
    ) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(steps, durations, end times) of decode steps of ``n`` sequences from now, cut at the first
        step boundary at or after ``next_event`` (which must be seen there); None if fewer than two."""
        now = self.env.now
        durations = self.with_overheads(self.perf_model.decode_step_times(n, kv_tokens, windowed), n)
        ends = np.cumsum(np.concatenate(([now], durations)))[1:]
        if next_event <= ends[0]:
            return None
        steps = min(len(ends), int(np.searchsorted(ends, next_event, side="left")) + 1)
        if steps < 2:
            return None
        return steps, durations[:steps], ends[:steps]

    def release_finished(self, finished: list[Request], now: float) -> None:
        """Requests whose last token came out at ``now`` free their KV cache and finish, in order."""
        for request in finished:
            self.kv.free(request)
            self.finish(request, now)

    def apply_stretch(self, stretch: DecodeStretch) -> None:
        """Account ``stretch.steps`` decode steps at once: tokens, KV, ITL, completions, step series."""
        steps, end = stretch.steps, float(stretch.ends[-1])
        first_end = float(stretch.ends[0])
        warm_up = self.metrics.config.warm_up_duration_s
        streamed = 0
        finished = []
        for request in stretch.requests:
            self.kv.reserve_decode_steps(request, steps)
            request.num_computed_tokens += steps
            self.kv.cache_full_blocks(request)
            if request.spec.streaming:
                self.metrics.record_itl(self.framework_id, request, first_end - request.last_chunk_time)
                streamed += request.send_time >= warm_up
            request.num_output_tokens += steps
            request.last_token_time = request.last_chunk_time = end
            if request.is_finished:
                finished.append(request)
        if streamed:
            # gaps as differences of step end times, exactly as step-by-step timestamps give them
            self.metrics.record_itl_bulk(self.framework_id, np.diff(stretch.ends), streamed)
        self.on_decode_stretch(steps)
        n = len(stretch.requests)
        self.release_finished(finished, end)
        if finished:
            self.running = [r for r in self.running if r.status == "running"]
        self._record_stretch(stretch, n)

    def on_decode_stretch(self, steps: int) -> None:
        """Policy state that advances with every decode step (SGLang's new-token ratio) moves ``steps`` at once."""

    def lazy_stretch(self, n: int) -> DecodeStretch | None:
        """Like :meth:`steady_stretch` for a step of only the ``n`` lazy decoders (its blocks taken).

        The run ends at the next finishing decoder, the KV cache running short, or the first step
        boundary at or after the next possible arrival.
        """
        lazy = self.lazy
        assert lazy is not None
        now = self.env.now
        next_event = self.next_arrival_bound()
        if not self._stretch_may_start(next_event):
            return None
        steps = min(self.MAX_STRETCH, lazy.steps_to_next_finish())
        if steps < 2:
            return None
        kv_tokens = lazy.kv_tokens + n * np.arange(steps, dtype=np.int64)
        windowed = kv_tokens if lazy.window is None else lazy.windowed_over(steps)
        timed = self._timed_steps(n, kv_tokens, windowed, next_event)
        if timed is None:
            return None
        steps, durations, ends = timed
        # blocks the decoders take after the first step (whose blocks the schedule took already)
        taken = np.cumsum(lazy.crossings_over(steps)[1:])
        steps = min(steps, 1 + int(np.searchsorted(taken, self.kv.pool.num_free, side="right")))  # type: ignore[attr-defined]
        if steps < 2:
            return None
        usage = self.kv.num_used + np.concatenate(([0], taken[: steps - 1]))
        return DecodeStretch([], steps, now, durations[:steps], ends[:steps], usage)

    def apply_lazy_stretch(self, stretch: DecodeStretch) -> None:
        """Account a :meth:`lazy_stretch`: blocks, ITL, the step counter, completions, step series."""
        lazy = self.lazy
        assert lazy is not None
        steps, end = stretch.steps, float(stretch.ends[-1])
        n = len(lazy)
        used = np.asarray(stretch.usage, dtype=np.int64)
        lazy.take_blocks(int(used[-1] - used[0]))
        if lazy.itl_count:
            gaps = np.diff(np.concatenate(([stretch.start], stretch.ends)))
            self.metrics.record_itl_bulk(self.framework_id, gaps, lazy.itl_count)
        lazy.advance(steps, end)
        finished = lazy.finished_now()
        finished.sort(key=admission_order)
        self.release_finished(finished, end)
        self._record_stretch(stretch, n)

    def _record_stretch(self, stretch: DecodeStretch, n: int) -> None:
        """Append a stretch of ``n``-sequence decode steps to the step series.

        Each row is the state after its step: the batch as it was, then (last row) after the
        completions the stretch ended with.
        """
        steps = stretch.steps
        running = np.full(steps, n)
        running[-1] = self.num_running
        used = np.array(stretch.usage, dtype=np.int64)
        used[-1] = self.kv.num_used
        self.num_steps += steps
        self.metrics.record_steps(
            self.framework_id,
            np.concatenate(([stretch.start], stretch.ends[:-1])),
            stretch.durations,
            num_seqs=n,
            num_tokens=n,
            num_prefill_tokens=0,
            num_decode_seqs=n,
            kv_blocks_used=used,
            kv_blocks_total=self.kv.capacity,
            num_running=running,
            num_waiting=len(self.waiting),
            num_preempted=0,
        )
