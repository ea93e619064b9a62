"""Step latency of one engine iteration: a roofline per operator with achieved-efficiency factors.

A batch is summarised by a :class:`BatchShape` (tokens through the GEMMs, attention work of the
prefill chunks, KV tokens the decode sequences read, how many rows reach the LM head). For each
operator the model takes the larger of its compute time (FLOPs at the achieved fraction of dense
peak, which falls for small token counts) and its memory time (bytes at the achieved fraction of
HBM bandwidth), with a per-kernel launch floor. Layers come in kinds — dense or MoE MLP, full or
sliding-window or chunked local attention — each costed once and multiplied by how many layers have it. Tensor
parallelism divides weights, heads and FLOPs by ``tp`` and adds two all-reduces per layer
(bandwidth term plus latency floor). MoE layers read the weights of the experts the batch touches
(the expected number of distinct experts among ``tokens x top_k`` picks). MLA attention reads the
compressed latent and computes in the absorbed form.

The efficiency factors live in each ``conf/hardware`` file with their sources
(``shared/reference/efficiency.md``).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from llmsim.hardware.spec import ComputeDevice, Efficiency, Interconnect
from llmsim.models import DTYPE_BYTES, ModelProfile

ACTIVATION_BYTES = 2.0  # activations stay in 16-bit even for fp8/int weights
KERNEL_FLOOR_S = 4e-6  # smallest duration of one GPU kernel (launch + tail), per operator and layer
# A step that runs outside CUDA graphs (eager) exposes each layer's kernel launches:
# about ten kernels x ~5 us per layer. (arXiv 2605.30571: CUDA graphs cut batch-1 decode on H100 by
# 1.26x for a 28-layer 7B model under eager PyTorch, ~100 us per layer with unfused kernels.)
EAGER_LAUNCH_PER_LAYER_S = 50e-6
# A piecewise CUDA graph (vLLM's mixed prefill/decode steps) replays everything but the attention op,
# whose kernels (the KV-cache write and attention: two of the ~ten per layer) still launch one by one.
PIECEWISE_LAUNCH_PER_LAYER_S = 10e-6


@dataclass(frozen=True, slots=True)
class CudaGraphs:
    """Which steps an engine replays from captured CUDA graphs, and how it pads batches to them.

    A replayed graph launches nothing per kernel; an eager step launches every kernel from the CPU
    and pays those launches on top of its kernels (the measurement behind
    ``EAGER_LAUNCH_PER_LAYER_S``: graphs cut batch-1 decode by 1.26x, as additive launches predict;
    overlapping them fully would predict no gain). ``decode_sizes``: the captured decode batch sizes, ascending
    (None: every decode batch replays a graph of exactly its size, unpadded; ``()``: none); a decode
    batch runs as the smallest captured size that holds it when ``pad_decode`` (the padding rows
    cost GEMM and LM-head work, not attention), else only at a captured size; above the largest it
    runs eager. ``piecewise_sizes``: token counts of steps with prefill work that replay piecewise
    graphs (padded up to the next one; attention stays eager); other such steps run eager.
    """

    decode_sizes: tuple[int, ...] | None = None
    pad_decode: bool = True
    piecewise_sizes: tuple[int, ...] = ()

    def decode(self, num_seqs: int) -> tuple[int, float]:
        """(rows the decode step computes, launch seconds per layer it exposes)."""
        sizes = self.decode_sizes
        if sizes is None:
            return num_seqs, 0.0
        index = bisect.bisect_left(sizes, num_seqs)
        if index == len(sizes):
            return num_seqs, EAGER_LAUNCH_PER_LAYER_S
        if self.pad_decode:
            return sizes[index], 0.0
        return num_seqs, 0.0 if sizes[index] == num_seqs else EAGER_LAUNCH_PER_LAYER_S

    def mixed(self, num_tokens: int) -> tuple[int, float]:
        """(tokens a step with prefill work computes, launch seconds per layer it exposes)."""
        sizes = self.piecewise_sizes
        index = bisect.bisect_left(sizes, num_tokens)
        if index == len(sizes):
            return num_tokens, EAGER_LAUNCH_PER_LAYER_S
        return sizes[index], PIECEWISE_LAUNCH_PER_LAYER_S


#: no capture information: decode steps replay graphs of their own size, steps with prefill run eager
DEFAULT_CUDA_GRAPHS = CudaGraphs()


def _has_peak(device: ComputeDevice, dtype: str) -> bool:
    try:
        device.peak_flops(dtype)
    except KeyError:
        return False
    return True


def _chunked_pairs(tokens: int, chunk: int) -> int:
    """Causal query-key pairs of the first ``tokens`` tokens under chunked local attention."""
    chunks, rest = divmod(tokens, chunk)
    return chunks * chunk * (chunk + 1) // 2 + rest * (rest + 1) // 2


@dataclass(slots=True)
class BatchShape:
    """Aggregate work of one step; build it with :meth:`add_prefill` and :meth:`add_decode`.

    The plain aggregates see the whole context; the ``windowed_*`` ones cap every context at
    ``window`` (what sliding-window layers read) or, when ``chunked``, keep only the context's own
    ``window``-token chunk (chunked local attention: the token at position ``p``, 0-based, sees
    ``p mod window + 1`` keys). Without a window they are equal.
    """

    prefill_tokens: int = 0
    prefill_attn_pairs: float = 0.0  # sum over chunks of n * (c + (n + 1) / 2): causal query-key pairs
    prefill_kv_tokens: int = 0  # sum over chunks of (c + n): KV entries the chunk's attention reads
    decode_seqs: int = 0
    decode_kv_tokens: int = 0  # sum over decode sequences of their context length (incl. new token)
    logits_rows: int = 0  # sequences that sample a token this step
    window: int | None = field(default=None, repr=False)
    chunked: bool = field(default=False, repr=False)
    windowed_prefill_attn_pairs: float = 0.0
    windowed_prefill_kv_tokens: int = 0
    windowed_decode_kv_tokens: int = 0

    def add_prefill(self, num_new_tokens: int, num_context_tokens: int, samples_token: bool) -> None:
        """Add a prefill chunk of ``num_new_tokens`` on top of ``num_context_tokens`` already cached."""
        n, c = num_new_tokens, num_context_tokens
        self.prefill_tokens += n
        self.prefill_attn_pairs += n * (c + (n + 1) / 2.0)
        self.prefill_kv_tokens += c + n
        if self.window is None:
            self.windowed_prefill_attn_pairs += n * (c + (n + 1) / 2.0)
            self.windowed_prefill_kv_tokens += c + n
        elif self.chunked:
            w = self.window
            self.windowed_prefill_attn_pairs += float(_chunked_pairs(c + n, w) - _chunked_pairs(c, w))
            self.windowed_prefill_kv_tokens += c % w + n  # the first chunk's cached part, then the new tokens
        else:
            w = self.window
            # query i (1-based) sees min(c + i, w) keys
            full = max(0, min(n, w - c))  # queries that still see everything
            self.windowed_prefill_attn_pairs += full * c + full * (full + 1) / 2.0 + (n - full) * w
            self.windowed_prefill_kv_tokens += min(c, w) + n
        if samples_token:
            self.logits_rows += 1

    def add_decode(self, context_len: int) -> None:
        """Add one decode sequence whose context (including the new token) is ``context_len``."""
        self.decode_seqs += 1
        self.decode_kv_tokens += context_len
        self.windowed_decode_kv_tokens += self.attended(context_len)
        self.logits_rows += 1

    def attended(self, context_len: int) -> int:
        """Keys a windowed layer reads for the newest of ``context_len`` tokens."""
        if self.window is None:
            return context_len
        if self.chunked:
            return (context_len - 1) % self.window + 1
        return min(context_len, self.window)

    @property
    def num_tokens(self) -> int:
        """Tokens through the linear layers this step."""
        return self.prefill_tokens + self.decode_seqs

    def key(self) -> tuple:
        """Hashable summary, for caching step times."""
        return (
            self.prefill_tokens,
            self.prefill_attn_pairs,
            self.prefill_kv_tokens,
            self.decode_seqs,
            self.decode_kv_tokens,
            self.logits_rows,
            self.windowed_prefill_attn_pairs,
            self.windowed_prefill_kv_tokens,
            self.windowed_decode_kv_tokens,
        )


@dataclass(frozen=True, slots=True)
class StepCost:
    """GPU time of one step and how it splits (seconds, FLOPs and bytes per GPU)."""

    time_s: float
    compute_s: float
    memory_s: float
    comm_s: float
    flops: float
    bytes: float


@dataclass(frozen=True, slots=True)
class LayerKind:
    """What distinguishes layers of one model: an MoE or dense MLP, windowed or full attention."""

    moe: bool
    windowed: bool


_Term = tuple[float, float, float, bool]  # an operator's (time, flops, bytes, compute-bound?)


@dataclass(frozen=True, slots=True)
class _TokenTerms:
    """A layer's operators that depend only on its token count, and their seconds as steps add them."""

    linear: list[_Term]
    elementwise: list[_Term]
    linear_s: float  # the linear operators' seconds summed in order from zero
    elementwise_s: tuple[float, ...]


