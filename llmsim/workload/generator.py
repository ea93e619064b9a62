"""WorkloadGenerator: sends sessions' turns to every target framework over the client link.

Open-loop and offline workloads send each session's first turn at its sampled time to every
target framework (each gets its own copy of the same request); later turns of a conversation are
sent a think time after the client has received the previous answer from *that* framework.
Closed-loop workloads keep ``concurrency`` clients busy per framework: each client sends its
session's turns one after another and then takes the next session, ``num_requests`` in all.
Trace workloads send every row at its (rescaled) trace time, turns of a session included.
Random workloads (``vllm bench serve --dataset-name random``) are an open loop at ``rate`` req/s,
or an offline batch when the rate is infinite.

A request spends the upload time on the client link before it reaches the framework's queue. Each
framework has one client link, which serialises uploads first in, first out: requests sent
together (an offline burst) reach the server in send order, not shortest prompt first.
:meth:`WorkloadGenerator.in_transit` lists those still on the way, so a run that stops meanwhile
reports them as incomplete. ``workload.client_link=false`` models in-process clients (vLLM's
``LLM`` class, trtllm-bench): a request is in the framework's queue the moment it is sent.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import simpy

from llmsim.config import WorkloadConfig
from llmsim.distributions import Distribution, parse_distribution
from llmsim.rng import stream_rng
from llmsim.workload.request import Request
from llmsim.workload.sessions import Session, SessionSampler, SessionStream
from llmsim.workload.trace import trace_stream


class WorkloadGenerator:
    """Creates the request stream and delivers it to each target's ``request_arrival_queue``."""

    def __init__(
        self,
        simpy_env: simpy.Environment,
        workload_config: WorkloadConfig,
        target_dispatch_points: Mapping[str, simpy.Store],
        metrics_collector: Any,
        virtual_hardware: Any,
        *,
        distributions: list[dict[str, Distribution | None]],
        seed: int,
        on_all_done: Any = None,
        horizon_s: float | None = None,
    ) -> None:
        self.env = simpy_env
        self.config = workload_config
        self.targets = dict(target_dispatch_points)
        self.metrics = metrics_collector
        self.hardware = virtual_hardware
        self.seed = seed
        self.on_all_done = on_all_done
        sampler = SessionSampler(workload_config, distributions, seed, horizon_s)
        # open loops and traces make each session when its send time comes (memory follows the
        # requests in flight); closed loops and offline batches hold theirs (clients pick by index)
        if workload_config.kind == "open_loop" or (workload_config.kind == "random" and workload_config.rate):
            self.sessions: SessionStream | list[Session] = sampler.open_loop_stream()
        elif workload_config.kind == "trace":
            self.sessions = trace_stream(workload_config, seed)
        else:
            self.sessions = sampler.batch_sessions()
        self._start_times: Sequence[float] = (
            self.sessions.start_times
            if isinstance(self.sessions, SessionStream)
            else [session.start_time for session in self.sessions]
        )
        self._on_network: dict[int, Request] = {}  # sent, not yet in the framework's queue
        self._pending: dict[str, list[tuple[float, int]]] = {target: [] for target in self.targets}
        self._next_session = 0  # the first session whose first turn the sending process has not sent yet
        self._deliveries: dict[float, list[tuple[simpy.Store, Request]]] = {}  # by arrival time: one event each
        self._link_free: dict[str, float] = {}  # per framework: when its client link finishes the last upload
        self.outstanding = 0
        self.arrivals_done = False
        self.requests_sent = 0
        self._closed_next: dict[str, int] = dict.fromkeys(self.targets, 0)
        self._closed_think = self._closed_loop_think_times()

    # ---- public --------------------------------------------------------------------------------
    def generate_requests_process(self) -> Generator[simpy.Event, Any, None]:
        """SimPy process: release first turns at their send times (or start the closed loop)."""
        if self.config.kind == "closed_loop":
            for target in self.targets:
                for _ in range(min(self.config.concurrency or 0, len(self.sessions))):
                    self._start_next_closed_session(target, self.env.now)
        else:
            for index, session in enumerate(self.sessions):
                if session.start_time > self.env.now:
                    yield self.env.timeout(session.start_time - self.env.now)
                for target in self.targets:
                    self._send(target, session, 0, session.start_time)
                self._next_session = index + 1
        self._next_session = len(self.sessions)
        # a closed loop is done sending once every client has taken its last session (at once if none)
        self.arrivals_done = self.config.kind != "closed_loop" or all(
            index >= len(self.sessions) for index in self._closed_next.values()
        )
        self._check_done()

    @property
    def num_sessions(self) -> int:
        """Sessions in the sampled workload (trace: requests)."""
        return len(self.sessions)

    def next_arrival_bound(self, target: str, limit: float) -> float:
        """Earliest time a request may still reach ``target``'s queue (or ``limit``, if sooner).

        Requests on the network arrive at known times; first turns not sent yet are sent no earlier
        than their session's start. Later turns are sent only when an answer finishes, which the
        target itself decides. Frameworks use this to fast-forward past other processes' events.
        """
        pending = self._pending.get(target)
        if pending is None:
            return limit
        now = self.env.now
        while pending and pending[0][0] < now:
            heapq.heappop(pending)
        bound = pending[0][0] if pending else math.inf
        if self._next_session < len(self.sessions):
            bound = min(bound, self._start_times[self._next_session])
        return min(bound, limit)

    def in_transit(self) -> list[Request]:
        """Requests the clients have sent that have not reached a framework's queue yet."""
        now = self.env.now
        return [r for r in self._on_network.values() if r.send_time <= now]

    # ---- internals -----------------------------------------------------------------------------
    def _closed_loop_think_times(self) -> list[float]:
        if self.config.kind != "closed_loop":
            return []  # only closed loops think between sessions (a trace may be a billion requests long)
        if self.config.think_time_dist_config is None:
            return [0.0] * len(self.sessions)
        dist = parse_distribution(self.config.think_time_dist_config, "workload.think_time_dist_config")
        return [float(x) for x in dist.sample(stream_rng(self.seed, "closed_loop_think"), len(self.sessions))]

    def _start_next_closed_session(self, target: str, free_at: float) -> None:
        index = self._closed_next[target]
        if index >= len(self.sessions):
            if all(i >= len(self.sessions) for i in self._closed_next.values()):
                self.arrivals_done = True
            return
        self._closed_next[target] = index + 1
        if all(i >= len(self.sessions) for i in self._closed_next.values()):
            self.arrivals_done = True
        send_time = free_at + (self._closed_think[index] if index >= (self.config.concurrency or 0) else 0.0)
        assert isinstance(self.sessions, list)  # closed loops hold their sessions
        self._send(target, self.sessions[index], 0, send_time)

    def _send(self, target: str, session: Session, turn: int, send_time: float) -> None:
        """Send one turn: it goes on its framework's client link at ``send_time`` (now or later)."""
        spec = session.turns[turn]
        if send_time < self.env.now - 1e-9:  # a reply reported late (static batches) cannot be answered earlier
            send_time = self.env.now  # (a clock that differs by rounding only keeps the exact planned time)
        bytes_per_token = self.config.bytes_per_token_estimate_for_network
        # the earliest it can land (an idle link); the upload itself fixes the time. In-process
        # clients (no client link): the engine has it at once
        arrival = send_time + self.hardware.upload_delay(spec.prompt_tokens, bytes_per_token)
        request = Request(spec, target, send_time, arrival, on_done=self._on_request_done)
        request.extra = {"session": session}
        self.outstanding += 1
        self.requests_sent += 1
        self._on_network[id(request)] = request
        if send_time > self.env.now:  # a later turn, sent after a think time: the link sees it then
            heapq.heappush(self._pending[target], (arrival, self.requests_sent))  # a lower bound until then
            self.env.timeout(send_time - self.env.now).callbacks.append(lambda _event: self._upload(request))
        else:
            self._upload(request)

    def _upload(self, request: Request) -> None:
        """Put a request on its framework's client link, behind the uploads sent before it.

        One link per framework serialises uploads first in, first out, as the client's network
        interface does with the requests ``vllm bench serve`` writes one after another: an upload
        starts when the request is sent and the link has finished the previous one, takes its bytes
        over the bandwidth, and lands the link's latency later. A burst thus reaches the server in
        send order, each request a serialisation time after the one before.
        """
        target = request.framework_id
        tokens, bytes_per_token = request.spec.prompt_tokens, self.config.bytes_per_token_estimate_for_network
        start = max(request.send_time, self._link_free.get(target, -math.inf))
        self._link_free[target] = start + self.hardware.serialisation_time(tokens, bytes_per_token)
        arrival = request.arrival_time = start + self.hardware.upload_delay(tokens, bytes_per_token)
        if arrival <= self.env.now:  # in-process clients (or a link so ideal that the bytes take no time)
            self._deliver(self.targets[target], request)
            return
        heapq.heappush(self._pending[target], (arrival, self.requests_sent))
        landing = self._deliveries.get(arrival)
        if landing is None:  # requests landing at the same instant share one event
            landing = self._deliveries[arrival] = []
            self.env.timeout(arrival - self.env.now).callbacks.append(lambda _event, at=arrival: self._deliver_all(at))
        landing.append((self.targets[target], request))

    def _deliver_all(self, arrival: float) -> None:
        for store, request in self._deliveries.pop(arrival):
            self._deliver(store, request)

    def _deliver(self, store: simpy.Store, request: Request) -> None:
        """The request reached the server: it joins the framework's arrival queue."""
        del self._on_network[id(request)]
        # the clock reads the planned arrival up to rounding: keep arrival <= first scheduled exactly
        request.arrival_time = self.env.now
        if store.get_queue and not store.items:
            store.put(request)  # the framework waits for work: wake it
        else:  # what a put would do, without an event: nobody waits, or an earlier put wakes the waiter
            store.items.append(request)

    def _on_request_done(self, request: Request) -> None:
        """A framework finished (or rejected) a request: send the next turn or session."""
        self.outstanding -= 1
        session: Session = request.extra["session"]  # type: ignore[index]
        turn = request.spec.turn
        client_done = request.client_completion_time
        if request.status == "completed" and turn + 1 < len(session.turns):
            following = session.turns[turn + 1]
            self._send(request.framework_id, session, turn + 1, client_done + following.think_time_s)
        elif self.config.kind == "closed_loop":
            free_at = client_done if request.status == "completed" else self.env.now
            self._start_next_closed_session(request.framework_id, free_at)
        self._check_done()

    def _check_done(self) -> None:
        if self.arrivals_done and self.outstanding == 0 and self.on_all_done is not None:
            self.on_all_done()
