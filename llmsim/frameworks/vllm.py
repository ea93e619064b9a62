"""VLLMFramework: the vLLM v1 engine's scheduler over a paged, prefix-cached KV cache.

Policy, as in vLLM v1 (``vllm/v1/core/sched/scheduler.py``, around v0.10):

* no prefill/decode phases: each request has computed vs known tokens and gets a share of the
  step's ``max_num_batched_tokens`` budget; long prompts are chunked (``enable_chunked_prefill``);
* running requests are served first, in admission order; when the KV cache has no room for one,
  the last admitted running request is preempted (its blocks freed; it is recomputed later) until
  there is room or the request itself was the victim;
* waiting requests are admitted first-come first-served, only in steps without preemption, while
  fewer than ``max_num_seqs`` run and budget is left; with prefix caching a new request starts
  from its longest cached prefix of full blocks (capped at prompt length - 1);
* a request whose computed tokens reach its known tokens samples one token in that step.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Generator
from typing import Any, ClassVar, Literal

import simpy
from pydantic import Field, PositiveInt, model_validator

from llmsim.config import FrameworkConfig
from llmsim.errors import ConfigError, SimulationError
from llmsim.frameworks.base import AbstractLLMFramework
from llmsim.frameworks.kv_cache import KVCacheManager
from llmsim.hardware.platform import MemoryPlan, plan_memory
from llmsim.hardware.spec import GIB
from llmsim.workload.request import Request


class VLLMConfig(FrameworkConfig):
    """vLLM engine arguments (real names and defaults; ``shared/reference/conventions.md``)."""

    engine_version: Literal["v1"] = "v1"
    max_num_seqs: PositiveInt | None = Field(
        default=None, description="null: vLLM v1's hardware default (1024 on >=70 GiB non-A100 GPUs, else 256)."
    )
    max_num_batched_tokens: PositiveInt | None = Field(
        default=None, description="null: vLLM v1's server default (8192 on >=70 GiB non-A100 GPUs, else 2048)."
    )
    block_size: Literal[1, 8, 16, 32, 64, 128] = 16
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    preemption_mode: Literal["recompute"] = "recompute"
    policy: Literal["fcfs"] = "fcfs"
    swap_space: float = Field(default=4.0, ge=0, description="GiB of host memory per GPU for swapping (v0).")
    num_gpu_blocks_override: PositiveInt | None = Field(
        default=None, description="Use exactly this many KV blocks instead of what memory allows (vLLM's knob)."
    )

    @model_validator(mode="after")
    def _sizes(self) -> VLLMConfig:
        seqs, tokens = self.max_num_seqs, self.max_num_batched_tokens
        if seqs is not None and tokens is not None and tokens < seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs ({self.max_num_seqs})"
            )
        return self


class VLLMFramework(AbstractLLMFramework):
    """vLLM v1: continuous batching with chunked prefill, prefix caching and recompute preemption."""

    config_schema: ClassVar[type[FrameworkConfig]] = VLLMConfig
    type_name: ClassVar[str] = "VLLM"
    # Serial CPU time per step (scheduling, input preparation, sampling, output processing) that the
    # v1 engine does not overlap with the GPU; see efficiency.md section 4. Calibrated in issue 5.
    default_step_overhead_s: ClassVar[float] = 1.5e-3
    default_per_seq_overhead_s: ClassVar[float] = 1.0e-5
    config: VLLMConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._resolved_limits: tuple[int, int] | None = None
        super().__init__(*args, **kwargs)
        self.max_num_seqs, self.max_num_batched_tokens = self._limits()
        if not self.config.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ConfigError(
                f"{self.config_key}.max_num_batched_tokens",
                self.max_num_batched_tokens,
                f">= max_model_len ({self.max_model_len}) when enable_chunked_prefill is false",
            )
        self.kv = KVCacheManager(self.memory_plan.num_blocks, self.config.block_size, self.config.enable_prefix_caching)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    # ---- set-up --------------------------------------------------------------------------------
    def _limits(self) -> tuple[int, int]:
        """``max_num_seqs`` and ``max_num_batched_tokens``, with v1's hardware-dependent defaults."""
        if self._resolved_limits is None:
            device = self.hardware.devices[self.gpu_ids[0]]
            big = device.memory_capacity_bytes >= 70 * GIB and "A100" not in device.name.upper()
            seqs = self.config.max_num_seqs or (1024 if big else 256)
            tokens = self.config.max_num_batched_tokens or (8192 if big else 2048)
            self._resolved_limits = (seqs, max(tokens, seqs))
        return self._resolved_limits

    def plan_memory(self) -> MemoryPlan:
        """Weights, profiled activation workspace and KV blocks under ``gpu_memory_utilization``."""
        seqs, tokens = self._limits()
        plan = plan_memory(
            self.model,
            self.device,
            dtype=self.dtype,
            kv_dtype=self.kv_dtype,
            tp=self.config.tensor_parallel_size,
            utilisation=self.config.gpu_memory_utilization,
            block_size=self.config.block_size,
            max_batched_tokens=tokens,
            max_seqs=seqs,
            num_gpus_in_node=len(self.hardware.devices),
            key=f"{self.config_key}.tensor_parallel_size",
        )
        override = self.config.num_gpu_blocks_override
        if override is not None:
            plan = dataclasses.replace(
                plan, num_blocks=override, kv_cache=override * plan.block_size * plan.kv_bytes_per_token
            )
        return plan

    # ---- the loop ------------------------------------------------------------------------------
    def _admit_arrivals(self) -> None:
        for request in self.take_arrivals():
            error = self.admission_error(request)
            if error is not None:
                self.reject(request, error)
            else:
                request.status = "waiting"
                self.waiting.append(request)

    def processing_loop(self) -> Generator[simpy.Event, Any, None]:
        """Repeat: take arrivals, schedule one step, wait its duration, apply its outcome."""
        env = self.env
        while True:
            self._admit_arrivals()
            if not self.running and not self.waiting:
                request = yield self.request_arrival_queue.get()
                self.request_arrival_queue.items.insert(0, request)
                continue
            scheduled, preempted = self.schedule()
            if not scheduled:
                self._unblock()
                continue
            batch = self.perf_model.new_batch()
            for request, num_new in scheduled:
                if request.num_computed_tokens + num_new < request.num_tokens:
                    batch.add_prefill(num_new, request.num_computed_tokens, samples_token=False)
                elif num_new == 1 and request.num_output_tokens > 0:
                    batch.add_decode(request.num_computed_tokens + 1)
                else:
                    batch.add_prefill(num_new, request.num_computed_tokens, samples_token=True)
            start = env.now
            duration = self.step_duration(batch, len(scheduled))
            yield env.timeout(duration)
            self.apply(scheduled)
            self.num_steps += 1
            self.metrics.record_step(
                self.framework_id,
                start,
                duration,
                num_seqs=len(scheduled),
                num_tokens=batch.num_tokens,
                num_prefill_tokens=batch.prefill_tokens,
                num_decode_seqs=batch.decode_seqs,
                kv_blocks_used=self.kv.pool.num_used,
                kv_blocks_total=self.kv.pool.num_blocks,
                num_running=len(self.running),
                num_waiting=len(self.waiting),
                num_preempted=preempted,
            )

    def _unblock(self) -> None:
        """Nothing could be scheduled while work waits: refuse the head request rather than hang."""
        if self.running:  # pragma: no cover - the running set always schedules at least one request
            raise SimulationError(
                f"{self.framework_id}: no request could be scheduled although {len(self.running)} run"
            )
        request = self.waiting.popleft()
        self.reject(request, "could not be scheduled: its KV cache needs exceed the free blocks with nothing running")

    # ---- policy --------------------------------------------------------------------------------
    def schedule(self) -> tuple[list[tuple[Request, int]], int]:
        """Choose (request, new tokens) pairs for one step; returns them and the preemption count."""
        budget = self.max_num_batched_tokens
        scheduled: list[tuple[Request, int]] = []
        preempted = 0
        running = self.running
        index = 0
        while index < len(running) and budget > 0:
            request = running[index]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self.config.enable_chunked_prefill and num_new < request.num_tokens - request.num_computed_tokens:
                index += 1
                continue
            while not self.kv.allocate_slots(request, num_new):
                victim = running.pop()
                self._preempt(victim)
                preempted += 1
                if victim is request:
                    break
            else:
                scheduled.append((request, num_new))
                budget -= num_new
                index += 1
                continue
            break  # the request preempted itself: nothing after it remains
        if preempted == 0:
            self._admit_waiting(scheduled, budget)
        return scheduled, preempted

    def _admit_waiting(self, scheduled: list[tuple[Request, int]], budget: int) -> None:
        now = self.env.now
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            request = self.waiting[0]
            computed = self.kv.get_computed_blocks(request)
            cached_tokens = len(computed) * self.kv.block_size
            remaining = request.num_tokens - cached_tokens
            if not self.config.enable_chunked_prefill and remaining > budget:
                break
            num_new = min(remaining, budget)
            if not self.kv.allocate_slots(request, num_new, computed):
                break
            self.waiting.popleft()
            request.num_computed_tokens = cached_tokens
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = min(cached_tokens, request.prompt_len)
                request.first_scheduled_time = now
            request.status = "running"
            self.running.append(request)
            scheduled.append((request, num_new))
            budget -= num_new

    def _preempt(self, request: Request) -> None:
        """Free the request's blocks; it goes back to the front of the queue to be recomputed."""
        self.kv.free(request)
        request.num_computed_tokens = 0
        request.preemptions += 1
        request.status = "preempted"
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def apply(self, scheduled: list[tuple[Request, int]]) -> None:
        """Advance computed tokens; requests that caught up sample a token; finished ones leave."""
        now = self.env.now
        finished = False
        for request, num_new in scheduled:
            request.num_computed_tokens += num_new
            self.kv.cache_full_blocks(request)
            if request.num_computed_tokens >= request.num_tokens:
                self.on_token(request, now)
                if request.is_finished:
                    self.kv.free(request)
                    finished = True
                    self.finish(request, now)
        if finished:
            self.running = [r for r in self.running if r.status == "running"]

    def in_flight(self) -> list[Request]:
        """Running and waiting requests."""
        return [*self.running, *self.waiting]
