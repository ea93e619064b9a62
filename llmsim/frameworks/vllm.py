"""VLLMFramework: vLLM's schedulers over a paged, prefix-cached KV cache.

``engine_version: v1`` (default) models the v1 engine (``vllm/v1/core/sched/scheduler.py`` ~v0.10):

* no prefill/decode phases: each request has computed vs known tokens and gets a share of the
  step's ``max_num_batched_tokens`` budget; long prompts are chunked (``enable_chunked_prefill``);
* running requests are served first, in admission order; when the KV cache has no room for one,
  the last admitted running request is preempted (its blocks freed; it is recomputed later) until
  there is room or the request itself was the victim;
* waiting requests are admitted first-come first-served, only in steps without preemption, while
  fewer than ``max_num_seqs`` run and budget is left; with prefix caching a new request starts
  from its longest cached prefix of full blocks (capped at prompt length - 1).

``engine_version: v0`` models the v0 scheduler (``vllm/core/scheduler.py``): a step either
prefills whole prompts of waiting requests (prefill first, no chunking by default) or decodes every
running request; when blocks run out the last running request is preempted by ``recompute`` or,
with ``preemption_mode: swap``, its blocks are copied to ``swap_space`` GiB of host memory over
the host link and copied back before it resumes. Prefix caching and chunked prefill are off by
default in v0 and on in v1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from llmsim.config import FrameworkConfig
from llmsim.errors import ConfigError
from llmsim.frameworks.continuous import ContinuousBatchingFramework, StepPlan
from llmsim.frameworks.cuda_graphs import EAGER, is_data_center_blackwell, vllm_v0_graphs, vllm_v1_graphs
from llmsim.frameworks.kv_cache import KVCacheManager
from llmsim.frameworks.kv_groups import KVGroupLayout, vllm_kv_groups
from llmsim.frameworks.versions import Release, ReleaseTable
from llmsim.hardware.perf_model import CudaGraphs
from llmsim.hardware.platform import MemoryPlan
from llmsim.hardware.spec import GIB
from llmsim.workload.request import Request

UsageContext = Literal["llm_class", "openai_api_server"]

# v1 defaults by vLLM usage context, as (>= 70 GiB GPU whose name lacks "a100", any other GPU):
# vllm-project/vllm vllm/engine/arg_utils.py, EngineArgs._set_default_args, read at commit 99d7eb5d
# (the 0.11 line); later releases return the same table from EngineArgs.get_batch_defaults. The LLM
# class (and `vllm bench throughput`, which builds one) passes UsageContext.LLM_CLASS, `vllm serve`
# OPENAI_API_SERVER. The v0 engine's defaults do not depend on it.
V1_DEFAULT_MAX_NUM_BATCHED_TOKENS: dict[str, tuple[int, int]] = {
    "llm_class": (16384, 8192),
    "openai_api_server": (8192, 2048),
}
V1_DEFAULT_MAX_NUM_SEQS: dict[str, tuple[int, int]] = {"llm_class": (1024, 256), "openai_api_server": (1024, 256)}


#: vLLM's version-dependent defaults, by the first release of each row (``framework.version``).
RELEASES = ReleaseTable(
    "vLLM",
    (
        # the v0 engine (vllm/core/scheduler.py) is the default before 0.8
        Release(
            "0.6.0",
            {"engine_version": "v0", "scheduler_reserve_full_isl": False, "async_scheduling": False},
            "vLLM 0.6-0.7: LLMEngine (v0) unless VLLM_USE_V1=1",
        ),
        # 0.8.0 release notes: "V1 engine is now enabled by default" (VLLM_USE_V1 defaults to 1)
        Release(
            "0.8.0",
            {"engine_version": "v1", "scheduler_reserve_full_isl": False, "async_scheduling": False},
            "vllm-project/vllm v0.8.0 release notes; vllm/envs.py VLLM_USE_V1",
        ),
        # async scheduling (AsyncScheduler: the next step is scheduled while the GPU runs the current one)
        # came in as --async-scheduling (opt-in) and became the default with vllm-project/vllm#27614 (v0.14.0)
        Release(
            "0.14.0",
            {"engine_version": "v1", "scheduler_reserve_full_isl": False, "async_scheduling": True},
            "vllm-project/vllm#27614 (async scheduling on by default), v0.14.0",
        ),
        # vllm/config/scheduler.py (0.33.0): scheduler_reserve_full_isl = True, passed by
        # v1/core/sched/scheduler.py to allocate_slots(full_sequence_must_fit=...). The option came in
        # as opt-in with vllm-project/vllm#37307 (2026-03); the first release with True as its default is
        # not pinned down, so releases before 0.33.0 keep first-chunk admission.
        Release(
            "0.33.0",
            {"engine_version": "v1", "scheduler_reserve_full_isl": True, "async_scheduling": True},
            "vllm/config/scheduler.py and vllm/v1/core/sched/scheduler.py at v0.33.0",
        ),
    ),
    newest="0.33.0",
)

#: v1 KV-cache mechanics by release (not knobs; they follow ``framework.version``):
#: ``null_block`` - block 0 is reserved as the placeholder of freed or skipped blocks, so N blocks
#: give N - 1 usable (``vllm/v1/core/block_pool.py``, ``BlockPool.__init__`` pops it off the free
#: queue; described as long-standing in vllm-project/vllm#40244, 2026-04);
#: ``cache_at_allocation`` - ``KVCacheManager.allocate_slots`` registers the blocks a step will fill
#: when it allocates them (``cache_blocks``), so later requests of the same step hit them (v1's
#: prefix caching since vllm-project/vllm#9972);
#: ``free_plain_blocks_first`` - ``BlockPool.free_blocks`` puts freed blocks without a hash at the
#: front of the free queue and hashed ones at its end (vllm-project/vllm#42656, 2026; before it,
#: every freed block joined the end).
V1_KV_MECHANICS = ReleaseTable(
    "vLLM v1 KV cache",
    (
        Release("0.6.0", {"null_block": True, "cache_at_allocation": True, "free_plain_blocks_first": False}),
        Release(
            "0.33.0",
            {"null_block": True, "cache_at_allocation": True, "free_plain_blocks_first": True},
            "vllm/v1/core/block_pool.py free_blocks at v0.33.0",
        ),
    ),
    newest="0.33.0",
)


class VLLMConfig(FrameworkConfig):
    """vLLM engine arguments (real names and defaults; ``shared/reference/conventions.md``)."""

    release_table: ClassVar[ReleaseTable] = RELEASES

    engine_version: Literal["v1", "v0"] | None = Field(
        default=None, description="null: the release's engine (v0 before 0.8.0, v1 from 0.8.0)."
    )
    usage_context: Literal["llm_class", "openai_api_server"] | None = Field(
        default=None,
        description="vLLM's UsageContext, which picks v1's default budgets: llm_class (the offline LLM class, "
        "`vllm bench throughput`) or openai_api_server (`vllm serve`). null: llm_class for workload=offline, "
        "else openai_api_server.",
    )
    max_num_seqs: PositiveInt | None = Field(
        default=None, description="null: v1's default (1024 on >=70 GiB non-A100 GPUs, else 256); v0: 256."
    )
    max_num_batched_tokens: PositiveInt | None = Field(
        default=None,
        description="null: v1's default for the usage context (llm_class: 16384 on >=70 GiB non-A100 GPUs, "
        "else 8192; openai_api_server: 8192, else 2048; max_model_len without chunked prefill); "
        "v0 without chunked prefill: max(max_model_len, 2048).",
    )
    block_size: Literal[1, 8, 16, 32, 64, 128] = 16
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    enable_chunked_prefill: bool | None = Field(default=None, description="null: on in v1, off in v0.")
    enable_prefix_caching: bool | None = Field(default=None, description="null: on in v1, off in v0.")
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    policy: Literal["fcfs"] = "fcfs"
    swap_space: float = Field(default=4.0, ge=0, description="GiB of host memory per GPU for swapped KV (v0).")
    enforce_eager: bool = Field(
        default=False, description="Capture no CUDA graphs: every step launches its kernels one by one."
    )
    data_parallel_size: PositiveInt = Field(
        default=1,
        description="Data-parallel engine ranks of tensor_parallel_size GPUs each, every rank its own requests, "
        "KV and scheduler limits; an MoE model's experts are shared by all of them.",
    )
    enable_expert_parallel: bool = Field(
        default=False, description="Shard the experts over all tp x dp GPUs (expert parallel) instead of by TP."
    )
    async_scheduling: bool | None = Field(
        default=None,
        description="v1: schedule step n+1 on the CPU while the GPU runs step n (AsyncScheduler), so a step "
        "takes the longer of its GPU and CPU work plus a short hand-over (v0 has no async scheduler). null: the "
        "release's default (True from 0.14.0, False before).",
    )
    scheduler_reserve_full_isl: bool | None = Field(
        default=None,
        description="v1: admit a waiting request only if its whole sequence (not just its first chunk) fits "
        "in the free KV blocks. null: the release's default (True from 0.33.0, False before).",
    )

    def parallel_layout(self) -> tuple[int, int, int]:
        """``tp x dp`` GPUs, ``dp`` attention ranks, and every GPU an expert rank with ``--enable-expert-parallel``."""
        gpus = self.tensor_parallel_size * self.data_parallel_size
        return gpus, self.data_parallel_size, gpus if self.enable_expert_parallel else 1

    @model_validator(mode="after")
    def _consistent(self) -> VLLMConfig:
        seqs, tokens = self.max_num_seqs, self.max_num_batched_tokens
        if seqs is not None and tokens is not None and tokens < seqs:
            raise ValueError(f"max_num_batched_tokens ({tokens}) must be >= max_num_seqs ({seqs})")
        if self.engine_version == "v1" and self.preemption_mode == "swap":
            raise ValueError("preemption_mode 'swap' exists only in engine_version v0 (v1 always recomputes)")
        return self

    @property
    def chunked_prefill(self) -> bool:
        """Resolved ``enable_chunked_prefill``."""
        return self.engine_version == "v1" if self.enable_chunked_prefill is None else self.enable_chunked_prefill

    @property
    def prefix_caching(self) -> bool:
        """Resolved ``enable_prefix_caching``."""
        return self.engine_version == "v1" if self.enable_prefix_caching is None else self.enable_prefix_caching


class VLLMFramework(ContinuousBatchingFramework):
    """vLLM v1 (default) or v0 scheduling; see the module docstring."""

    config_schema: ClassVar[type[FrameworkConfig]] = VLLMConfig
    type_name: ClassVar[str] = "VLLM"
    modelled_release: ClassVar[str] = "vLLM"
    releases: ClassVar[ReleaseTable | None] = RELEASES
    # Serial CPU time per step (scheduling, input preparation, sampling, output processing) that the
    # engine does not overlap with the GPU. v1: 2.5 ms, calibrated on the vLLM CI latency cases
    # (python -m llmsim.calibrate shared/reference/calibration_cases.csv). v0: Vidur's vLLM-style engine
    # on A100 (efficiency.md section 4: ~3-4 ms at batch 8, rising ~0.07 ms per sequence; v1 cut CPU
    # overheads for up to 1.7x throughput).
    OVERHEADS: ClassVar[dict[str, tuple[float, float]]] = {"v1": (2.5e-3, 1.0e-5), "v0": (4.0e-3, 6.0e-5)}
    # With async scheduling that CPU work runs beside the GPU's; what remains between steps is the
    # hand-over of the sampled tokens, about 0.16 ms (vllm-project/vllm#11133's step profiles: 150-170 us).
    sync_gap_s: ClassVar[float] = 1.6e-4
    config: VLLMConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._resolved_limits: tuple[int, int] | None = None
        super().__init__(*args, **kwargs)
        self.usage_context = self._usage_context()
        step, per_seq = self.OVERHEADS[self.config.engine_version]
        if self.config.step_overhead_s is None:
            self.step_overhead_s = step
        if self.config.per_seq_overhead_s is None:
            self.per_seq_overhead_s = per_seq
        self.max_num_seqs, self.max_num_batched_tokens = self._limits()
        self.step_token_budget = self.max_num_batched_tokens
        self.chunked_prefill = self.config.chunked_prefill
        if not self.chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ConfigError(
                f"{self.config_key}.max_num_batched_tokens",
                self.max_num_batched_tokens,
                f">= max_model_len ({self.max_model_len}) when enable_chunked_prefill is false",
            )
        self.perf_model.cuda_graphs = self.cuda_graph_capture()
        v1 = self.config.engine_version == "v1"
        mechanics = V1_KV_MECHANICS.row(self.config.version).defaults
        #: the v1 KV mechanics of the modelled release (:data:`V1_KV_MECHANICS`); v0's block manager has none
        self.kv_mechanics: dict[str, bool] = {k: bool(v and v1) for k, v in mechanics.items()}
        self.reserve_full_isl = v1 and bool(self.config.scheduler_reserve_full_isl)
        self.overlaps_cpu = v1 and bool(self.config.async_scheduling)
        usable_blocks = self.memory_plan.num_blocks - (1 if self.kv_mechanics["null_block"] else 0)
        self.kv = KVCacheManager(
            max(1, usable_blocks),
            self.config.block_size,
            self.config.prefix_caching,
            self.kv_groups,
            free_plain_blocks_first=self.kv_mechanics["free_plain_blocks_first"],
            cache_at_allocation=self.kv_mechanics["cache_at_allocation"],
        )
        self._window_caps = self._admission_caps()
        self.swapped: list[Request] = []
        self.swap_capacity_blocks = int(
            self.config.swap_space * GIB // (self.config.block_size * self.memory_plan.kv_bytes_per_token)
        )
        self.swapped_blocks = 0

    # ---- set-up --------------------------------------------------------------------------------
    def _usage_context(self) -> UsageContext:
        """``usage_context`` as set, else from the workload: an offline batch runs in the ``LLM`` class."""
        if self.config.usage_context is not None:
            return self.config.usage_context
        return "llm_class" if self.workload_kind == "offline" else "openai_api_server"

    def _limits(self) -> tuple[int, int]:
        """``max_num_seqs`` and ``max_num_batched_tokens`` with the engine version's defaults."""
        if self._resolved_limits is None:
            cfg = self.config
            max_model_len = cfg.max_model_len or self.model.max_position_embeddings
            if cfg.engine_version == "v1":
                device = self.hardware.devices[self.gpu_ids[0]]
                big = device.memory_capacity_bytes >= 70 * GIB and "A100" not in device.name.upper()
                context = self._usage_context()
                if cfg.max_num_batched_tokens is not None:
                    tokens = cfg.max_num_batched_tokens
                elif not cfg.chunked_prefill:  # vLLM: the whole context fits one step
                    tokens = max_model_len
                else:
                    tokens = V1_DEFAULT_MAX_NUM_BATCHED_TOKENS[context][0 if big else 1]
                # vLLM caps the default max_num_seqs at max_num_batched_tokens
                seqs = cfg.max_num_seqs or min(V1_DEFAULT_MAX_NUM_SEQS[context][0 if big else 1], tokens)
            else:
                seqs = cfg.max_num_seqs or 256
                default_tokens = 2048 if cfg.chunked_prefill else max(max_model_len, 2048)
                tokens = cfg.max_num_batched_tokens or default_tokens
            dp = self.config.data_parallel_size  # every DP rank schedules under its own limits
            self._resolved_limits = (seqs * dp, max(tokens, seqs) * dp)
        return self._resolved_limits

    @property
    def kv_groups(self) -> KVGroupLayout | None:
        """The v1 hybrid allocator's KV-cache groups for a sliding-window model (None: one full group).

        v1 (``vllm/v1/core/kv_cache_planning.py``) groups layers by attention type; v0's block manager
        gives every layer a full-length block table, as modelled before.
        """
        if self.config.engine_version != "v1" or self.model.num_window_layers == 0:
            return None
        return vllm_kv_groups(self.model)

    def cuda_graph_capture(self) -> CudaGraphs:
        """The CUDA graphs this engine captures (:mod:`~llmsim.frameworks.cuda_graphs`)."""
        if self.config.enforce_eager:
            return EAGER
        seqs, tokens = self._limits()
        if self.config.engine_version == "v0":
            return vllm_v0_graphs(seqs)
        return vllm_v1_graphs(seqs, tokens, is_data_center_blackwell(self.device.name))

    def _admission_caps(self) -> tuple[int | None, ...]:
        """Per KV-cache group, the most blocks one request ever holds (None: full attention, no cap).

        vLLM's ``max_admission_blocks_per_request``, which caps the whole-sequence admission check of
        windowed groups (``SingleTypeKVCacheManager.get_num_blocks_to_allocate(apply_admission_cap=True)``).
        """
        groups = self.kv_groups
        if groups is None:
            return ()
        in_flight, size = self._limits()[1], self.config.block_size
        return tuple(
            None if g.window is None else g.max_blocks_per_request(in_flight, self.max_model_len, size)
            for g in groups.groups
        )

    def plan_memory(self) -> MemoryPlan:
        """Weights, profiled activation workspace and KV blocks under ``gpu_memory_utilization``.

        A hybrid model's block spans one KV-cache group's layers (``kv_groups``), so more blocks fit.
        """
        seqs, tokens = self._limits()
        groups = self.kv_groups
        return self.plan_deployment_memory(
            self.config.gpu_memory_utilization,
            self.config.block_size,
            tokens,
            seqs,
            kv_layers_per_block=groups.group_size if groups is not None else None,
        )

    def _apply_block_override(self, plan: MemoryPlan) -> MemoryPlan:
        """The base override, then the longest request the blocks of every group can hold."""
        plan = super()._apply_block_override(plan)
        groups = self.kv_groups
        if groups is None:
            return plan
        # one batch in flight (synchronous scheduling): VllmConfig.max_in_flight_tokens = max_num_batched_tokens
        longest = groups.max_tokens_for(plan.num_blocks, plan.block_size, self._limits()[1], self.max_model_len)
        return dataclasses.replace(plan, max_request_tokens=longest)

    # ---- policy --------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """One step of the configured engine version."""
        if self.config.engine_version == "v0" and not self.chunked_prefill:
            return self._schedule_v0()
        return self._schedule_v1()

    def _schedule_v1(self) -> StepPlan:
        plan = StepPlan()
        budget = self.serve_running(plan, self.max_num_batched_tokens, self.chunked_prefill)
        if plan.evicted == 0:
            if self.swapped:  # v0 with chunked prefill and swap: swapped requests come back before new ones
                before = len(plan.scheduled)
                self._swap_in(plan)
                budget -= len(plan.scheduled) - before
            self._admit_waiting(plan, budget)
        return plan

    def _admit_waiting(self, plan: StepPlan, budget: int) -> None:
        while self.waiting and budget > 0 and self.num_running < self.max_num_seqs:
            request = self.waiting[0]
            computed = self.kv.get_computed_blocks(request)
            cached_tokens = len(computed) * self.kv.block_size
            remaining = request.num_tokens - cached_tokens
            if not self.chunked_prefill and remaining > budget:
                break
            num_new = min(remaining, budget)
            if self.reserve_full_isl and self._whole_sequence_does_not_fit(request, computed):
                break
            if not self.kv.allocate_slots(request, num_new, computed):
                break
            self.waiting.popleft()
            self.start_running(request, cached_tokens)
            plan.scheduled.append((request, num_new))
            budget -= num_new

    def _whole_sequence_does_not_fit(self, request: Request, computed: list[int]) -> bool:
        """vLLM 0.33's admission gate (``scheduler_reserve_full_isl``): the request's whole sequence,
        capped at ``max_model_len``, must fit in the free blocks, not just its first chunk."""
        full = min(request.num_tokens, self.max_model_len)
        return self.kv.blocks_to_admit(request, full, computed, self._window_caps) > self.kv.pool.num_free

    def _schedule_v0(self) -> StepPlan:
        """Prefill first: whole prompts of waiting requests if any fit, else a decode of all running."""
        plan = StepPlan()
        if not self.swapped:
            self._admit_waiting(plan, self.max_num_batched_tokens)
            if plan.scheduled:
                return plan
        # every running request has its whole prompt computed: each decodes one token, whatever the budget
        self.serve_running(plan, len(self.running))
        if plan.evicted == 0:
            self._swap_in(plan)
        return plan

    def holds_parked_requests(self) -> bool:
        """Swapped-out requests come back when the scheduler swaps them in."""
        return bool(self.swapped)

    def supports_lazy_decode(self) -> bool:
        """The v1 scheduler (also v0 with chunked prefill) serves every running request each step."""
        if self.kv_groups is not None:
            return False  # windowed groups free blocks every step: each request is allocated explicitly
        return self.config.engine_version == "v1" or self.chunked_prefill

    def make_room(self, victim: Request, plan: StepPlan) -> None:
        """vLLM preempts the victim: recompute, or swap in v0 with ``preemption_mode: swap``."""
        self._preempt(victim, plan)

    def _preempt(self, request: Request, plan: StepPlan) -> None:
        """Recompute (free the blocks) or, in v0 with swap, copy them to host memory."""
        plan.evicted += 1
        blocks = len(request.blocks)
        if self.config.preemption_mode == "swap" and self.swapped_blocks + blocks <= self.swap_capacity_blocks:
            plan.extra_time_s += self._transfer_time(blocks)
            self.kv.free(request)
            self.swapped_blocks += blocks
            request.preemptions += 1
            request.status = "swapped"
            self.metrics.count_event(self.framework_id, "swapped_out")
            self.num_preemptions += 1
            self.swapped.append(request)
            return
        self.evict(request)

    def _swap_in(self, plan: StepPlan) -> None:
        """Bring swapped requests back (oldest first) when their blocks fit; they decode this step."""
        while self.swapped and self.num_running < self.max_num_seqs:
            request = self.swapped[0]
            blocks = self.kv.blocks_needed(request.num_tokens)
            request.num_computed_tokens = 0  # its blocks are back on the host: allocate them afresh
            if not self.kv.allocate_slots(request, request.num_tokens):
                request.num_computed_tokens = request.num_tokens - 1
                break
            self.swapped.pop(0)
            self.swapped_blocks -= blocks
            plan.extra_time_s += self._transfer_time(blocks)
            request.num_computed_tokens = request.num_tokens - 1
            request.status = "running"
            self.mark_admitted(request)
            self.running.append(request)
            plan.scheduled.append((request, 1))

    def _transfer_time(self, blocks: int) -> float:
        """Seconds to copy ``blocks`` KV blocks over the host link (PCIe)."""
        nbytes = blocks * self.config.block_size * self.memory_plan.kv_bytes_per_token
        return nbytes / (self.device.host_link_gbps * 1e9)

    def in_flight(self) -> list[Request]:
        """Running, waiting and swapped-out requests."""
        self.release_lazy()
        return [*self.running, *self.waiting, *self.swapped]

    def describe(self) -> dict[str, Any]:
        """Deployment facts plus the resolved vLLM limits."""
        return {
            **super().describe(),
            "modelled_release": f"{self.release_name}, {self.config.engine_version} engine, "
            + ("LLM class (offline)" if self.usage_context == "llm_class" else "OpenAI API server"),
            "engine_version": self.config.engine_version,
            "usage_context": self.usage_context,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "enable_chunked_prefill": self.chunked_prefill,
            "enable_prefix_caching": self.config.prefix_caching,
            "scheduler_reserve_full_isl": self.reserve_full_isl,
            "async_scheduling": self.overlaps_cpu,
            "cuda_graph_max_batch": max(self.perf_model.cuda_graphs.decode_sizes or (0,)),
            "kv_mechanics": dict(self.kv_mechanics),
        }
