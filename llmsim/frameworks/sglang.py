"""SGLangFramework: SGLang's scheduler (``managers/scheduler.py``, ``schedule_policy.py``, ~v0.4) over
a radix-tree prefix cache.

* Prefill first: whenever waiting requests can be admitted, the step is a prefill ("extend")
  batch; otherwise every running request decodes one token.
* Admission (``PrefillAdder``): in policy order, a request joins the prefill batch while fewer than
  ``max_running_requests`` run, the batch stays under ``max_prefill_tokens``, and the cache can hold
  its uncached prompt plus ``new_token_ratio`` x its remaining output on top of what running
  requests are expected to still need (their remaining output x ``new_token_ratio``). A prompt
  longer than ``chunked_prefill_size`` is split into chunks; the chunked request continues first in
  the following prefill batches.
* ``new_token_ratio`` starts at 0.7 and decays each decode step towards 0.098; when a decode step
  finds too little room (less than 20 more tokens per running request), requests are *retracted*
  — fewest generated tokens first, longest prompt breaking ties — their memory freed and the
  ratio raised to what the remaining requests have actually been generating.
* ``schedule_policy``: ``fcfs``; cache-aware ``lpm`` (longest cached prefix first) and
  ``dfs-weight`` (requests under the most shared cache node first; approximated by grouping
  requests on their deepest cached node); cache-agnostic ``lof`` (longest output first) and
  ``random``. Cache-aware policies fall back to fcfs when more than 128 requests wait or the radix
  cache is disabled.
* The KV pool takes ``mem_fraction_static`` of GPU memory minus the weights; the overlap scheduler
  hides most CPU work behind the GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from llmsim.config import FrameworkConfig
from llmsim.errors import ConfigError
from llmsim.frameworks.continuous import ContinuousBatchingFramework, StepPlan
from llmsim.frameworks.kv_groups import sglang_swa_pool_tokens, sglang_uses_swa_pool
from llmsim.frameworks.radix_cache import RadixKVManager
from llmsim.frameworks.versions import Release, ReleaseTable
from llmsim.hardware.perf_model import CudaGraphs
from llmsim.hardware.platform import MemoryPlan
from llmsim.rng import stream_rng
from llmsim.workload.request import Request

# sglang 0.5.6 managers/scheduler.py (init from SGLANG_INIT_NEW_TOKEN_RATIO etc., environ.py):
# init = min(0.7 x schedule_conservativeness, 1), min = init x 0.14, decay = (init - min) / 600 steps
INIT_NEW_TOKEN_RATIO = 0.7
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14
MIN_NEW_TOKEN_RATIO = INIT_NEW_TOKEN_RATIO * MIN_NEW_TOKEN_RATIO_FACTOR
NEW_TOKEN_RATIO_DECAY_STEPS = 600
RETRACT_DECODE_STEPS = 20  # retract until every running request has room for this many tokens
CLIP_MAX_NEW_TOKENS = 4096  # SGLang clips a request's expected output at this when estimating memory
LONG_QUEUE = 128  # cache-aware policies fall back to fcfs above this many waiting requests


#: SGLang's version-dependent defaults, by the first release of each row (``framework.version``).
#: The GPU-dependent defaults below were read in 0.5.6; older releases are modelled with them.
RELEASES = ReleaseTable(
    "SGLang",
    (Release("0.4.0", {}, "sgl-project/sglang python/sglang/srt/server_args.py"),),
    newest="0.5.6",
)

MIB = 1024**2

#: ``ServerArgs._handle_gpu_memory_settings`` (sglang 0.5.6 server_args.py): by GPU memory (MiB, as
#: nvidia-smi reports memory.total), the default ``chunked_prefill_size`` and ``cuda_graph_max_bs``
#: for tp < 4 and tp >= 4. Rows: upper bound (exclusive) of the memory, then the three values.
GPU_MEMORY_DEFAULTS: tuple[tuple[float, int, int, int], ...] = (
    (20 * 1024, 2048, 8, 8),  # T4, RTX 4080
    (35 * 1024, 2048, 24, 80),  # A10, L4, RTX 4090
    (60 * 1024, 4096, 32, 160),  # A100-40G, L40S
    (90 * 1024, 8192, 256, 512),  # H100, A100-80G
    (160 * 1024, 8192, 256, 512),  # H20, H200
    (float("inf"), 16384, 512, 512),  # B200, MI300X
)


def gpu_memory_defaults(memory_bytes: float, tp: int) -> tuple[int, int]:
    """SGLang's default (``chunked_prefill_size``, ``cuda_graph_max_bs``) for a GPU and TP size."""
    mib = memory_bytes / MIB
    for bound, chunk, small_tp, large_tp in GPU_MEMORY_DEFAULTS:
        if mib < bound:
            return chunk, (large_tp if tp >= 4 else small_tp)
    raise AssertionError("unreachable: the last row has no bound")  # pragma: no cover


