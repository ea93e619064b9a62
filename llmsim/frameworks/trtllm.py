"""TRTLLMFramework: TensorRT-LLM's in-flight batching (batch manager / PyTorch executor, ~v0.13-v1.0).

Each iteration the *capacity scheduler* decides which requests may hold KV cache, then the
*micro-batch scheduler* fills the step under ``max_batch_size`` and the ``max_num_tokens`` budget:
generation requests take one token each, context (prefill) requests their whole remaining prompt,
or a chunk of it with ``enable_chunked_prefill``. Capacity policies:

* ``GUARANTEED_NO_EVICT`` (default): a waiting request starts only if the KV blocks of its whole
  sequence (prompt + max new tokens) fit beside what running requests may still grow to; never
  evicts.
* ``MAX_UTILIZATION``: start requests whenever their prompt fits now; when a running request needs
  a block and none is free, pause the most recently started one (its blocks freed; it resumes
  later by recomputing, helped by block reuse).
* ``STATIC_BATCH``: when nothing runs, take up to ``max_batch_size`` waiting requests whose whole
  sequences fit, prefill them together and decode in lockstep; nothing new starts until every
  member has finished.

KV blocks hold ``tokens_per_block`` (32) tokens; ``enable_block_reuse`` shares full blocks between
requests with a common prefix; the KV cache takes ``free_gpu_memory_fraction`` of the memory left
after weights and activations. The overlap scheduler (on by default) runs the CPU work of step n
while the GPU executes step n+1, so only a small serial overhead remains per step.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from llmsim.config import FrameworkConfig
from llmsim.errors import ConfigError
from llmsim.frameworks.continuous import ContinuousBatchingFramework, StepPlan
from llmsim.frameworks.cuda_graphs import trtllm_graphs
from llmsim.frameworks.kv_cache import KVCacheManager
from llmsim.frameworks.trtllm_bench import (
    BenchSettings,
    DatasetLengths,
    calc_engine_setting,
    fit_longest_prompt,
    workload_lengths,
)
from llmsim.frameworks.versions import Release, ReleaseTable
from llmsim.hardware.perf_model import DEFAULT_CUDA_GRAPHS, CudaGraphs
from llmsim.hardware.platform import MemoryPlan
from llmsim.workload.request import Request

#: the LLM API's limits when nothing sets them (tensorrt_llm BuildConfig: max_batch_size 2048, max_num_tokens 8192)
LLM_API_MAX_BATCH_SIZE = 2048
LLM_API_MAX_NUM_TOKENS = 8192

#: TensorRT-LLM's version-dependent defaults, by the first release of each row (``framework.version``).
RELEASES = ReleaseTable(
    "TensorRT-LLM",
    (
        Release("0.9.0", {"backend": "tensorrt"}, "NVIDIA/TensorRT-LLM: TensorRT engines (trtllm-build)"),
        # docs torch.html: 0.17-0.21 import the PyTorch backend's LLM from tensorrt_llm._torch; from 1.0.0rc2
        # `from tensorrt_llm import LLM` is the PyTorch backend (TensorRT engines move to _tensorrt_engine)
        Release("1.0.0", {"backend": "pytorch"}, "nvidia.github.io/TensorRT-LLM/1.0.0rc2/torch.html"),
    ),
    newest="1.2.0",
)
#: Grouped expert-GEMM efficiency relative to a dense GEMM, by release and GPU family (None: the
#: hardware file's ``moe_gemm_relative``, itself fitted on TensorRT-LLM 0.9 Mixtral FP8). TensorRT-LLM's
#: MoE kernels changed a lot between 0.9 and 0.17 (the 0.15 release notes' fused MoE / CUTLASS grouped
#: GEMM work; the issue's "Mixtral throughput more than doubled at the same batch"), and the PyTorch
#: backend of 1.x brought its own (CUTLASS / TRT-LLM-Gen fused MoE). Values fitted with
#: ``python -m llmsim.calibrate --factors moe_kernels`` on the shipped cases, bounds 0.1-1.0.
MOE_KERNELS = ReleaseTable(
    "TensorRT-LLM MoE kernels",
    (
        Release("0.9.0", {"hopper": None, "ampere": None, "ada": None, "blackwell": None}),
        # fitted on the 4 Mixtral 8x7B/8x22B Hopper cases of 0.15-0.17
        Release("0.15.0", {"hopper": 0.814, "ampere": None, "ada": None, "blackwell": None}),
        # fitted on the 8 Hopper MoE cases of 1.0-1.2 (Qwen3-235B, Llama-4, DeepSeek-R1, gpt-oss), with the
        # PyTorch backend's overlap scheduler modelled
        Release("1.0.0", {"hopper": 0.406, "ampere": None, "ada": None, "blackwell": None}),
    ),
    newest="1.2.0",
)
#: the PyTorch backend's default CUDA-graph maximum (CudaGraphConfig: max_batch_size 0 -> 128)
CUDA_GRAPH_DEFAULT_MAX_BATCH_SIZE = 128


class TRTLLMConfig(FrameworkConfig):
    """TensorRT-LLM LLM-API / trtllm-bench knobs (real names and defaults; conventions.md)."""

    release_table: ClassVar[ReleaseTable] = RELEASES

    enable_attention_dp: bool = Field(
        default=False,
        description="Attention data-parallel: every one of the tp GPUs runs attention for its own requests and KV "
        "(the MoE stays shared).",
    )
    moe_expert_parallel_size: PositiveInt | None = Field(
        default=None,
        description="Expert-parallel ranks of the MoE (a divisor of tp); null: 1 (experts tensor-parallel).",
    )

    def parallel_layout(self) -> tuple[int, int, int]:
        """``tp_size`` GPUs; attention DP over all of them with ``enable_attention_dp``; ``moe_expert_parallel_size``."""
        tp = self.tensor_parallel_size
        return tp, tp if self.enable_attention_dp else 1, self.moe_expert_parallel_size or 1

    def check_parallel_sizes(self, key: str) -> None:
        """``moe_expert_parallel_size`` must divide the TP GPUs."""
        self.check_divides_gpus(key, "moe_expert_parallel_size", self.moe_expert_parallel_size)

    settings_from: Literal["llm_api", "trtllm-bench"] | None = Field(
        default=None,
        description="Where unset max_batch_size/max_num_tokens come from: llm_api (the LLM API's 2048 / 8192) "
        "or trtllm-bench (its heuristic from the dataset's lengths and the KV memory, and without chunked "
        "prefill room for the longest prompt). null: trtllm-bench for workload=offline, else llm_api.",
    )
    max_batch_size: PositiveInt | None = Field(
        default=None, description="Requests in flight at most (null: settings_from)."
    )
    max_num_tokens: PositiveInt | None = Field(
        default=None, description="Tokens computed per iteration at most (null: settings_from)."
    )
    backend: Literal["pytorch", "tensorrt"] | None = Field(
        default=None, description="null: the release's (TensorRT engines before 1.0, the PyTorch backend from 1.0)."
    )
    disable_cuda_graph: bool = Field(default=False, description="PyTorch backend: cuda_graph_config None.")
    cuda_graph_max_batch_size: PositiveInt | None = Field(
        default=None, description="cuda_graph_config.max_batch_size; null: 128, trtllm-bench: its max_batch_size."
    )
    cuda_graph_enable_padding: bool | None = Field(
        default=None, description="cuda_graph_config.enable_padding; null: false, trtllm-bench: true."
    )
    free_gpu_memory_fraction: float = Field(default=0.9, gt=0, le=1, description="KV share of free memory.")
    tokens_per_block: Literal[8, 16, 32, 64, 128] = 32
    capacity_scheduler_policy: Literal["GUARANTEED_NO_EVICT", "MAX_UTILIZATION", "STATIC_BATCH"] = "GUARANTEED_NO_EVICT"
    enable_chunked_prefill: bool = False
    enable_block_reuse: bool = True
    disable_overlap_scheduler: bool = Field(default=False, description="True: CPU work is serial with the GPU.")


class TRTLLMFramework(ContinuousBatchingFramework):
    """TensorRT-LLM in-flight batching; see the module docstring."""

    config_schema: ClassVar[type[FrameworkConfig]] = TRTLLMConfig
    type_name: ClassVar[str] = "TRTLLM"
    modelled_release: ClassVar[str] = "TensorRT-LLM"
    releases: ClassVar[ReleaseTable | None] = RELEASES
    moe_kernels: ClassVar[ReleaseTable | None] = MOE_KERNELS
    # Serial CPU time per iteration (keyed by disable_overlap_scheduler): 1.38 ms calibrated on the
    # TensorRT-LLM cases of calibration_cases.csv (python -m llmsim.calibrate --factors trtllm.step, refitted
    # with the PyTorch backend's overlap modelled; 1.1 ms before); without the overlap
    # scheduler (docs/source/features/overlap-scheduler.md: CPU work of step n hides behind step n+1)
    # the CPU work is serial, about 1 ms more (efficiency.md section 4 gives no TensorRT-LLM figure).
    OVERHEADS: ClassVar[dict[bool, tuple[float, float]]] = {True: (2.0e-3, 5.0e-6), False: (1.38e-3, 1.0e-6)}
    # between overlapped steps the GPU waits for the sampled tokens' hand-over; no TensorRT-LLM figure is
    # published, so vLLM's (vllm-project/vllm#11133: 150-170 us) is used
    sync_gap_s: ClassVar[float] = 1.6e-4
    config: TRTLLMConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._resolved_limits: tuple[int, int] | None = None
        self.bench_settings: BenchSettings | None = None
        super().__init__(*args, **kwargs)
        self.max_batch_size, self.max_num_tokens = self._limits()
        self.perf_model.cuda_graphs = self.cuda_graph_capture()
        # the PyTorch backend's overlap scheduler (docs/source/features/overlap-scheduler.md) runs step
        # n+1's CPU work while the GPU runs step n: the step takes the longer of the two and the
        # serial CPU work (OVERHEADS[True]) is what runs beside the GPU. TensorRT engines (before
        # 1.0) keep the fitted serial remainder.
        pytorch = self.config.backend == "pytorch"
        self.overlaps_cpu = pytorch and not self.config.disable_overlap_scheduler
        step, per_seq = self.OVERHEADS[self.config.disable_overlap_scheduler or self.overlaps_cpu]
        if self.config.step_overhead_s is None:
            self.step_overhead_s = step
        if self.config.per_seq_overhead_s is None:
            self.per_seq_overhead_s = per_seq
        cfg = self.config
        self.kv = KVCacheManager(self.memory_plan.num_blocks, cfg.tokens_per_block, cfg.enable_block_reuse)
        self.policy = cfg.capacity_scheduler_policy
        self._max_blocks_running = 0  # blocks the running requests' whole sequences take
        self.step_token_budget = self.max_num_tokens
        if self.policy == "STATIC_BATCH" and cfg.enable_chunked_prefill:
            raise ConfigError(
                f"{self.config_key}.enable_chunked_prefill", True, "false with capacity_scheduler_policy STATIC_BATCH"
            )

    # ---- set-up --------------------------------------------------------------------------------
    @property
    def settings_from(self) -> str:
        """``settings_from`` as set, else trtllm-bench for an offline batch (``trtllm-bench throughput``)."""
        if self.config.settings_from is not None:
            return self.config.settings_from
        return "trtllm-bench" if self.workload_kind == "offline" else "llm_api"

    def _limits(self) -> tuple[int, int]:
        """``max_batch_size`` and ``max_num_tokens``: as set, else from :attr:`settings_from`."""
        if self._resolved_limits is not None:
            return self._resolved_limits
        cfg = self.config
        batch, tokens = cfg.max_batch_size, cfg.max_num_tokens
        lengths = workload_lengths(self.workload) if self.settings_from == "trtllm-bench" and self.workload else None
        if lengths is not None and (batch is None or tokens is None):
            settings = self._bench_settings(lengths)
            self.bench_settings = settings
            batch = batch or settings.max_batch_size
            if tokens is None:
                tokens = settings.max_num_tokens
                if not cfg.enable_chunked_prefill:  # get_settings: the longest prompt must fit one iteration
                    tokens = fit_longest_prompt(tokens, batch, lengths.max_isl)
        # the LLM API's BuildConfig defaults (tensorrt_llm/builder.py): max_batch_size 2048, max_num_tokens 8192;
        # with attention DP they bound each rank, which schedules its own requests
        dp = self.attention_dp
        self._resolved_limits = ((batch or LLM_API_MAX_BATCH_SIZE) * dp, (tokens or LLM_API_MAX_NUM_TOKENS) * dp)
        return self._resolved_limits

    def cuda_graph_capture(self) -> CudaGraphs:
        """The PyTorch backend's CUDA graphs (:func:`~llmsim.frameworks.cuda_graphs.trtllm_graphs`); a
        TensorRT engine runs its own kernels (decode unpadded, context steps with their launches)."""
        cfg = self.config
        if cfg.backend != "pytorch":
            return DEFAULT_CUDA_GRAPHS
        if cfg.disable_cuda_graph:
            return CudaGraphs(decode_sizes=())
        bench = self.settings_from == "trtllm-bench"
        max_bs = cfg.cuda_graph_max_batch_size or (self.max_batch_size if bench else CUDA_GRAPH_DEFAULT_MAX_BATCH_SIZE)
        padding = cfg.cuda_graph_enable_padding if cfg.cuda_graph_enable_padding is not None else bench
        return trtllm_graphs(max_bs, padding)

    def _bench_settings(self, lengths: DatasetLengths) -> BenchSettings:
        """trtllm-bench's heuristic for this model, GPU, dtypes and TP size (:mod:`trtllm_bench`)."""
        model = self.model
        try:
            return calc_engine_setting(
                gpu_memory_bytes=self.device.memory_capacity_bytes,
                param_count=model.total_params,
                weight_dtype=self.dtype,
                kv_dtype=self.kv_dtype,
                num_attention_layers=model.num_hidden_layers,
                num_kv_heads=model.num_key_value_heads,
                # bench/build/dataclasses.py ModelConfig: config.json's head_dim, else hidden_size / heads
                # (DeepSeek's MLA config names no head_dim: 7168 / 128 = 56, not its 192-wide query heads)
                head_size=model.head_dim or model.hidden_size // model.num_attention_heads,
                tp=self.config.tensor_parallel_size,
                pp=1,
                target_input_len=lengths.avg_isl,
                target_output_len=lengths.avg_osl,
                kv_cache_gpu_mem_fraction=self.config.free_gpu_memory_fraction,
            )
        except ValueError as exc:
            raise ConfigError(
                f"{self.config_key}.settings_from", "trtllm-bench", f"a deployment it can size ({exc})"
            ) from None

    def plan_memory(self) -> MemoryPlan:
        """Weights and activations first; ``free_gpu_memory_fraction`` of what is left becomes KV blocks."""
        cfg = self.config
        batch, tokens = self._limits()
        return self.plan_deployment_memory(
            cfg.free_gpu_memory_fraction,
            cfg.tokens_per_block,
            tokens,
            min(batch, 256),
            fraction_of_free=True,
        )

    def admission_error(self, request: Request) -> str | None:
        """Too long for the model or the cache, or (without chunking) for ``max_num_tokens``."""
        error = super().admission_error(request)
        if error is None and not self.config.enable_chunked_prefill and request.prompt_len > self.max_num_tokens:
            return (
                f"prompt ({request.prompt_len} tokens) exceeds max_num_tokens {self.max_num_tokens} "
                "and enable_chunked_prefill is false"
            )
        return error

    # ---- policy --------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """Capacity scheduling then micro-batching, per ``capacity_scheduler_policy``."""
        if self.policy == "STATIC_BATCH":
            return self._schedule_static()
        plan = StepPlan()
        budget = self.serve_running(plan, self.max_num_tokens)
        if plan.evicted == 0:
            self._admit(plan, budget)
        return plan

    def make_room(self, victim: Request, plan: StepPlan) -> None:
        """MAX_UTILIZATION pauses the most recently started request (GUARANTEED_NO_EVICT never runs out)."""
        self.evict(victim, "paused")
        plan.evicted += 1

    def supports_lazy_decode(self) -> bool:
        """In-flight batching serves every running request each step (not STATIC_BATCH's lockstep)."""
        return self.policy != "STATIC_BATCH"

    def start_running(self, request: Request, cached_tokens: int) -> None:
        """Admit a waiting request (and count the blocks its whole sequence takes)."""
        super().start_running(request, cached_tokens)
        self._max_blocks_running += self.kv.blocks_needed(request.max_tokens)

    def evict(self, request: Request, kind: str = "preempted") -> None:
        """Pause a running request (its whole-sequence blocks no longer count)."""
        self._max_blocks_running -= self.kv.blocks_needed(request.max_tokens)
        super().evict(request, kind)

    def finish(self, request: Request, now: float) -> None:
        """A running request finished (its whole-sequence blocks no longer count)."""
        self._max_blocks_running -= self.kv.blocks_needed(request.max_tokens)
        super().finish(request, now)

    def _reserved_blocks(self) -> int:
        """Blocks running requests may still need to reach their full length (every block holder runs)."""
        return self._max_blocks_running - self.kv.held

    def _contributed_blocks(self, plan: StepPlan) -> set[int]:
        """Content of the full blocks this step's prefill chunks compute (with block reuse)."""
        size = self.kv.block_size
        contributed: set[int] = set()
        for request, num_new in plan.scheduled:
            if num_new > 1 or request.num_output_tokens == 0:
                computed = request.num_computed_tokens
                contributed.update(self.kv.content_hashes(request, computed // size, (computed + num_new) // size))
        return contributed

    def _admit(self, plan: StepPlan, budget: int) -> None:
        """Admit waiting requests in order while the policy, the budget and the cache allow.

        With block reuse, a request whose first block to compute is being computed by another request
        of this step waits a step to reuse it instead (the capacity scheduler's ``beneficialToSkip``
        in ``batch_manager/capacityScheduler.cpp``); requests behind it may go first.
        """
        guaranteed = self.policy == "GUARANTEED_NO_EVICT"
        chunked = self.config.enable_chunked_prefill
        reserved = self._reserved_blocks() if guaranteed else 0
        reuse = self.config.enable_block_reuse
        contributed = self._contributed_blocks(plan) if reuse else set()
        skipped: list[Request] = []
        size = self.kv.block_size
        while self.waiting and budget > 0 and self.num_running < self.max_batch_size:
            request = self.waiting[0]
            computed = self.kv.get_computed_blocks(request)
            if contributed and set(self.kv.content_hashes(request, len(computed), len(computed) + 1)) & contributed:
                skipped.append(self.waiting.popleft())
                continue
            cached_tokens = len(computed) * self.kv.block_size
            remaining = request.num_tokens - cached_tokens
            if not chunked and remaining > budget:
                break
            num_new = min(remaining, budget)
            if guaranteed:
                whole = self.kv.blocks_needed(request.max_tokens) - len(computed)
                if whole + reserved > self.kv.pool.num_free:
                    break
            if not self.kv.allocate_slots(request, num_new, computed):
                break
            if guaranteed:
                reserved += self.kv.blocks_needed(request.max_tokens) - len(request.blocks)
            self.waiting.popleft()
            self.start_running(request, cached_tokens)
            plan.scheduled.append((request, num_new))
            budget -= num_new
            if reuse:
                contributed.update(self.kv.content_hashes(request, len(computed), (cached_tokens + num_new) // size))
        self.waiting.extendleft(reversed(skipped))

    def _schedule_static(self) -> StepPlan:
        """Lockstep: decode the current batch; form a new one (whole prompts) only when it is empty."""
        plan = StepPlan()
        if self.running:
            for request in self.running:
                self.kv.allocate_slots(request, 1)  # room for the whole sequence was taken at start
                plan.scheduled.append((request, 1))
            return plan
        budget = self.max_num_tokens
        while self.waiting and self.num_running < self.max_batch_size:
            request = self.waiting[0]
            if request.num_tokens > budget or not self.kv.allocate_slots(request, request.max_tokens):
                break
            self.waiting.popleft()
            self.start_running(request, 0)
            plan.scheduled.append((request, request.num_tokens))
            budget -= request.num_tokens
        return plan

    def describe(self) -> dict[str, Any]:
        """Deployment facts plus the TensorRT-LLM policy."""
        return {
            **super().describe(),
            "capacity_scheduler_policy": self.policy,
            "settings_from": self.settings_from,
            "backend": self.config.backend,
            "cuda_graph_max_batch": max(self.perf_model.cuda_graphs.decode_sizes or (0,)),
            "max_batch_size": self.max_batch_size,
            "max_num_tokens": self.max_num_tokens,
        }
