"""StaticBatchingFramework: request-level batching as classic servers did it (FasterTransformer,
early Hugging Face servers) — the baseline that shows what continuous batching buys.

Up to ``max_batch_size`` waiting requests form a batch (after waiting up to ``batch_wait_timeout_s``
for it to fill); prompts are padded to the longest one and prefilled together; the batch then
decodes in lockstep until its longest member has all its tokens, padded members included, and only
then does the next batch start. Each member's KV cache is reserved for the padded length up front.
Streamed members receive tokens as they are generated; non-streamed members get their answer
when the whole batch returns. The decode phase is advanced in closed form: one SimPy timeout for
the whole phase, token times computed arithmetically.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import Any, ClassVar

import simpy
from pydantic import Field, NonNegativeFloat, PositiveInt

from llmsim.config import FrameworkConfig
from llmsim.frameworks.base import AbstractLLMFramework
from llmsim.hardware.perf_model import BatchShape
from llmsim.hardware.platform import MemoryPlan
from llmsim.workload.request import Request


class StaticConfig(FrameworkConfig):
    """Knobs of a request-level batching server."""

    max_batch_size: PositiveInt = Field(default=16, description="Requests per batch at most.")
    batch_wait_timeout_s: NonNegativeFloat = Field(
        default=0.05, description="How long the first waiting request waits for the batch to fill."
    )
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)


class StaticBatchingFramework(AbstractLLMFramework):
    """Request-level (static) batching; see the module docstring."""

    config_schema: ClassVar[type[FrameworkConfig]] = StaticConfig
    type_name: ClassVar[str] = "STATIC"
    modelled_release: ClassVar[str] = "request-level batching (no release)"
    default_step_overhead_s: ClassVar[float] = 1.0e-3  # a Python serving loop; efficiency.md section 4
    default_per_seq_overhead_s: ClassVar[float] = 1.0e-5
    config: StaticConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting: deque[Request] = deque()
        self.batch: list[Request] = []
        self.capacity_tokens = self.memory_plan.kv_capacity_tokens
        self.used_tokens = 0

    def plan_memory(self) -> MemoryPlan:
        """Weights, workspace and a KV region counted in tokens (block size 1: no paging)."""
        cfg = self.config
        tokens = min(cfg.max_batch_size * 512, 16384)
        return self.plan_deployment_memory(cfg.gpu_memory_utilization, 1, tokens, cfg.max_batch_size)

    def _admit(self) -> None:
        self.waiting.extend(self.admissible_arrivals())

    def _form_batch(self) -> list[Request]:
        """FCFS members while the padded batch's KV cache fits."""
        batch: list[Request] = []
        longest_prompt = longest_output = 0
        while self.waiting and len(batch) < self.config.max_batch_size:
            candidate = self.waiting[0]
            prompt = max(longest_prompt, candidate.prompt_len)
            output = max(longest_output, candidate.spec.max_output_tokens)
            if (len(batch) + 1) * (prompt + output) > self.capacity_tokens:
                break
            batch.append(self.waiting.popleft())
            longest_prompt, longest_output = prompt, output
        return batch

    def processing_loop(self) -> Generator[simpy.Event, Any, None]:
        """Wait for a batch, prefill it padded, decode it in lockstep to its longest member, repeat."""
        env = self.env
        while True:
            self._admit()
            if not self.waiting:
                request = yield self.request_arrival_queue.get()
                self.request_arrival_queue.items.insert(0, request)
                continue
            deadline = self.waiting[0].arrival_time + self.config.batch_wait_timeout_s
            if len(self.waiting) < self.config.max_batch_size and env.now < deadline:
                yield env.timeout(deadline - env.now)
                self._admit()
            batch = self._form_batch()
            if not batch:
                request = self.waiting.popleft()
                self.reject(request, "its padded KV cache does not fit even alone")
                continue
            yield from self._run_batch(batch)

    def _run_batch(self, batch: list[Request]) -> Generator[simpy.Event, Any, None]:
        env = self.env
        self.batch = batch
        prompt = max(r.prompt_len for r in batch)
        steps = max(r.spec.max_output_tokens for r in batch)
        self.used_tokens = len(batch) * (prompt + steps)
        for request in batch:
            request.status = "running"
            request.num_cached_tokens = 0
            request.first_scheduled_time = env.now
        shape = self.perf_model.new_batch()
        for _ in batch:
            shape.add_prefill(prompt, 0, samples_token=True)
        prefill = self.step_duration(shape, len(batch))
        self._record(env.now, prefill, shape, len(batch))
        # decode durations: step k (1-based) attends over prompt + k tokens for every (padded) member
        durations = []
        for k in range(1, steps):
            shape = self.perf_model.new_batch()
            for _ in batch:
                shape.add_decode(prompt + k)
            durations.append(self.step_duration(shape, len(batch)))
        token_times = [env.now + prefill]
        for duration in durations:
            self._record(token_times[-1], duration, shape, len(batch))
            token_times.append(token_times[-1] + duration)
        yield env.timeout(token_times[-1] - env.now)
        for request in batch:
            for k in range(request.spec.max_output_tokens):
                self.on_token(request, token_times[k])
            request.num_computed_tokens = request.num_tokens
            self.finish_at(request, token_times[request.spec.max_output_tokens - 1], token_times[-1])
        self.num_steps += steps
        self.batch = []
        self.used_tokens = 0

    def finish_at(self, request: Request, last_token: float, batch_end: float) -> None:
        """Streamed answers end at their own last token; non-streamed ones return with the batch."""
        self.finish(request, last_token if request.spec.streaming else batch_end)

    def _record(self, start: float, duration: float, shape: BatchShape, num_seqs: int) -> None:
        self.record_batch_step(
            start,
            duration,
            shape,
            num_seqs=num_seqs,
            kv_used=self.used_tokens,
            kv_total=self.capacity_tokens,
            num_running=num_seqs,
            num_waiting=len(self.waiting),
        )

    def in_flight(self) -> list[Request]:
        """The running batch and the waiting queue."""
        return [*self.batch, *self.waiting]
