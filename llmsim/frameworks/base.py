"""AbstractLLMFramework: the request lifecycle every serving framework shares.

A framework owns a ``request_arrival_queue`` (``simpy.Store``) the workload generator puts
requests on, and a ``processing_loop`` SimPy process that repeats ``plan = schedule(); yield
timeout(step time); apply(plan)``: one SimPy event per engine step, never per token. Subclasses
supply the scheduling policy; this class handles admission checks, token timestamps at the server
and the client, completion, rejection and metrics.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Mapping
from typing import Any, ClassVar

import numpy as np
import simpy

from llmsim.config import FrameworkConfig, validate_schema
from llmsim.errors import ConfigError
from llmsim.frameworks.versions import Release, ReleaseTable
from llmsim.hardware.perf_model import BatchShape, PerformanceModel
from llmsim.hardware.platform import MemoryPlan, VirtualHardwarePlatform, plan_memory
from llmsim.hardware.spec import HardwareConfig, gpu_family
from llmsim.models import ModelProfile
from llmsim.workload.request import Request


class AbstractLLMFramework(ABC):
    """Base class of framework models; see the module docstring for the contract."""

    config_schema: ClassVar[type[FrameworkConfig]] = FrameworkConfig
    type_name: ClassVar[str] = "ABSTRACT"
    #: the framework's name in release strings ("vLLM"); with :attr:`releases`, the release modelled
    #: is ``f"{modelled_release} {version}"`` (shown on the console and in summary.json)
    modelled_release: ClassVar[str] = ""
    #: the framework's release table (version-dependent defaults); None: no releases (static batching)
    releases: ClassVar[ReleaseTable | None] = None
    #: grouped expert-GEMM efficiency (relative to a dense GEMM) by release and GPU family, where the
    #: engine's MoE kernels changed enough between releases to measure; None: the hardware's value
    moe_kernels: ClassVar[ReleaseTable | None] = None
    #: CPU time per step that is not hidden behind GPU work, and per scheduled sequence (seconds).
    default_step_overhead_s: ClassVar[float] = 0.0
    default_per_seq_overhead_s: ClassVar[float] = 0.0
    #: with overlapped CPU scheduling, the GPU idles this long between steps (the hand-over of the
    #: sampled tokens); see :meth:`with_overheads`
    sync_gap_s: ClassVar[float] = 0.0

    def __init__(
        self,
        framework_id: str,
        simpy_env: simpy.Environment,
        framework_specific_config: FrameworkConfig | Mapping[str, Any],
        virtual_hardware: VirtualHardwarePlatform,
        metrics_collector: Any,
        model_profile: ModelProfile,
        *,
        config_key: str = "framework",
        workload_kind: str | None = None,
        workload: Any = None,
    ) -> None:
        self.framework_id = framework_id
        #: the experiment's WorkloadConfig (None: unknown), for engines that size themselves from the
        #: dataset as their benchmark tool does (trtllm-bench)
        self.workload = workload
        # the workload's kind (``offline``, ``open_loop``...; None: unknown, a served workload): engines whose
        # defaults differ between an in-process batch and a server (vLLM's usage context) read it
        self.workload_kind = workload_kind
        self.env = simpy_env
        if not isinstance(framework_specific_config, self.config_schema):
            framework_specific_config = validate_schema(self.config_schema, dict(framework_specific_config), config_key)
        self.config = framework_specific_config
        self.config_key = config_key
        #: the release modelled (``framework.version``, else the newest in the table) and its defaults row
        self.version = self.config.version or (self.releases.newest if self.releases is not None else "")
        self.release: Release | None = self.releases.row(self.config.version) if self.releases is not None else None
        self.hardware = virtual_hardware
        self.metrics = metrics_collector
        self.model = model_profile
        self.request_arrival_queue: simpy.Store = simpy.Store(simpy_env)
        self.dtype = self.config.dtype or model_profile.dtype
        self.kv_dtype = self._kv_dtype()
        self.max_model_len = self.config.max_model_len or model_profile.max_position_embeddings
        #: GPUs of the engine, attention data-parallel ranks and expert-parallel ranks among them
        #: (each framework's own knobs: :meth:`FrameworkConfig.parallel_layout`)
        self.config.check_parallel_sizes(config_key)
        tp, self.attention_dp, self.expert_parallel = self.config.parallel_layout()
        self.num_gpus = tp
        self._check_tensor_parallel(tp // self.attention_dp)
        gpu_ids = self.config.gpu_ids or ((self.config.gpu_id,) if self.config.gpu_id else None)
        self.gpu_ids = virtual_hardware.claim_devices(framework_id, tp, gpu_ids, f"{config_key}.tensor_parallel_size")
        self.device = virtual_hardware.devices[self.gpu_ids[0]]
        assert virtual_hardware.config is not None
        self.perf_model = PerformanceModel(
            model_profile,
            self.device,
            virtual_hardware.config.efficiency,
            virtual_hardware.config.interconnect,
            tensor_parallel_size=tp,
            dtype=self.dtype,
            kv_dtype=self.kv_dtype,
            attention_dp=self.attention_dp,
            expert_parallel=self.expert_parallel,
        )
        self.perf_model.moe_gemm_scale = self._moe_gemm_relative(virtual_hardware.config)
        self.step_overhead_s = (
            self.config.step_overhead_s if self.config.step_overhead_s is not None else self.default_step_overhead_s
        )
        self.per_seq_overhead_s = (
            self.config.per_seq_overhead_s
            if self.config.per_seq_overhead_s is not None
            else self.default_per_seq_overhead_s
        )
        #: whether the engine prepares step n+1 on the CPU while the GPU runs step n (vLLM's async
        #: scheduling, SGLang's and TensorRT-LLM's overlap schedulers); policies set it from their knob
        self.overlaps_cpu = False
        self.memory_plan = self._apply_block_override(self.plan_memory())
        for device_id in self.gpu_ids:
            plan = self.memory_plan
            virtual_hardware.allocate_memory(device_id, f"{framework_id}:weights", plan.weights)
            virtual_hardware.allocate_memory(device_id, f"{framework_id}:workspace", plan.workspace)
            virtual_hardware.allocate_memory(device_id, f"{framework_id}:kv_cache", plan.kv_cache)
        self.num_steps = 0
        self.num_preemptions = 0
        #: earliest time a new request may reach this framework (set by the orchestrator)
        self.arrival_bound: Callable[[], float] | None = None

    # ---- set-up --------------------------------------------------------------------------------
    def release_default(self, knob: str) -> Any:
        """The knob's value as set, else its default in the modelled release's row."""
        value = getattr(self.config, knob)
        if value is not None or self.release is None:
            return value
        return self.release.defaults[knob]

    @property
    def release_name(self) -> str:
        """The release modelled, e.g. ``vLLM 0.33.0`` (the class's description without a table)."""
        return f"{self.modelled_release} {self.version}" if self.version else self.modelled_release

    def _kv_dtype(self) -> str:
        if self.config.kv_cache_dtype != "auto":
            return self.config.kv_cache_dtype
        # "auto" follows the activation dtype, 16-bit even for FP8 or integer weights (vLLM's meaning)
        return self.dtype if self.dtype in ("fp16", "bf16") else "bf16"

    def _moe_gemm_relative(self, hardware: HardwareConfig) -> float:
        """``moe_gemm_relative`` as set, else the release's for this GPU family, else the hardware's."""
        if self.config.moe_gemm_relative is not None:
            return self.config.moe_gemm_relative
        family = gpu_family(hardware.name)
        if self.moe_kernels is not None and family is not None:
            fitted = self.moe_kernels.row(self.config.version).defaults.get(family)
            if fitted is not None:
                return float(fitted)
        return hardware.efficiency.moe_gemm_relative

    def _check_tensor_parallel(self, tp: int) -> None:
        heads = self.model.num_attention_heads
        if heads % tp:
            raise ConfigError(
                f"{self.config_key}.tensor_parallel_size", tp, f"a divisor of the model's {heads} attention heads"
            )

    def _apply_block_override(self, plan: MemoryPlan) -> MemoryPlan:
        override = self.config.num_gpu_blocks_override
        if override is None:
            return plan
        kv_cache = override * plan.block_size * plan.kv_bytes_per_token
        return dataclasses.replace(plan, num_blocks=override, kv_cache=kv_cache)

    def plan_deployment_memory(
        self,
        utilisation: float,
        block_size: int,
        max_batched_tokens: int,
        max_seqs: int,
        fraction_of_free: bool = False,
        kv_layers_per_block: int | None = None,
    ) -> MemoryPlan:
        """:func:`~llmsim.hardware.platform.plan_memory` for this deployment's model, GPU, dtypes and TP size."""
        return plan_memory(
            self.model,
            self.device,
            dtype=self.dtype,
            kv_dtype=self.kv_dtype,
            tp=self.num_gpus,
            attention_dp=self.attention_dp,
            utilisation=utilisation,
            block_size=block_size,
            max_batched_tokens=max_batched_tokens,
            max_seqs=max_seqs,
            num_gpus_in_node=len(self.hardware.devices),
            key=f"{self.config_key}.tensor_parallel_size",
            fraction_of_free=fraction_of_free,
            kv_layers_per_block=kv_layers_per_block,
        )

    @abstractmethod
    def plan_memory(self) -> MemoryPlan:
        """Split each GPU's memory into weights, workspace and KV cache for this framework's knobs."""

    # ---- the loop ------------------------------------------------------------------------------
    @abstractmethod
    def processing_loop(self) -> Generator[simpy.Event, Any, None]:
        """SimPy process: admit arrivals, schedule a step, wait for it, apply its results."""

    def step_duration(self, batch: BatchShape, num_seqs: int) -> float:
        """GPU time of the batch plus this framework's serial CPU overheads."""
        return self.with_overheads(self.perf_model.step_time(batch), num_seqs)

    def with_overheads(self, gpu_s: Any, num_seqs: int) -> Any:
        """Step time(s) from GPU time(s) (a float or an array) of ``num_seqs`` sequences, added in one order.

        Serial engines pay the CPU work of a step after its GPU work; engines that overlap them
        (:attr:`overlaps_cpu`) take the longer of the two plus :attr:`sync_gap_s`.
        """
        if not self.overlaps_cpu:
            return (
                gpu_s
                + self.step_overhead_s
                + self.per_seq_overhead_s * num_seqs
                + self.config.scheduler_iteration_delay_s
            )
        cpu_s = self.step_overhead_s + self.per_seq_overhead_s * num_seqs
        longer = np.maximum(gpu_s, cpu_s) if isinstance(gpu_s, np.ndarray) else max(gpu_s, cpu_s)
        return longer + self.sync_gap_s + self.config.scheduler_iteration_delay_s

    def next_arrival_bound(self) -> float:
        """Earliest time something may change this framework from outside (a new request, the time limit).

        Without the workload's answer, the next pending SimPy event of any process.
        """
        return self.arrival_bound() if self.arrival_bound is not None else self.env.peek()

    def take_arrivals(self) -> list[Request]:
        """Every request waiting in the arrival queue, oldest first (non-blocking)."""
        items = self.request_arrival_queue.items
        if not items:
            return []
        taken = list(items)
        items.clear()
        return taken

    def record_batch_step(
        self,
        start: float,
        duration: float,
        batch: BatchShape,
        *,
        num_seqs: int,
        kv_used: int,
        kv_total: int,
        num_running: int,
        num_waiting: int,
        num_preempted: int = 0,
    ) -> None:
        """Append one engine step to the metrics' per-step series."""
        self.metrics.record_step(
            self.framework_id,
            start,
            duration,
            num_seqs=num_seqs,
            num_tokens=batch.num_tokens,
            num_prefill_tokens=batch.prefill_tokens,
            num_decode_seqs=batch.decode_seqs,
            kv_blocks_used=kv_used,
            kv_blocks_total=kv_total,
            num_running=num_running,
            num_waiting=num_waiting,
            num_preempted=num_preempted,
        )

    def admissible_arrivals(self) -> list[Request]:
        """Arrived requests that can be served (marked waiting); the others are rejected with their reason."""
        admissible = []
        for request in self.take_arrivals():
            error = self.admission_error(request)
            if error is not None:
                self.reject(request, error)
            else:
                request.status = "waiting"
                admissible.append(request)
        return admissible

    def admission_error(self, request: Request) -> str | None:
        """Why a request can never be served (too long for the model or the KV cache), else None."""
        if request.max_tokens > self.max_model_len:
            return (
                f"prompt ({request.prompt_len}) + max output ({request.spec.max_output_tokens}) tokens exceed "
                f"max_model_len {self.max_model_len}"
            )
        capacity = self.memory_plan.kv_capacity_tokens
        if request.max_tokens > capacity:
            return f"needs {request.max_tokens} tokens of KV cache but the cache holds {capacity}"
        return None

    # ---- lifecycle events ----------------------------------------------------------------------
    def on_token(self, request: Request, now: float) -> None:
        """Account one generated token at server time ``now`` (timestamps, streamed chunks, ITL).

        A streamed answer leaves in chunks of ``stream_chunk_tokens`` (the last may be shorter);
        ITL is the gap between consecutive chunk arrivals at the client.
        """
        if request.num_output_tokens == 0:
            request.first_token_time = now
        request.last_token_time = now
        request.num_output_tokens += 1
        count, chunk = request.num_output_tokens, request.spec.stream_chunk_tokens
        if count % chunk and count < request.spec.max_output_tokens:
            return  # this token waits for the rest of its chunk
        if math.isnan(request.first_chunk_time):
            request.first_chunk_time = now
        elif request.spec.streaming:
            gap = now - request.last_chunk_time
            if count % chunk:  # the last, shorter chunk downloads a little faster than a full one
                delay, bytes_per_token = self.hardware.download_delay, self.config.bytes_per_token_estimate_for_network
                gap += delay(count % chunk, bytes_per_token) - delay(chunk, bytes_per_token)
            self.metrics.record_itl(self.framework_id, request, gap)
        request.last_chunk_time = now

    def finish(self, request: Request, now: float) -> None:
        """The last token is out: client times, metrics, and tell the workload."""
        request.status = "completed"
        request.finish_time = now
        bytes_per_token = self.config.bytes_per_token_estimate_for_network
        if request.spec.streaming:
            chunk, count = request.spec.stream_chunk_tokens, request.num_output_tokens
            first = request.first_token_time if math.isnan(request.first_chunk_time) else request.first_chunk_time
            delay = self.hardware.download_delay
            request.client_first_token_time = first + delay(min(chunk, count), bytes_per_token)
            request.client_completion_time = now + delay((count - 1) % chunk + 1, bytes_per_token)
        else:
            whole = self.hardware.download_delay(request.num_output_tokens, bytes_per_token)
            request.client_first_token_time = now + whole
            request.client_completion_time = now + whole
        self.metrics.record_request(request)
        if request.on_done is not None:
            request.on_done(request)

    def reject(self, request: Request, reason: str) -> None:
        """Refuse a request that can never be served; it counts as failed."""
        request.status = "rejected"
        request.reason = reason
        request.finish_time = self.env.now
        request.client_completion_time = self.env.now + self.hardware.client_link.latency_s
        self.metrics.record_request(request)
        if request.on_done is not None:
            request.on_done(request)

    @abstractmethod
    def in_flight(self) -> list[Request]:
        """Requests the framework holds that have not finished (for end-of-run accounting)."""

    def in_transit(self) -> list[Request]:
        """Requests that reached the arrival queue but were not taken yet."""
        return list(self.request_arrival_queue.items)

    def effective_knobs(self) -> dict[str, Any]:
        """Every knob of this framework's config with the value in force: nulls resolved to the
        defaults the model applied (the actual ``max_num_batched_tokens``, dtype, CPU overheads...)."""
        knobs = self.config.model_dump(mode="json", exclude={"model_profile_id", "gpu_id"})
        resolved = {
            **self.describe(),
            "gpu_ids": list(self.gpu_ids),
            "step_overhead_s": self.step_overhead_s,
            "per_seq_overhead_s": self.per_seq_overhead_s,
        }
        return {key: resolved.get(key, value) for key, value in knobs.items()}

    def describe(self) -> dict[str, Any]:
        """Facts about this deployment for the summary (GPUs, memory plan, resolved knobs)."""
        plan = self.memory_plan
        return {
            "type": self.type_name,
            "version": self.version,
            "modelled_release": self.release_name,
            "model": self.model.name,
            "gpus": list(self.gpu_ids),
            "tensor_parallel_size": self.config.tensor_parallel_size,
            "num_gpus": self.num_gpus,
            "attention_dp": self.attention_dp,
            "expert_parallel": self.expert_parallel,
            "dtype": self.dtype,
            "kv_cache_dtype": self.kv_dtype,
            "max_model_len": self.max_model_len,
            "weights_gib_per_gpu": round(plan.weights / 2**30, 3),
            "kv_cache_gib_per_gpu": round(plan.kv_cache / 2**30, 3),
            "kv_cache_blocks": plan.num_blocks,
            "kv_cache_tokens": plan.kv_capacity_tokens,
        }
