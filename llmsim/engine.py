"""SimulationEnvironment: a ``simpy.Environment`` with the run's stop conditions, and the framework guard.

:func:`guarded_loop` runs a framework's ``processing_loop`` and watches it: a loop that raises, ends,
waits for new arrivals while it still holds requests (a deadlock), or keeps stepping without any
request getting further (a livelock) is stopped with a one-line reason, so one stuck framework can
neither hang the run nor take the other frameworks' results with it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

import simpy
from simpy.resources.store import StoreGet

from llmsim.config import SimulationConfig
from llmsim.errors import LLMSimError, SimulationError

log = logging.getLogger(__name__)

#: The guard looks at the requests a framework runs every this many of its loop's events (steps) ...
PROGRESS_CHECK_EVERY = 1024
#: ... and stops a framework whose requests got no further during this many events in a row.
STALL_EVENTS = 200_000


class SimulationEnvironment:
    """Owns the SimPy clock; the run ends when work is done or ``max_simulation_time`` is reached."""

    def __init__(self, simulation_config: SimulationConfig) -> None:
        self.config = simulation_config
        self.env = simpy.Environment()
        self.work_done = self.env.event()
        self.stopped_by_time_limit = False

    def get_simpy_env(self) -> simpy.Environment:
        """The underlying SimPy environment."""
        return self.env

    def schedule_process(self, process_fn: Callable[[], Generator[Any, Any, Any]]) -> simpy.Process:
        """Start a SimPy process from a generator function (or an already created generator)."""
        generator = process_fn() if callable(process_fn) else process_fn
        return self.env.process(generator)

    def signal_work_done(self) -> None:
        """Called when no request is left in flight and no more will arrive."""
        if not self.work_done.triggered:
            self.work_done.succeed()

    def run(self) -> float:
        """Advance until the work is done or the time limit; returns the simulated time reached."""
        limit = self.env.timeout(self.config.max_simulation_time)
        with relaxed_garbage_collection():
            self.env.run(until=self.env.any_of([self.work_done, limit]))
        self.stopped_by_time_limit = not self.work_done.triggered
        return self.env.now

    def now(self) -> float:
        """Current simulated time in seconds."""
        return self.env.now


_relaxed_depth = 0


@contextlib.contextmanager
def relaxed_garbage_collection(threshold: int = 100_000) -> Iterator[None]:
    """Collect reference cycles less often while setting up and simulating (re-entrant).

    A run allocates many small, long-lived objects (requests, specs, sessions) and few cycles; the
    default thresholds make CPython rescan them over and over (about a third of the wall time of
    ``benchmarks/run.py offline_30k``, and a third of building its 30,000 sessions). The objects
    that exist before are frozen out of collection and the youngest generation collects every
    ``threshold`` allocations instead of 700. Nested uses leave the outermost one in charge.
    """
    global _relaxed_depth
    if _relaxed_depth:
        _relaxed_depth += 1
        try:
            yield
        finally:
            _relaxed_depth -= 1
        return
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, old[1], old[2])
    _relaxed_depth = 1
    try:
        yield
    finally:
        _relaxed_depth = 0
        gc.set_threshold(*old)
        gc.unfreeze()


class ProgressWatch:
    """Tells whether any request a framework runs got further since the last look.

    Progress is a request finishing, or a running request reaching more generated tokens or more
    computed tokens than it ever had (recomputing after a preemption is not progress until it gets
    past where it was).
    """

    def __init__(self, framework: Any) -> None:
        self.framework = framework
        self.best: dict[int, tuple[Any, tuple[int, int]]] = {}
        self.lazy_tokens = 0

    def progressed(self) -> bool:
        """Look at the framework's requests now; True if any got further since the previous look."""
        progressed = False
        for key, (request, _) in list(self.best.items()):
            if request.status in ("completed", "rejected"):
                del self.best[key]
                progressed = True
        lazy = getattr(self.framework, "lazy", None)
        if lazy is not None and lazy.tokens > self.lazy_tokens:  # lazily advanced decoders generated tokens
            self.lazy_tokens = lazy.tokens
            progressed = True
        running = getattr(self.framework, "running", None)
        for request in running if running is not None else self.framework.in_flight():
            mark = (request.num_output_tokens, request.num_computed_tokens)
            previous = self.best.get(id(request))
            if previous is None or mark > previous[1]:
                self.best[id(request)] = (request, mark)
                progressed = True
        return progressed


def guarded_loop(framework: Any, on_failure: Callable[[Any, Exception], str]) -> Generator[simpy.Event, Any, None]:
    """Run ``framework.processing_loop()`` as it is, stopping it with a reason if it fails or gets stuck.

    The framework's events pass through unchanged (values and failures alike), so results are the
    same as running the loop directly. ``on_failure(framework, error)`` is called once when the loop
    raises, returns, waits for arrivals while holding requests, or makes no progress for
    :data:`STALL_EVENTS` events; it returns the reason every later arrival is rejected with.
    """
    loop = framework.processing_loop()
    queue = framework.request_arrival_queue
    watch = ProgressWatch(framework)
    events = stalled = checked = 0
    next_check = PROGRESS_CHECK_EVERY
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            event = loop.throw(error) if error is not None else loop.send(value)
            error = None
            if type(event) is StoreGet and event.resource is queue and framework.in_flight():
                held = len(framework.in_flight())
                if event.triggered:  # it took a waiting request: put it back for the refusal below
                    queue.items.insert(0, event.value)
                else:
                    event.cancel()  # or the next arrival would go to a process that no longer exists
                loop.close()
                raise SimulationError(
                    f"{framework.framework_id} stopped at t={framework.env.now:.6g} s: it waits for new requests "
                    f"while {held} it holds can never be scheduled (a deadlock in its scheduler)"
                )
            events += 1
            # steps a framework advanced without an event (inline) count as events here
            count = events + getattr(framework, "inline_steps", 0)
            if count >= next_check:
                stalled = 0 if watch.progressed() else stalled + count - checked
                checked, next_check = count, count + PROGRESS_CHECK_EVERY
                if stalled >= STALL_EVENTS:
                    loop.close()
                    raise SimulationError(
                        f"{framework.framework_id} stopped at t={framework.env.now:.6g} s: {stalled} engine steps "
                        f"without any of its {len(framework.in_flight())} requests getting further (a livelock)"
                    )
            try:
                value = yield event
            except Exception as exc:  # a failed event or an interrupt: the framework's loop handles it
                error = exc
    except StopIteration:
        failure: Exception = SimulationError(f"{framework.framework_id}: its processing loop ended")
    except LLMSimError as exc:
        failure = exc
    except Exception as exc:  # a bug in a framework model: keep the traceback in the log
        log.error("framework %s failed", framework.framework_id, exc_info=True)
        failure = exc
    reason = on_failure(framework, failure)
    while True:  # the framework is out of service: refuse what still arrives, so clients finish
        request = yield queue.get()
        framework.reject(request, reason)