class _Tally:
    """Accumulates operator costs into totals split by what bounded each operator."""

    __slots__ = ("bytes", "compute", "flops", "memory", "time")

    def __init__(self) -> None:
        self.time = self.flops = self.bytes = self.compute = self.memory = 0.0

    def add(self, time: float, flops: float, nbytes: float, compute_bound: bool) -> None:
        self.time += time
        self.flops += flops
        self.bytes += nbytes
        if compute_bound:
            self.compute += time
        else:
            self.memory += time


def _attention_work(batch: BatchShape, kind: LayerKind) -> tuple[float, int, int]:
    """(prefill query-key pairs, prefill KV reads, decode KV reads) a layer of ``kind`` sees."""
    if kind.windowed:
        return batch.windowed_prefill_attn_pairs, batch.windowed_prefill_kv_tokens, batch.windowed_decode_kv_tokens
    return batch.prefill_attn_pairs, batch.prefill_kv_tokens, batch.decode_kv_tokens


def expert_rank_rows(assignments: float, ep: int) -> float:
    """Token-expert pairs the busiest of ``ep`` expert-parallel ranks computes, of ``assignments``.

    Each pair lands on a rank with probability 1/ep (experts evenly placed, tokens routed
    independently): a rank's load is binomial, and the busiest of ``ep`` such ranks carries about
    ``mean + sqrt(2 ln(ep) var)`` (the expected maximum of ``ep`` near-normal loads). Routers that
    balance better (auxiliary losses, redundant experts) do no worse than this; skewed ones do.
    """
    if ep <= 1:
        return assignments
    mean = assignments / ep
    spread = math.sqrt(2.0 * math.log(ep) * mean * (1.0 - 1.0 / ep))
    return min(assignments, mean + spread)