def default_mem_fraction_static(memory_bytes: float, chunk: int, cuda_graph_max_bs: int, tp: int) -> float:
    """sglang 0.5.6 ``server_args.py``: GPU memory less a reserve (MiB) for activations, graphs and
    communication, as a fraction rounded to three places (no DP attention, speculative decoding or
    piecewise graphs).

    reserve = 512 + 1.5 x max(chunked_prefill_size, 2048) + 2 x cuda_graph_max_bs + 1024 x tp / 8,
    at least 10240 on GPUs of more than 60 GB.
    """
    mib = memory_bytes / MIB
    reserved = 512 + max(chunk, 2048) * 1.5 + cuda_graph_max_bs * 2 + tp / 8 * 1024
    if mib > 60 * 1024:
        reserved = max(reserved, 10240)
    return round((mib - reserved) / mib, 3)


def sglang_capture_sizes(max_bs: int) -> tuple[int, ...]:
    """sglang 0.5.6 ``_generate_cuda_graph_batch_sizes``: 1, 2, 4, 8, 12, then 16..256 by 8, 272..496
    by 16 and 512.. by 32, up to ``cuda_graph_max_bs``."""
    sizes = [1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, max_bs + 1, 32)]
    return tuple(n for n in sizes if n <= max_bs)


class SGLangConfig(FrameworkConfig):
    """SGLang server arguments (real names; defaults per conventions.md)."""

    release_table: ClassVar[ReleaseTable] = RELEASES

    def parallel_layout(self) -> tuple[int, int, int]:
        """``--tp`` GPUs; ``--dp`` attention ranks with ``--enable-dp-attention``; ``--ep-size`` expert ranks."""
        return self.tensor_parallel_size, self.dp_size if self.enable_dp_attention else 1, self.ep_size

    def check_parallel_sizes(self, key: str) -> None:
        """``dp_size`` (only with ``enable_dp_attention``) and ``ep_size`` must divide the TP GPUs."""
        if self.dp_size > 1 and not self.enable_dp_attention:
            raise ConfigError(
                f"{key}.dp_size",
                self.dp_size,
                "1 unless enable_dp_attention (independent replicas are not modelled yet)",
            )
        self.check_divides_gpus(key, "dp_size", self.dp_size)
        self.check_divides_gpus(key, "ep_size", self.ep_size)

    schedule_policy: Literal["fcfs", "lpm", "dfs-weight", "lof", "random"] = "fcfs"
    dp_size: PositiveInt = Field(
        default=1, description="Data-parallel ranks; with enable_dp_attention they share one MoE over the tp GPUs."
    )
    enable_dp_attention: bool = Field(
        default=False,
        description="Attention data-parallel over dp_size ranks of tp / dp_size GPUs (each rank its own requests "
        "and KV); the MoE stays tensor- or expert-parallel over all tp GPUs.",
    )
    ep_size: PositiveInt = Field(default=1, description="Expert-parallel ranks of the MoE (a divisor of tp).")
    chunked_prefill_size: int | None = Field(
        default=None,
        description="null: by GPU memory (server_args.py): 2048 below 35 GiB, 4096 below 60, 8192 below 160, "
        "else 16384; -1 disables.",
    )
    max_prefill_tokens: PositiveInt = 16384
    max_running_requests: PositiveInt | None = Field(default=None, description="null: derived from the KV pool size.")
    mem_fraction_static: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Weights + KV pool share of GPU memory. null: GPU memory less SGLang's reserve for "
        "activations and CUDA graphs (0.835 on one H100, 0.907 on one H200).",
    )
    schedule_conservativeness: float = Field(
        default=1.0, gt=0, description="Scales the initial new_token_ratio (0.7 x this, at most 1) and its floor."
    )
    cuda_graph_max_bs: PositiveInt | None = Field(
        default=None, description="Largest decode batch replayed from a CUDA graph. null: by GPU memory and TP size."
    )
    disable_cuda_graph: bool = False
    disable_cuda_graph_padding: bool = Field(
        default=False, description="Capture every batch size up to cuda_graph_max_bs instead of padding."
    )
    disable_radix_cache: bool = False
    disable_overlap_schedule: bool = False
    # sgl-project/sglang python/sglang/srt/server_args.py: swa_full_tokens_ratio 0.8, disable_hybrid_swa_memory False
    swa_full_tokens_ratio: float = Field(
        default=0.8, gt=0, description="Hybrid-SWA models (gpt-oss): SWA pool tokens per full-pool token."
    )
    disable_hybrid_swa_memory: bool = Field(
        default=False, description="Give a hybrid-SWA model one pool of full-length slots in every layer."
    )


