"""Step latency of one engine iteration: a roofline per operator with achieved-efficiency factors.

A batch is summarised by a :class:`BatchShape` (tokens through the GEMMs, attention work of the
prefill chunks, KV tokens the decode sequences read, how many rows reach the LM head). For each
operator of one transformer layer the model takes the larger of its compute time (FLOPs at the
achieved fraction of dense peak, which falls for small token counts) and its memory time (bytes at
the achieved fraction of HBM bandwidth), plus a per-kernel launch floor; layers are identical, so
one layer is costed and multiplied. Tensor parallelism divides weights, heads and FLOPs by ``tp``
and adds two all-reduces per layer (bandwidth term plus latency floor).

The efficiency factors live in each ``conf/hardware`` file with their sources
(``shared/reference/efficiency.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmsim.hardware.spec import ComputeDevice, Efficiency, Interconnect
from llmsim.models import DTYPE_BYTES, ModelProfile

ACTIVATION_BYTES = 2.0  # activations stay in 16-bit even for fp8/int weights
KERNEL_FLOOR_S = 4e-6  # smallest duration of one GPU kernel (launch + tail), per operator and layer


@dataclass(slots=True)
class BatchShape:
    """Aggregate work of one step; build it with :meth:`add_prefill` and :meth:`add_decode`."""

    prefill_tokens: int = 0
    prefill_attn_pairs: float = 0.0  # sum over chunks of n * (c + (n + 1) / 2): causal query-key pairs
    prefill_kv_tokens: int = 0  # sum over chunks of (c + n): KV entries the chunk's attention reads
    decode_seqs: int = 0
    decode_kv_tokens: int = 0  # sum over decode sequences of their context length (incl. new token)
    logits_rows: int = 0  # sequences that sample a token this step
    window: int | None = field(default=None, repr=False)

    def add_prefill(self, num_new_tokens: int, num_context_tokens: int, samples_token: bool) -> None:
        """Add a prefill chunk of ``num_new_tokens`` on top of ``num_context_tokens`` already cached."""
        n, c = num_new_tokens, num_context_tokens
        if self.window is not None:
            c = min(c, self.window)
        self.prefill_tokens += n
        self.prefill_attn_pairs += n * (c + (n + 1) / 2.0)
        self.prefill_kv_tokens += c + n
        if samples_token:
            self.logits_rows += 1

    def add_decode(self, context_len: int) -> None:
        """Add one decode sequence whose context (including the new token) is ``context_len``."""
        self.decode_seqs += 1
        self.decode_kv_tokens += context_len if self.window is None else min(context_len, self.window)
        self.logits_rows += 1

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
    ) -> None:
        self.model = model
        self.tp = tensor_parallel_size
        self.eff = efficiency
        self.interconnect = interconnect
        self.weight_bytes = DTYPE_BYTES[dtype]
        compute_dtype = "fp8" if dtype == "fp8" else ("bf16" if dtype in ("int8", "int4", "fp32") else dtype)
        self.peak_flops = device.peak_flops(compute_dtype)
        self.gemm_eff = (
            efficiency.gemm_flops_fp8 if compute_dtype == "fp8" and efficiency.gemm_flops_fp8 else efficiency.gemm_flops
        )
        self.peak_bw = device.memory_gbps * 1e9
        self.kv_bytes_per_token_layer = model.kv_bytes_per_token(kv_dtype) / model.num_hidden_layers
        # KV heads are split over tp ranks, but never below one head per rank.
        kv_shards = min(self.tp, model.num_key_value_heads)
        self.kv_bytes_per_token_layer_gpu = self.kv_bytes_per_token_layer / kv_shards
        self._cache: dict[tuple, float] = {}

    def new_batch(self) -> BatchShape:
        """An empty batch that applies this model's sliding window (when every layer has one)."""
        m = self.model
        full_window = m.sliding_window is not None and m.sliding_window_layers in (None, m.num_hidden_layers)
        return BatchShape(window=m.sliding_window if full_window else None)

    # ---- one operator ----------------------------------------------------------------------------
    def _gemm(
        self, tokens: float, params: float, weight_params_read: float | None = None
    ) -> tuple[float, float, float, bool]:
        """(time, flops, bytes, compute-bound?) of a linear layer: ``tokens`` x ``params`` weights on this GPU."""
        if tokens <= 0:
            return 0.0, 0.0, 0.0, False
        read = params if weight_params_read is None else weight_params_read
        flops = 2.0 * tokens * params
        eff = self.gemm_eff * tokens / (tokens + self.eff.gemm_half_tokens)
        compute = flops / (self.peak_flops * eff)
        nbytes = read * self.weight_bytes
        memory = nbytes / (self.peak_bw * self.eff.hbm_bandwidth)
        return max(compute, memory, KERNEL_FLOOR_S), flops, nbytes, compute >= memory

    def _stream(self, nbytes: float, efficiency: float) -> float:
        return max(nbytes / (self.peak_bw * efficiency), KERNEL_FLOOR_S) if nbytes > 0 else 0.0

    # ---- one layer -------------------------------------------------------------------------------
    def layer_cost(self, batch: BatchShape) -> StepCost:
        """Cost of one transformer layer for the batch, on one GPU of the tensor-parallel group."""
        m, tp = self.model, self.tp
        tokens = batch.num_tokens
        h = m.hidden_size
        total_t = total_f = total_b = 0.0
        compute_t = memory_t = 0.0

        def add(time: float, flops: float, nbytes: float, bound_compute: bool) -> None:
            nonlocal total_t, total_f, total_b, compute_t, memory_t
            total_t += time
            total_f += flops
            total_b += nbytes
            if bound_compute:
                compute_t += time
            else:
                memory_t += time

        # linear layers
        qkv_params = h * (m.q_dim + 2 * m.kv_dim) / tp
        o_params = m.q_dim * h / tp
        for params in (qkv_params, o_params):
            add(*self._gemm(tokens, params))
        expert = m.mlp_params_per_expert / tp
        if m.is_moe:
            e, k = m.num_local_experts, m.num_experts_per_tok
            touched = e * (1.0 - (1.0 - k / e) ** tokens)
            add(*self._gemm(tokens, h * e))  # router
            add(*self._gemm(tokens * k, expert, touched * expert))
        else:
            add(*self._gemm(tokens, expert))

        # attention
        heads_flops = 4.0 * m.num_attention_heads / tp * m.head_size  # QK^T and PV per query-key pair
        if batch.prefill_tokens:
            flops = heads_flops * batch.prefill_attn_pairs
            nbytes = batch.prefill_kv_tokens * self.kv_bytes_per_token_layer_gpu
            compute = flops / (self.peak_flops * self.eff.attention_flops)
            memory = nbytes / (self.peak_bw * self.eff.hbm_bandwidth)
            add(max(compute, memory, KERNEL_FLOOR_S), flops, nbytes, compute >= memory)
        if batch.decode_seqs:
            flops = heads_flops * batch.decode_kv_tokens
            nbytes = batch.decode_kv_tokens * self.kv_bytes_per_token_layer_gpu
            compute = flops / (self.peak_flops * self.eff.attention_flops)
            memory = nbytes / (self.peak_bw * self.eff.hbm_bandwidth)
            add(max(compute, memory, KERNEL_FLOOR_S), flops, nbytes, compute >= memory)

        # elementwise: 2 RMSNorms, 2 residual adds, rotary on q/k, KV write, MLP activation
        act = ACTIVATION_BYTES
        inter = m.expert_intermediate_size * (m.num_experts_per_tok if m.is_moe else 1) / tp
        elementwise = tokens * act * (2 * 2 * h + 2 * 3 * h + 2 * (m.q_dim + m.kv_dim) / tp + 3 * inter)
        kv_write = tokens * self.kv_bytes_per_token_layer_gpu
        add(self._stream(elementwise + kv_write, self.eff.elementwise_bandwidth), 0.0, elementwise + kv_write, False)
        return StepCost(total_t, compute_t, memory_t, 0.0, total_f, total_b)

    def allreduce_time(self, nbytes: float) -> float:
        """One ring all-reduce of ``nbytes`` over the tensor-parallel group."""
        if self.tp <= 1 or nbytes <= 0:
            return 0.0
        bus_bw = self.interconnect.bandwidth_gbps * 1e9 * self.interconnect.allreduce_efficiency
        return self.interconnect.latency_s + nbytes * 2.0 * (self.tp - 1) / self.tp / bus_bw

    def step_cost(self, batch: BatchShape) -> StepCost:
        """Whole-model GPU cost of one step (all layers, LM head, all-reduces)."""
        m = self.model
        layer = self.layer_cost(batch)
        layers = m.num_hidden_layers
        comm = 2 * layers * self.allreduce_time(batch.num_tokens * m.hidden_size * ACTIVATION_BYTES)
        head_t, head_f, head_b, head_compute = self._gemm(batch.logits_rows, m.vocab_size * m.hidden_size / self.tp)
        time = layer.time_s * layers + comm + head_t
        return StepCost(
            time_s=time,
            compute_s=layer.compute_s * layers + (head_t if head_compute else 0.0),
            memory_s=layer.memory_s * layers + (0.0 if head_compute else head_t),
            comm_s=comm,
            flops=layer.flops * layers + head_f,
            bytes=layer.bytes * layers + head_b,
        )

    def step_time(self, batch: BatchShape) -> float:
        """GPU seconds for the batch (memoised on its shape)."""
        key = batch.key()
        cached = self._cache.get(key)
        if cached is None:
            cached = self.step_cost(batch).time_s if batch.num_tokens else 0.0
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = cached
        return cached