class PerformanceModel:
    """Turns a :class:`BatchShape` into GPU time for one model on one tensor-parallel group."""

    def __init__(
        self,
        model: ModelProfile,
        device: ComputeDevice,
        efficiency: Efficiency,
        interconnect: Interconnect,
        tensor_parallel_size: int = 1,
        dtype: str = "bf16",
        kv_dtype: str = "bf16",
        cuda_graphs: CudaGraphs = DEFAULT_CUDA_GRAPHS,
        attention_dp: int = 1,
        expert_parallel: int = 1,
    ) -> None:
        self.model = model
        #: the engine's CUDA-graph capture (padding and launches); frameworks set it from their knobs
        self.cuda_graphs = cuda_graphs
        #: GPUs of the engine; attention runs on ``attention_dp`` data-parallel ranks of ``attn_tp`` GPUs
        #: each (every rank its own requests and KV), the experts on ``expert_parallel`` ranks of
        #: ``moe_tp`` GPUs each (dispatch and combine all-to-all between them)
        self.tp = tensor_parallel_size
        self.attention_dp = attention_dp
        self.expert_parallel = expert_parallel
        self.attn_tp = tensor_parallel_size // attention_dp
        self.moe_tp = tensor_parallel_size // expert_parallel
        #: the share of the batch's attention work (query-key pairs, KV reads) one GPU does
        self.kv_share = 1.0 / attention_dp
        self.eff = efficiency
        self.interconnect = interconnect
        self.weight_bytes = DTYPE_BYTES[dtype]
        self.expert_weight_bytes = DTYPE_BYTES[model.expert_dtype or dtype]
        compute_dtype = dtype if dtype in ("fp8", "fp4") else ("bf16" if dtype in ("int8", "int4", "fp32") else dtype)
        if compute_dtype == "fp4" and not _has_peak(device, "fp4"):
            compute_dtype = "bf16"  # no FP4 tensor cores (before Blackwell): 4-bit weights run weight-only (W4A16)
        if compute_dtype == "fp8" and not _has_peak(device, "fp8"):
            compute_dtype = "bf16"  # no FP8 tensor cores (Ampere): FP8 weights run weight-only, as vLLM does
        self.peak_flops = device.peak_flops(compute_dtype)
        # attention runs in FP8 only with an FP8 KV cache on GPUs that have FP8 (FP8 FMHA); else 16-bit
        attention_dtype = "fp8" if kv_dtype == "fp8" and _has_peak(device, "fp8") else "bf16"
        self.attention_peak_flops = device.peak_flops(attention_dtype)
        # FP4 (NVFP4) GEMMs: no measured fraction of their peak here, so the FP8 one (block-scaled low precision)
        self.gemm_eff = (
            efficiency.gemm_flops_fp8
            if compute_dtype in ("fp8", "fp4") and efficiency.gemm_flops_fp8
            else efficiency.gemm_flops
        )
        self.moe_gemm_scale = efficiency.moe_gemm_relative
        self.peak_bw = device.memory_gbps * 1e9
        self.kv_bytes_per_token_layer = model.kv_bytes_per_token_layer(kv_dtype)
        self.kv_bytes_per_token_layer_gpu = self.kv_bytes_per_token_layer / model.kv_shards(self.attn_tp)
        if model.is_mla:
            # absorbed MLA: scores against the latent + rope key, values from the latent, per head
            per_pair = 2.0 * (model.kv_lora_rank + model.qk_rope_head_dim) + 2.0 * model.kv_lora_rank  # type: ignore[operator]
        else:
            per_pair = 4.0 * model.head_size  # QK^T and PV
        self.attn_flops_per_pair = per_pair * model.num_attention_heads / self.attn_tp
        self.layer_groups = self._layer_groups()
        self._cache: dict[tuple, float] = {}
        self._decode_cache: dict[int, tuple[float, float]] = {}
        self._token_cache: dict[tuple[int, LayerKind], _TokenTerms] = {}

    def _layer_groups(self) -> list[tuple[int, LayerKind]]:
        """(count, kind) for every kind of layer the model has, dense/MoE x windowed/full."""
        m = self.model
        groups: dict[LayerKind, int] = {}
        for index in range(m.num_hidden_layers):
            kind = LayerKind(m.is_moe_layer(index), m.is_window_layer(index))
            groups[kind] = groups.get(kind, 0) + 1
        return [(count, kind) for kind, count in groups.items()]

    def new_batch(self) -> BatchShape:
        """An empty batch that tracks this model's sliding window or attention chunk (if it has one)."""
        return BatchShape(window=self.model.attention_window, chunked=self.model.window_is_chunked)

    # ---- one operator ----------------------------------------------------------------------------
    def _gemm(
        self,
        tokens: float,
        params: float,
        weight_params_read: float | None = None,
        weight_bytes: float | None = None,
        rows_per_gemm: float | None = None,
        efficiency_scale: float = 1.0,
    ) -> tuple[float, float, float, bool]:
        """(time, flops, bytes, compute-bound?) of a linear layer: ``tokens`` x ``params`` weights on this GPU.

        ``rows_per_gemm`` is the M dimension each GEMM sees when the work is split into several
        (the tokens routed to one expert); small M runs at a lower fraction of peak.
        """
        if tokens <= 0:
            return 0.0, 0.0, 0.0, False
        read = params if weight_params_read is None else weight_params_read
        flops = 2.0 * tokens * params
        rows = tokens if rows_per_gemm is None else rows_per_gemm
        eff = self.gemm_eff * efficiency_scale * rows / (rows + self.eff.gemm_half_tokens)
        compute = flops / (self.peak_flops * eff)
        nbytes = read * (self.weight_bytes if weight_bytes is None else weight_bytes)
        memory = nbytes / (self.peak_bw * self.eff.hbm_bandwidth)
        return max(compute, memory, KERNEL_FLOOR_S), flops, nbytes, compute >= memory

    def _attention(self, flops: float, kv_tokens: float) -> tuple[float, float, float, bool]:
        """One attention kernel over the batch's work; each attention-DP rank does its share."""
        share = self.kv_share
        flops, kv_tokens = flops * share, kv_tokens * share
        nbytes = kv_tokens * self.kv_bytes_per_token_layer_gpu
        compute = flops / (self.attention_peak_flops * self.eff.attention_flops)
        memory = nbytes / (self.peak_bw * self.eff.hbm_bandwidth)
        return max(compute, memory, KERNEL_FLOOR_S), flops, nbytes, compute >= memory

    def _stream(self, nbytes: float, efficiency: float) -> float:
        return max(nbytes / (self.peak_bw * efficiency), KERNEL_FLOOR_S) if nbytes > 0 else 0.0

    # ---- one layer -------------------------------------------------------------------------------
    def default_kind(self) -> LayerKind:
        """The kind of the model's most common layer."""
        return max(self.layer_groups, key=lambda group: group[0])[1]

    def layer_cost(self, batch: BatchShape, kind: LayerKind | None = None) -> StepCost:
        """Cost of one transformer layer of ``kind`` (default: the most common) on one GPU of the group."""
        kind = kind or self.default_kind()
        terms = self._token_terms(batch.num_tokens, kind)
        tally = _Tally()
        for term in terms.linear:
            tally.add(*term)
        pairs, prefill_kv, decode_kv = _attention_work(batch, kind)
        if batch.prefill_tokens:
            tally.add(*self._attention(self.attn_flops_per_pair * pairs, prefill_kv))
        if batch.decode_seqs:
            tally.add(*self._attention(self.attn_flops_per_pair * decode_kv, decode_kv))
        for term in terms.elementwise:
            tally.add(*term)
        return StepCost(tally.time, tally.compute, tally.memory, 0.0, tally.flops, tally.bytes)

    def _token_terms(self, tokens: int, kind: LayerKind) -> _TokenTerms:
        """The operators of a layer that depend only on its token count (linear layers, elementwise).

        Memoised per (tokens, kind); the layer adds them around its attention in the same order.
        """
        key = (tokens, kind)
        terms = self._token_cache.get(key)
        if terms is not None:
            return terms
        m, tp = self.model, self.attn_tp
        h = m.hidden_size
        aggregate, tokens = tokens, self.rank_tokens(tokens)
        linear = [self._gemm(tokens, params / tp) for _, params in m.attention_projections]
        if kind.moe:
            e, k = m.num_local_experts, m.num_experts_per_tok
            # every rank's tokens meet at the experts: an EP rank holds e / ep of them, sliced moe_tp ways
            ep = self.expert_parallel
            expert = m.mlp_params_per_expert / self.moe_tp
            touched = e * (1.0 - (1.0 - k / e) ** aggregate)
            linear.append(self._gemm(tokens, m.router_params, m.router_params))
            per_expert = aggregate * k / touched
            rows = expert_rank_rows(aggregate * k, ep)
            linear.append(
                self._gemm(
                    rows, expert, touched / ep * expert, self.expert_weight_bytes, per_expert, self.moe_gemm_scale
                )
            )
            if m.num_shared_experts:
                shared = m.num_shared_experts * (m.mlp_params_per_expert / tp)
                linear.append(self._gemm(tokens, shared, shared, self.expert_weight_bytes, None, self.moe_gemm_scale))
            active_width = m.expert_intermediate_size * (k + m.num_shared_experts)
        else:
            linear.append(self._gemm(tokens, m.dense_mlp_params / tp))
            active_width = m.intermediate_size
        # elementwise, as serving engines fuse it: two fused residual-add + RMSNorm kernels (read x and
        # the residual, write both: 4h each), the SwiGLU activation (read gate and up, write: 3 x width),
        # and the KV-cache write; rotary embedding is fused into attention. Large tensors stream at the
        # HBM efficiency; small ones are bounded by the per-kernel floor (what makes RMSNorm/RoPE reach
        # only 25-40% of bandwidth at small sizes, efficiency.md section 2).
        act = ACTIVATION_BYTES
        norms = tokens * act * 2 * 4 * h
        activation = tokens * act * 3 * active_width / tp
        kv_write = tokens * self.kv_bytes_per_token_layer_gpu
        elementwise = [
            (self._stream(nbytes, self.eff.hbm_bandwidth), 0.0, nbytes, False)
            for nbytes in (norms, activation, kv_write)
        ]
        linear_s = 0.0
        for term in linear:
            linear_s += term[0]
        if len(self._token_cache) > 100_000:
            self._token_cache.clear()
        terms = self._token_cache[key] = _TokenTerms(
            linear, elementwise, linear_s, tuple(term[0] for term in elementwise)
        )
        return terms

    def rank_tokens(self, tokens: int) -> int:
        """Tokens of the busiest attention-DP rank when ``tokens`` are spread over the ranks (all of them
        without attention DP): the scheduler balances requests, so a rank has at most one more share."""
        dp = self.attention_dp
        return tokens if dp == 1 else -(-tokens // dp)

    def allreduce_time(self, nbytes: float, group: int | None = None) -> float:
        """One ring all-reduce of ``nbytes`` over ``group`` GPUs (default: all the engine's)."""
        size = self.tp if group is None else group
        if size <= 1 or nbytes <= 0:
            return 0.0
        return self.interconnect.latency_s + nbytes * 2.0 * (size - 1) / size / self._bus_bandwidth()

    def _bus_bandwidth(self) -> float:
        """Bytes per second a GPU moves through a collective over the scale-up links."""
        return self.interconnect.bandwidth_gbps * 1e9 * self.interconnect.allreduce_efficiency

    def all_to_all_time(self, nbytes: float) -> float:
        """One all-to-all in which each GPU sends ``nbytes`` (and receives as much) over the scale-up
        links, at the same bus efficiency as an all-reduce."""
        if nbytes <= 0:
            return 0.0
        return self.interconnect.latency_s + nbytes / self._bus_bandwidth()

    def communication_time(self, tokens: int) -> float:
        """All the step's collectives for ``tokens`` tokens, every layer.

        Plain tensor parallelism: two all-reduces of the hidden states per layer. With attention DP
        each rank all-reduces only its own tokens within its ``attn_tp`` GPUs after attention; an MoE
        layer then sends every token to its ``k`` experts and back: all-to-all dispatch and combine
        between EP ranks (the share of a GPU's tokens whose expert lives elsewhere), or, without EP,
        the gathered batch all-reduced over every GPU (all-gather + reduce-scatter). Dense MLPs of
        attention-DP ranks all-reduce within the rank.
        """
        m = self.model
        hidden = m.hidden_size * ACTIVATION_BYTES
        if self.attention_dp == 1 and self.expert_parallel == 1:
            return 2 * m.num_hidden_layers * self.allreduce_time(tokens * hidden)
        rank = self.rank_tokens(tokens)
        within_rank = self.allreduce_time(rank * hidden, self.attn_tp)  # after attention, and after a dense MLP
        if self.expert_parallel > 1:
            ep = self.expert_parallel
            sent = rank / self.attn_tp * m.num_experts_per_tok * (ep - 1) / ep * hidden
            moe = 2 * self.all_to_all_time(sent)
        else:
            moe = self.allreduce_time(tokens * hidden)
        return m.num_hidden_layers * within_rank + m.num_moe_layers * moe + m.num_dense_layers * within_rank

    def graph_batch(self, batch: BatchShape) -> tuple[BatchShape, float]:
        """The batch as the engine runs it (padded to a captured CUDA graph) and the launch seconds it exposes.

        Padding rows go through the linear layers and the LM head (decode) but attend to nothing.
        """
        graphs, layers = self.cuda_graphs, self.model.num_hidden_layers
        if batch.prefill_tokens:
            tokens, launch = graphs.mixed(batch.num_tokens)
            if tokens == batch.num_tokens:
                return batch, launch * layers
            return dataclasses.replace(batch, prefill_tokens=batch.prefill_tokens + tokens - batch.num_tokens), (
                launch * layers
            )
        rows, launch = graphs.decode(batch.decode_seqs)
        if rows == batch.decode_seqs:
            return batch, launch * layers
        extra = rows - batch.decode_seqs
        return dataclasses.replace(batch, decode_seqs=rows, logits_rows=batch.logits_rows + extra), launch * layers

    def step_cost(self, batch: BatchShape) -> StepCost:
        """Whole-model GPU cost of one step (every layer, LM head, all-reduces), as the engine runs it:
        padded to its CUDA graph, or eager with its kernel launches."""
        if not batch.prefill_tokens and not batch.decode_seqs:
            return StepCost(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        padded, launch_s = self.graph_batch(batch)
        return self._cost(padded, launch_s)

    def _cost(self, batch: BatchShape, launch_s: float) -> StepCost:
        """:meth:`step_cost` of a batch already padded, exposing ``launch_s`` of kernel launches."""
        m = self.model
        total = _Tally()
        compute = memory = 0.0
        for count, kind in self.layer_groups:
            layer = self.layer_cost(batch, kind)
            total.add(layer.time_s * count, layer.flops * count, layer.bytes * count, False)
            compute += layer.compute_s * count
            memory += layer.memory_s * count
        comm = self.communication_time(batch.num_tokens)
        head_t, head_f, head_b, head_compute = self._gemm(
            self.rank_tokens(batch.logits_rows), m.vocab_size * m.hidden_size / self.attn_tp
        )
        return StepCost(
            time_s=total.time + comm + head_t + launch_s,
            compute_s=compute + (head_t if head_compute else 0.0),
            memory_s=memory + (0.0 if head_compute else head_t),
            comm_s=comm,
            flops=total.flops + head_f,
            bytes=total.bytes + head_b,
        )

    def step_time(self, batch: BatchShape) -> float:
        """GPU seconds for the batch (decode-only steps in closed form, others memoised on their shape)."""
        if not batch.prefill_tokens:
            if not batch.decode_seqs:
                return 0.0
            return self.decode_step_time(batch.decode_seqs, batch.decode_kv_tokens, batch.windowed_decode_kv_tokens)
        key = batch.key()
        cached = self._cache.get(key)
        if cached is None:
            cached = self._step_seconds(batch)
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _step_seconds(self, batch: BatchShape) -> float:
        """``step_cost(batch).time_s`` without the FLOP, byte and bound split (what scheduling needs).

        The same terms are added in the same order (a layer's linear operators, its attention, its
        elementwise kernels; then the layer groups, the all-reduces, the LM head and the launches),
        so the result is bit-identical; the token-only terms come memoised with their sum.
        """
        m = self.model
        batch, launch_s = self.graph_batch(batch)
        tokens = batch.num_tokens
        total = 0.0
        for count, kind in self.layer_groups:
            terms = self._token_terms(tokens, kind)
            time = terms.linear_s
            pairs, prefill_kv, decode_kv = _attention_work(batch, kind)
            if batch.prefill_tokens:
                time += self._attention(self.attn_flops_per_pair * pairs, prefill_kv)[0]
            if batch.decode_seqs:
                time += self._attention(self.attn_flops_per_pair * decode_kv, decode_kv)[0]
            for seconds in terms.elementwise_s:
                time += seconds
            total += time * count
        comm = self.communication_time(tokens)
        head_t = self._gemm(self.rank_tokens(batch.logits_rows), m.vocab_size * m.hidden_size / self.attn_tp)[0]
        return total + comm + head_t + launch_s

    def _decode_terms(self, num_seqs: int) -> tuple[float, float]:
        """(time of a decode step of ``num_seqs`` sequences without attention, attention seconds per KV token and layer)."""
        terms = self._decode_cache.get(num_seqs)
        if terms is None:
            base_batch = self.new_batch()
            base_batch.decode_seqs = base_batch.logits_rows = num_seqs
            # the cost at zero context charges one kernel floor per layer for attention: take it out
            base = self._cost(base_batch, 0.0).time_s - KERNEL_FLOOR_S * self.model.num_hidden_layers
            per_token = self.kv_share * max(
                self.attn_flops_per_pair / (self.attention_peak_flops * self.eff.attention_flops),
                self.kv_bytes_per_token_layer_gpu / (self.peak_bw * self.eff.hbm_bandwidth),
            )
            terms = self._decode_cache[num_seqs] = (base, per_token)
        return terms

    def decode_step_time(self, num_seqs: int, kv_tokens: int, windowed_kv_tokens: int) -> float:
        """GPU seconds of a decode-only step: everything but attention depends on ``num_seqs`` only;
        decode attention costs ``max(per-token time x KV tokens, kernel floor)`` per layer. The rows
        are padded to the CUDA graph the batch replays; an eager batch takes at least its launches."""
        rows, launch = self.cuda_graphs.decode(num_seqs)
        base, per_token = self._decode_terms(rows)
        time = base
        for count, kind in self.layer_groups:
            time += count * max(per_token * (windowed_kv_tokens if kind.windowed else kv_tokens), KERNEL_FLOOR_S)
        return time + launch * self.model.num_hidden_layers

    def decode_step_times(self, num_seqs: int, kv_tokens: np.ndarray, windowed_kv_tokens: np.ndarray) -> np.ndarray:
        """:meth:`decode_step_time` of consecutive steps, vectorised with the same arithmetic (bit-identical)."""
        rows, launch = self.cuda_graphs.decode(num_seqs)
        base, per_token = self._decode_terms(rows)
        times = np.full(len(kv_tokens), base)
        for count, kind in self.layer_groups:
            tokens = windowed_kv_tokens if kind.windowed else kv_tokens
            times += count * np.maximum(per_token * tokens, KERNEL_FLOOR_S)
        return times + launch * self.model.num_hidden_layers