class SGLangFramework(ContinuousBatchingFramework):
    """SGLang scheduling over a radix cache; see the module docstring."""

    config_schema: ClassVar[type[FrameworkConfig]] = SGLangConfig
    type_name: ClassVar[str] = "SGLANG"
    modelled_release: ClassVar[str] = "SGLang"
    releases: ClassVar[ReleaseTable | None] = RELEASES
    steady_while_waiting: ClassVar[bool] = False  # the decaying new_token_ratio can admit mid-decode
    # CPU time per step and per sequence: SGLang's Python scheduler, 3.24 ms + 10 us per
    # sequence (the step part refitted with `python -m llmsim.calibrate --factors sglang.step` on the shipped
    # cases, bounds 0-20 ms, after modelling the overlap; vLLM v1's is 2.5 ms, efficiency.md s.4). The overlap scheduler (on by default
    # from 0.4: SGLang v0.4 blog, "zero-overhead batch scheduler", no GPU idle between batches) runs it
    # beside the GPU's work on the previous batch, so an overlapped step takes the longer of the two plus
    # the hand-over of the sampled tokens (vLLM's measured 0.16 ms reused: no SGLang figure).
    CPU_OVERHEAD: ClassVar[tuple[float, float]] = (3.24e-3, 1.0e-5)
    sync_gap_s: ClassVar[float] = 1.6e-4
    config: SGLangConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.perf_model.cuda_graphs = self.cuda_graph_capture()
        self.overlaps_cpu = not cfg.disable_overlap_schedule
        step, per_seq = self.CPU_OVERHEAD
        if cfg.step_overhead_s is None:
            self.step_overhead_s = step
        if cfg.per_seq_overhead_s is None:
            self.per_seq_overhead_s = per_seq
        total_tokens = self.memory_plan.kv_capacity_tokens
        self.kv = RadixKVManager(total_tokens, not cfg.disable_radix_cache)
        chunk = self._chunked_prefill_size()
        self.chunk_size = None if chunk <= 0 else chunk
        derived = min(4096, max(2048, int(total_tokens / self.max_model_len * 512)), max(total_tokens // 2, 1))
        self.max_running_requests = cfg.max_running_requests or derived
        #: new_token_ratio's start (also after an idle spell), floor and decay per decode step
        self.init_new_token_ratio = min(INIT_NEW_TOKEN_RATIO * cfg.schedule_conservativeness, 1.0)
        self.min_new_token_ratio = min(self.init_new_token_ratio * MIN_NEW_TOKEN_RATIO_FACTOR, 1.0)
        self.new_token_ratio = self.init_new_token_ratio
        self.ratio_decay = (self.init_new_token_ratio - self.min_new_token_ratio) / NEW_TOKEN_RATIO_DECAY_STEPS
        self.chunked: Request | None = None
        self.rng = stream_rng(0, "sglang-random-policy", self.framework_id)

    # ---- set-up --------------------------------------------------------------------------------
    def _chunked_prefill_size(self) -> int:
        """``chunked_prefill_size`` as set, else SGLang's default for the GPU's memory."""
        if self.config.chunked_prefill_size is not None:
            return self.config.chunked_prefill_size
        return gpu_memory_defaults(self.device.memory_capacity_bytes, self.config.tensor_parallel_size)[0]

    def _cuda_graph_max_bs(self) -> int:
        """``cuda_graph_max_bs`` as set, else SGLang's default for the GPU's memory and the TP size."""
        if self.config.cuda_graph_max_bs is not None:
            return self.config.cuda_graph_max_bs
        return gpu_memory_defaults(self.device.memory_capacity_bytes, self.config.tensor_parallel_size)[1]

    def mem_fraction_static(self) -> float:
        """``mem_fraction_static`` as set, else :func:`default_mem_fraction_static` for this deployment."""
        cfg = self.config
        if cfg.mem_fraction_static is not None:
            return cfg.mem_fraction_static
        return default_mem_fraction_static(
            self.device.memory_capacity_bytes,
            self._chunked_prefill_size(),
            self._cuda_graph_max_bs(),
            cfg.tensor_parallel_size,
        )

    def cuda_graph_capture(self) -> CudaGraphs:
        """Decode batches up to ``cuda_graph_max_bs`` replay graphs (padded up unless padding is off);
        extend (prefill) batches always run eager (0.5.6: ``ForwardMode.is_cuda_graph`` is decode only,
        piecewise graphs off by default)."""
        cfg = self.config
        if cfg.disable_cuda_graph:
            return CudaGraphs(decode_sizes=())
        max_bs = self._cuda_graph_max_bs()
        if cfg.disable_cuda_graph_padding:
            return CudaGraphs(decode_sizes=tuple(range(1, max_bs + 1)), pad_decode=False)
        return CudaGraphs(decode_sizes=sglang_capture_sizes(max_bs), pad_decode=True)

    def plan_memory(self) -> MemoryPlan:
        """``mem_fraction_static`` of the GPU holds weights and the token pool (page size 1)."""
        # activations live outside the static fraction: no workspace inside it
        return self.plan_deployment_memory(self.mem_fraction_static(), 1, 0, 0)

    def on_idle(self) -> None:
        """SGLang's ``self_check_during_idle`` resets ``new_token_ratio`` when nothing runs or waits."""
        self.new_token_ratio = self.init_new_token_ratio

    def _apply_block_override(self, plan: MemoryPlan) -> MemoryPlan:
        """The base override (``max_total_tokens``), then a hybrid-SWA model's split into full and SWA pools.

        The radix cache holds the full pool's tokens. The SWA pool (``swa_full_tokens_ratio`` of it)
        is not simulated: SGLang frees a running request's SWA slots behind its window, so with
        gpt-oss's 128-token window it binds only with prefill chunks of many concurrent requests.
        """
        plan = super()._apply_block_override(plan)
        if self.config.disable_hybrid_swa_memory or not sglang_uses_swa_pool(self.model):
            return plan
        full, _ = sglang_swa_pool_tokens(self.model, plan.num_blocks, self.config.swa_full_tokens_ratio)
        return dataclasses.replace(plan, max_request_tokens=full)

    # ---- policy --------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """A prefill batch if any request can be admitted, else a decode of every running request."""
        plan = self._prefill_batch()
        if plan.scheduled:
            return plan
        return self._decode_batch()

    def _ordered_waiting(self) -> list[Request]:
        policy = self.config.schedule_policy
        waiting = list(self.waiting)
        cache_aware = policy in ("lpm", "dfs-weight")
        if cache_aware and (len(waiting) > LONG_QUEUE or self.config.disable_radix_cache):
            policy = "fcfs"
        if policy == "lpm":
            prefix = {id(r): self.kv.peek_prefix(r) for r in waiting}
            waiting.sort(key=lambda r: -prefix[id(r)])
        elif policy == "dfs-weight":
            nodes = {id(r): self.kv.cache.match_prefix(_runs(r), r.num_tokens - 1)[0] for r in waiting}
            weight: dict[int, int] = {}
            for r in waiting:
                weight[id(nodes[id(r)])] = weight.get(id(nodes[id(r)]), 0) + 1
            waiting.sort(key=lambda r: -weight[id(nodes[id(r)])] if nodes[id(r)] is not self.kv.cache.root else 0)
        elif policy == "lof":
            waiting.sort(key=lambda r: -r.spec.max_output_tokens)
        elif policy == "random":
            order = self.rng.permutation(len(waiting))
            waiting = [waiting[i] for i in order]
        return waiting

    def _expected_decode_need(self) -> float:
        """Tokens running requests are expected to still generate (x new_token_ratio)."""
        return sum(
            min(r.spec.max_output_tokens - r.num_output_tokens, CLIP_MAX_NEW_TOKENS) * self.new_token_ratio
            for r in self.running
            if r is not self.chunked
        )

    def _prefill_batch(self) -> StepPlan:
        plan = StepPlan()
        budget = float(self.kv.cache.available_tokens) - self._expected_decode_need()
        input_budget = self.config.max_prefill_tokens
        chunk_budget = self.chunk_size if self.chunk_size is not None else None
        if self.chunked is not None:
            request = self.chunked
            num_new = request.num_tokens - request.num_computed_tokens
            if chunk_budget is not None:
                num_new = min(num_new, chunk_budget)
            if self.kv.allocate(request, num_new):
                plan.scheduled.append((request, num_new))
                input_budget -= num_new
                if chunk_budget is not None:
                    chunk_budget -= num_new
                self.chunked = request if request.num_computed_tokens + num_new < request.num_tokens else None
                if self.chunked is not None:
                    return plan
            else:
                return plan
        if not self.waiting or len(self.running) >= self.max_running_requests:
            return plan
        for request in self._ordered_waiting():
            if len(self.running) >= self.max_running_requests or input_budget <= 0:
                break
            if chunk_budget is not None and chunk_budget <= 0:
                break
            cached = self.kv.start(request)
            extend = request.num_tokens - cached
            # a new request reserves its whole (clipped) output; new_token_ratio discounts only running ones
            # (schedule_policy.py PrefillAdder.add_one_req: rejected when prompt + output >= what is left)
            expected_output = min(request.spec.max_output_tokens - request.num_output_tokens, CLIP_MAX_NEW_TOKENS)
            if extend + expected_output >= budget and self.running:
                self.kv.free(request)
                break
            num_new = extend
            if chunk_budget is not None and extend > chunk_budget:
                num_new = chunk_budget
            elif extend > input_budget and plan.scheduled:
                self.kv.free(request)
                break
            if not self.kv.allocate(request, num_new):
                self.kv.free(request)
                break
            self.waiting.remove(request)
            self.start_running(request, cached)
            plan.scheduled.append((request, num_new))
            budget -= extend + expected_output
            input_budget -= num_new
            if chunk_budget is not None:
                chunk_budget -= num_new
            if num_new < extend:
                self.chunked = request
                break
        return plan

    def _decode_batch(self) -> StepPlan:
        """Every running request decodes one token; retract first if the cache cannot take one each."""
        plan = StepPlan()
        decoding = [r for r in self.running if r is not self.chunked]
        if self.chunked is not None and self.kv.cache.available_tokens < max(len(decoding), 1):
            # the half-prefilled request cannot continue and decoders are short of room: give its memory back
            stuck, self.chunked = self.chunked, None
            self.running.remove(stuck)
            self.evict(stuck, "retracted")
            plan.evicted += 1
        if self.kv.cache.available_tokens < len(decoding):
            decoding = self._retract(decoding, plan)
        else:
            self.new_token_ratio = max(self.new_token_ratio - self.ratio_decay, self.min_new_token_ratio)
        for request in decoding:
            if self.kv.allocate(request, 1):
                plan.scheduled.append((request, 1))
        return plan

    def on_decode_stretch(self, steps: int) -> None:
        """The ratio decays once per decode step; the stretch's first step decayed it already."""
        for _ in range(steps - 1):  # step by step, so the float arithmetic is the same as without stretches
            self.new_token_ratio = max(self.new_token_ratio - self.ratio_decay, self.min_new_token_ratio)

    def _retract(self, decoding: list[Request], plan: StepPlan) -> list[Request]:
        """Retract requests until the rest have room for RETRACT_DECODE_STEPS more tokens each."""
        order = sorted(decoding, key=lambda r: (r.num_output_tokens, -r.prompt_len), reverse=True)
        while len(order) > 1 and self.kv.cache.available_tokens < len(order) * RETRACT_DECODE_STEPS:
            victim = order.pop()
            self.running.remove(victim)
            self.evict(victim, "retracted")
            plan.evicted += 1
        generated = sum(r.num_output_tokens for r in order)
        wanted = sum(min(r.spec.max_output_tokens, CLIP_MAX_NEW_TOKENS) for r in order) or 1
        self.new_token_ratio = min(1.0, (generated + RETRACT_DECODE_STEPS * len(order)) / wanted)
        keep = set(map(id, order))
        return [r for r in decoding if id(r) in keep]

    def describe(self) -> dict[str, Any]:
        """Deployment facts plus SGLang's resolved limits."""
        return {
            **super().describe(),
            "schedule_policy": self.config.schedule_policy,
            "chunked_prefill_size": self.chunk_size,
            "max_running_requests": self.max_running_requests,
            "mem_fraction_static": self.mem_fraction_static(),
            "cuda_graph_max_bs": 0 if self.config.disable_cuda_graph else self._cuda_graph_max_bs(),
            "radix_cache": not self.config.disable_radix_cache,
        }


def _runs(request: Request) -> tuple:
    from llmsim.frameworks.radix_cache import runs_of

    return runs_of(request.spec.token_segments, request.num_tokens)
