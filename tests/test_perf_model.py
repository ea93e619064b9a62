"""The operator-level step-latency model and the memory plan, pinned to hand-computed numbers.

The tiny model: hidden 64, 2 layers, 4 heads of 16 dims, 2 KV heads, gated MLP of 128, vocab 100.
Per layer: QKV 64 x (64 + 2 x 32) = 8192 weights, O 64 x 64 = 4096, MLP 3 x 64 x 128 = 24576;
36864 linear weights in all. K+V of one token in one layer: 2 x 32 dims x 2 bytes = 128 bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import CapacityError
from llmsim.hardware.perf_model import EAGER_LAUNCH_PER_LAYER_S, KERNEL_FLOOR_S, BatchShape, PerformanceModel
from llmsim.hardware.platform import NON_TORCH_BYTES, plan_memory
from llmsim.hardware.spec import GIB, ComputeDevice, Efficiency, HardwareConfig, Interconnect
from llmsim.models import ModelProfile, builtin_model_profiles

CONF = Path(__file__).resolve().parent.parent / "conf"

LINEAR_PARAMS = 8192 + 4096 + 24576  # per layer
HEAD_PARAMS = 100 * 64
KV_BYTES_LAYER = 128  # per token, bf16
ATTN_FLOPS_PER_PAIR = 4 * 4 * 16  # QK^T and PV: 2 matmuls x 2 flops x heads x head_dim
# fused elementwise traffic per token (bf16): two add+RMSNorm kernels (4h each) and the SwiGLU activation
NORM_BYTES_PER_TOKEN = 2 * 2 * 4 * 64  # 1024
ACTIVATION_BYTES_PER_TOKEN = 2 * 3 * 128  # 768
ELEMENTWISE_BYTES_PER_TOKEN = NORM_BYTES_PER_TOKEN + ACTIVATION_BYTES_PER_TOKEN  # 1792


def tiny_model(**overrides) -> ModelProfile:
    fields = {
        "name": "tiny",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 100,
        "max_position_embeddings": 1024,
    }
    fields.update(overrides)
    return ModelProfile(**fields)


def device(tflops: float = 100.0, gbps: float = 1000.0, capacity: float = 80 * GIB) -> ComputeDevice:
    return ComputeDevice(name="made-up", peak_tflops={"bf16": tflops}, memory_gbps=gbps, memory_capacity_bytes=capacity)


EFF = Efficiency(
    gemm_flops=1.0,
    gemm_half_tokens=10,
    attention_flops=1.0,
    hbm_bandwidth=1.0,
)
LINK = Interconnect(bandwidth_gbps=100.0, allreduce_efficiency=0.5, latency_s=1e-5)


def perf(tp: int = 1, dev: ComputeDevice | None = None, model: ModelProfile | None = None) -> PerformanceModel:
    return PerformanceModel(model or tiny_model(), dev or device(), EFF, LINK, tensor_parallel_size=tp)


def mixed_batch(pm: PerformanceModel) -> BatchShape:
    """A 6-token prefill chunk on 4 cached tokens (not sampling yet) and decodes at contexts 10 and 20."""
    batch = pm.new_batch()
    batch.add_prefill(6, 4, samples_token=False)
    batch.add_decode(10)
    batch.add_decode(20)
    return batch


# ------------------------------------------------------------------------------------------------
# BatchShape
# ------------------------------------------------------------------------------------------------
def test_batch_shape_aggregates_prefill_chunks_and_decodes():
    batch = BatchShape()
    batch.add_prefill(6, 4, samples_token=False)  # pairs 6 x (4 + 7/2) = 45
    batch.add_prefill(3, 0, samples_token=True)  # pairs 3 x (0 + 4/2) = 6
    batch.add_decode(10)
    batch.add_decode(20)
    assert batch.prefill_tokens == 9
    assert batch.prefill_attn_pairs == 51.0
    assert batch.prefill_kv_tokens == (4 + 6) + (0 + 3)
    assert batch.decode_seqs == 2
    assert batch.decode_kv_tokens == 30
    assert batch.logits_rows == 3  # the sampling prefill and both decodes
    assert batch.num_tokens == 11


def test_prefill_attention_pairs_count_causal_query_key_pairs():
    batch = BatchShape()
    n, c = 5, 7
    batch.add_prefill(n, c, samples_token=False)
    # query i (1-based) sees the c cached keys and the first i new ones
    assert batch.prefill_attn_pairs == sum(c + i for i in range(1, n + 1))


def test_sliding_window_caps_the_context_attention_reads():
    batch = BatchShape(window=8)
    batch.add_prefill(4, 20, samples_token=False)
    batch.add_decode(100)
    # full-attention aggregates see everything; windowed ones see at most 8 keys per query
    assert batch.prefill_attn_pairs == 4 * (20 + 2.5)
    assert batch.windowed_prefill_attn_pairs == 4 * 8
    assert batch.windowed_prefill_kv_tokens == 8 + 4
    assert batch.windowed_decode_kv_tokens == 8
    assert batch.decode_kv_tokens == 100


def test_window_only_caps_queries_whose_context_exceeds_it():
    batch = BatchShape(window=8)
    batch.add_prefill(6, 4, samples_token=False)  # queries see 5, 6, 7, 8, 8, 8 keys
    assert batch.windowed_prefill_attn_pairs == 5 + 6 + 7 + 8 + 8 + 8
    assert batch.prefill_attn_pairs == sum(4 + i for i in range(1, 7))


def test_new_batch_tracks_the_window_and_layer_groups_split_windowed_layers():
    assert perf(model=tiny_model(sliding_window=32)).new_batch().window == 32
    assert perf().new_batch().window is None
    groups = perf(model=tiny_model(sliding_window=32, sliding_window_layers=1)).layer_groups
    assert sorted((count, kind.windowed) for count, kind in groups) == [(1, False), (1, True)]


# ------------------------------------------------------------------------------------------------
# one layer and one step, by hand
# ------------------------------------------------------------------------------------------------
def test_layer_flops_are_two_per_weight_per_token_plus_attention_pairs():
    pm = perf()
    cost = pm.layer_cost(mixed_batch(pm))
    tokens = 6 + 2
    linear = 2 * tokens * LINEAR_PARAMS  # 589824
    attention = ATTN_FLOPS_PER_PAIR * (6 * (4 + 3.5)) + ATTN_FLOPS_PER_PAIR * (10 + 20)  # 11520 + 7680
    assert cost.flops == linear + attention == 609024


def test_layer_bytes_are_weights_once_plus_kv_reads_plus_activations():
    pm = perf()
    cost = pm.layer_cost(mixed_batch(pm))
    weights = LINEAR_PARAMS * 2  # bf16, read once whatever the batch: 73728
    kv_reads = (4 + 6) * KV_BYTES_LAYER + (10 + 20) * KV_BYTES_LAYER
    activations = 8 * (ELEMENTWISE_BYTES_PER_TOKEN + KV_BYTES_LAYER)  # incl. writing each token's K and V
    assert cost.bytes == weights + kv_reads + activations == 94208


def test_step_cost_multiplies_one_layer_by_the_layers_and_adds_the_lm_head_on_logits_rows_only():
    pm = perf()
    batch = mixed_batch(pm)  # logits_rows = 2 (the prefill chunk does not sample)
    layer = pm.layer_cost(batch)
    step = pm.step_cost(batch)
    assert step.flops == 2 * layer.flops + 2 * 2 * HEAD_PARAMS
    assert step.bytes == 2 * layer.bytes + HEAD_PARAMS * 2
    assert step.comm_s == 0.0

    prefill_only = pm.new_batch()
    prefill_only.add_prefill(6, 4, samples_token=False)
    no_head = pm.step_cost(prefill_only)
    assert no_head.flops == 2 * pm.layer_cost(prefill_only).flops
    assert no_head.bytes == 2 * pm.layer_cost(prefill_only).bytes


def test_tiny_operators_each_cost_the_kernel_floor():
    pm = perf()  # 100 TFLOPS and 1000 GB/s: every tiny operator is far below the floor
    step = pm.step_cost(mixed_batch(pm))
    # QKV, O, MLP, prefill attention, decode attention, two norms kernel, activation, KV write
    per_layer = 8 * KERNEL_FLOOR_S
    # the batch has prefill work: it runs outside CUDA graphs and pays the launches of every layer
    assert step.time_s == pytest.approx(2 * per_layer + KERNEL_FLOOR_S + 2 * EAGER_LAUNCH_PER_LAYER_S)
    decode_only = pm.new_batch()
    decode_only.add_decode(10)
    assert pm.step_cost(decode_only).time_s == pytest.approx(2 * 7 * KERNEL_FLOOR_S + KERNEL_FLOOR_S)


def test_step_time_is_the_roofline_of_each_operator_on_a_slow_device():
    # 1 GFLOP/s and 1 GB/s; 10 decodes at context 100: GEMMs run at 10 / (10 + 10) = half of peak
    pm = perf(dev=device(tflops=1e-3, gbps=1.0))
    batch = pm.new_batch()
    for _ in range(10):
        batch.add_decode(100)
    qkv = 2 * 10 * 8192 / 0.5e9  # compute 3.2768e-4 s > weights 16384 B / 1e9 B/s
    o = 2 * 10 * 4096 / 0.5e9
    mlp = 2 * 10 * 24576 / 0.5e9
    attention = max(ATTN_FLOPS_PER_PAIR * 1000 / 1e9, 1000 * KV_BYTES_LAYER / 1e9)  # 2.56e-4 vs 1.28e-4
    elementwise = (
        10 * NORM_BYTES_PER_TOKEN / 1e9
        + 10 * ACTIVATION_BYTES_PER_TOKEN / 1e9
        + max(10 * KV_BYTES_LAYER / 1e9, KERNEL_FLOOR_S)
    )
    layer = qkv + o + mlp + attention + elementwise
    head = 2 * 10 * HEAD_PARAMS / 0.5e9
    cost = pm.layer_cost(batch)
    assert cost.time_s == pytest.approx(layer)
    assert cost.compute_s == pytest.approx(qkv + o + mlp + attention)
    assert cost.memory_s == pytest.approx(elementwise)
    assert pm.step_cost(batch).time_s == pytest.approx(2 * layer + head)
    assert pm.step_time(batch) == pytest.approx(2 * layer + head)


def test_empty_batch_takes_no_time():
    pm = perf()
    assert pm.step_time(pm.new_batch()) == 0.0


def test_linear_layer_limited_by_compute_counts_toward_compute_s():
    # 1 GFLOP/s, 0.1 GB/s; 5 tokens: GEMM efficiency 5 / (5 + 10) = 1/3 of peak
    pm = perf(dev=device(tflops=1e-3, gbps=0.1))
    batch = pm.new_batch()
    batch.add_prefill(5, 0, samples_token=False)
    # QKV: compute 2*5*8192 / (1e9/3) = 2.46e-4 s, weight reads 16384 B / 1e8 B/s = 1.64e-4 s: compute wins
    qkv_compute = 2 * 5 * 8192 / (1e9 / 3)
    assert qkv_compute > 8192 * 2 / 1e8
    o_compute = 2 * 5 * 4096 / (1e9 / 3)
    mlp_compute = 2 * 5 * 24576 / (1e9 / 3)
    cost = pm.layer_cost(batch)
    assert cost.compute_s >= qkv_compute + o_compute + mlp_compute


# ------------------------------------------------------------------------------------------------
# tensor parallelism
# ------------------------------------------------------------------------------------------------
def test_allreduce_time_is_latency_plus_ring_bandwidth_term():
    nbytes = 1e6
    bus = 100e9 * 0.5
    assert perf(tp=2).allreduce_time(nbytes) == pytest.approx(1e-5 + nbytes * 2 * 1 / 2 / bus)  # 3e-5
    assert perf(tp=4).allreduce_time(nbytes) == pytest.approx(1e-5 + nbytes * 2 * 3 / 4 / bus)  # 4e-5
    assert perf(tp=2).allreduce_time(nbytes) == pytest.approx(3e-5)


def test_allreduce_costs_nothing_without_tensor_parallelism():
    assert perf(tp=1).allreduce_time(1e9) == 0.0
    assert perf(tp=2).allreduce_time(0) == 0.0


def test_step_adds_two_allreduces_of_the_hidden_states_per_layer():
    pm = perf(tp=2)
    batch = mixed_batch(pm)
    hidden_bytes = 8 * 64 * 2
    assert pm.step_cost(batch).comm_s == pytest.approx(2 * 2 * pm.allreduce_time(hidden_bytes))
    assert perf(tp=1).step_cost(mixed_batch(perf(tp=1))).comm_s == 0.0


def test_tensor_parallel_two_halves_the_weight_bytes_per_gpu():
    # a batch with no attention reads, so the layer's bytes are weights plus activations
    one, two = perf(tp=1), perf(tp=2)
    batch = BatchShape()
    batch.add_prefill(1, 0, samples_token=False)
    activations_tp1 = 1 * (ELEMENTWISE_BYTES_PER_TOKEN + KV_BYTES_LAYER)
    # tp=2: the norms see the whole hidden state; half the MLP activation, half the KV write
    activations_tp2 = NORM_BYTES_PER_TOKEN + ACTIVATION_BYTES_PER_TOKEN / 2 + KV_BYTES_LAYER / 2
    kv_read = KV_BYTES_LAYER  # the token's own key and value
    weights_tp1 = one.layer_cost(batch).bytes - activations_tp1 - kv_read
    weights_tp2 = two.layer_cost(batch).bytes - activations_tp2 - kv_read / 2
    assert weights_tp1 == LINEAR_PARAMS * 2
    assert weights_tp2 == weights_tp1 / 2
    # and the LM head is split too
    assert two.step_cost(mixed_batch(two)).flops == pytest.approx(one.step_cost(mixed_batch(one)).flops / 2)


# ------------------------------------------------------------------------------------------------
# plausibility on a real GPU and model
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def a100_llama3_8b() -> PerformanceModel:
    hardware = HardwareConfig.model_validate(yaml.safe_load((CONF / "hardware" / "a100.yaml").read_text()))
    model = builtin_model_profiles()["llama3_8b"]
    return PerformanceModel(model, hardware.gpu, hardware.efficiency, hardware.interconnect, 1, "bf16", "bf16")


def decode_step(pm: PerformanceModel, batch_size: int, context: int = 512) -> float:
    batch = pm.new_batch()
    for _ in range(batch_size):
        batch.add_decode(context)
    return pm.step_time(batch)


def test_batch_one_decode_on_a100_takes_about_the_time_to_stream_the_weights(a100_llama3_8b):
    # about 16 GB of bf16 weights at about 2 TB/s
    assert 7.5e-3 <= decode_step(a100_llama3_8b, 1) <= 11e-3


def test_decode_step_time_grows_sub_linearly_with_batch(a100_llama3_8b):
    one = decode_step(a100_llama3_8b, 1)
    sixty_four = decode_step(a100_llama3_8b, 64)
    assert one < sixty_four < 4 * one
    steps = [decode_step(a100_llama3_8b, b) for b in (1, 2, 8, 32, 64, 128)]
    assert steps == sorted(steps)


def test_long_prefill_on_a100_is_compute_bound(a100_llama3_8b):
    batch = a100_llama3_8b.new_batch()
    batch.add_prefill(2048, 0, samples_token=True)
    cost = a100_llama3_8b.step_cost(batch)
    assert cost.compute_s > cost.memory_s
    # about 2 x 8e9 x 2048 = 33 TFLOP at a few hundred TFLOPS: tens to a few hundred ms
    assert 0.05 < cost.time_s < 0.3


# ------------------------------------------------------------------------------------------------
# memory plan
# ------------------------------------------------------------------------------------------------
def test_plan_memory_splits_the_gpu_into_weights_workspace_and_kv_blocks():
    model = tiny_model()
    plan = plan_memory(
        model,
        device(capacity=2 * GIB),
        dtype="bf16",
        kv_dtype="bf16",
        tp=1,
        utilisation=0.75,
        block_size=16,
        max_batched_tokens=100,
        max_seqs=10,
        num_gpus_in_node=1,
    )
    usable = 0.75 * 2 * GIB  # 1610612736
    # 2 layers x 36864 + embeddings 2 x 6400 + norms 2 x 2 x 64 + 64 = 86848 weights, bf16
    weights = 86848 * 2
    # per token: 2 bytes x (4 x 64 hidden + 128 QKV + 2 x 128 MLP); logits 4 bytes x 10 rows x 100
    workspace = 100 * 2 * (4 * 64 + 128 + 2 * 128) + 4 * 10 * 100 + NON_TORCH_BYTES
    kv_per_block = 2 * KV_BYTES_LAYER * 16  # two layers, 16 tokens
    assert plan.usable == usable
    assert plan.weights == weights
    assert plan.workspace == workspace
    assert plan.kv_cache == usable - weights - workspace
    assert kv_per_block == 4096
    assert plan.num_blocks == (1610612736 - 173696 - 1073873824) // kv_per_block == 130997
    assert plan.kv_capacity_tokens == 130997 * 16


def test_model_that_does_not_fit_raises_capacity_error_naming_a_tensor_parallel_size_that_fits():
    hardware = HardwareConfig.model_validate(yaml.safe_load((CONF / "hardware" / "a100.yaml").read_text()))
    model = builtin_model_profiles()["llama3_70b"]
    kwargs = {
        "dtype": "bf16",
        "kv_dtype": "bf16",
        "utilisation": 0.9,
        "block_size": 16,
        "max_batched_tokens": 2048,
        "max_seqs": 256,
        "num_gpus_in_node": 8,
    }
    with pytest.raises(CapacityError) as info:
        plan_memory(model, hardware.gpu, tp=1, **kwargs)
    message = str(info.value)
    assert message.startswith("framework.tensor_parallel_size=1")
    suggested = int(re.search(r"tensor_parallel_size=(\d+) would fit", message).group(1))
    assert suggested > 1
    assert plan_memory(model, hardware.gpu, tp=suggested, **kwargs).num_blocks > 0


def test_capacity_error_says_when_the_fitting_size_exceeds_the_node():
    with pytest.raises(CapacityError, match=r"tensor_parallel_size=2 would fit but the node has only 1 GPUs"):
        plan_memory(
            builtin_model_profiles()["llama3_70b"],
            device(capacity=80 * GIB),
            dtype="bf16",
            kv_dtype="bf16",
            tp=1,
            utilisation=0.9,
            block_size=16,
            max_batched_tokens=2048,
            max_seqs=256,
            num_gpus_in_node=1,
        )


def test_tensor_parallel_size_named_by_capacity_error_really_fits():
    model = builtin_model_profiles()["llama3_8b"]
    weights_tp2 = model.total_params * 2 / 2
    # room for tp=2 weights plus 1.1 GiB: more than NON_TORCH_BYTES, less than the workspace (about 1.2 GiB)
    gpu = device(capacity=(weights_tp2 + 1.1 * GIB) / 0.9)
    kwargs = {
        "dtype": "bf16",
        "kv_dtype": "bf16",
        "utilisation": 0.9,
        "block_size": 16,
        "max_batched_tokens": 2048,
        "max_seqs": 256,
        "num_gpus_in_node": 8,
    }
    with pytest.raises(CapacityError) as info:
        plan_memory(model, gpu, tp=1, **kwargs)
    suggested = int(re.search(r"tensor_parallel_size=(\d+) would fit", str(info.value)).group(1))
    assert plan_memory(model, gpu, tp=suggested, **kwargs).num_blocks > 0


# ------------------------------------------------------------------------------------------------
# the time-only path schedulers use is the full cost model's time, to the bit
# ------------------------------------------------------------------------------------------------
_H100 = HardwareConfig.model_validate(yaml.safe_load((CONF / "hardware" / "h100.yaml").read_text()))
_PRICED = {
    # dense, sliding-window (Gemma-2, gpt-oss), MoE and MLA models, with and without tensor parallelism
    (name, tp): PerformanceModel(
        builtin_model_profiles()[name], _H100.gpu, _H100.efficiency, _H100.interconnect, tp, "bf16", "bf16"
    )
    for name, tp in [("llama3_8b", 1), ("llama3_70b", 4), ("gemma2_9b", 1), ("gpt_oss_120b", 2), ("deepseek_v3", 8)]
}


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(sorted(_PRICED)),
    chunks=st.lists(st.tuples(st.integers(1, 9000), st.integers(0, 40_000), st.booleans()), min_size=1, max_size=4),
    decodes=st.lists(st.integers(1, 130_000), max_size=40),
)
def test_step_time_is_the_cost_models_time_to_the_bit(key, chunks, decodes):
    pm = _PRICED[key]
    batch = pm.new_batch()
    for new, context, samples in chunks:
        batch.add_prefill(new, context, samples)
    for context in decodes:
        batch.add_decode(context)
    assert pm.step_time(batch) == pm.step_cost(batch).time_s
