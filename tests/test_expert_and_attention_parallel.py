"""Expert parallelism and attention data parallelism: step costs and memory on hand-computable batches."""

from __future__ import annotations

import math

import pytest
from conftest import conf_file, make_config
from scenario import framework_for
from test_perf_model import EFF, LINK, device, tiny_model

from llmsim.errors import ConfigError
from llmsim.hardware.perf_model import KERNEL_FLOOR_S, PerformanceModel, expert_rank_rows
from llmsim.hardware.platform import weights_per_gpu
from llmsim.models import DTYPE_BYTES, builtin_model_profiles

MOE = {"num_local_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 128}


def perf(tp: int = 8, dp: int = 1, ep: int = 1, **model) -> PerformanceModel:
    profile = tiny_model(num_attention_heads=8, num_key_value_heads=8, **model)
    return PerformanceModel(profile, device(), EFF, LINK, tensor_parallel_size=tp, attention_dp=dp, expert_parallel=ep)


def decodes(pm: PerformanceModel, seqs: int, context: int):
    batch = pm.new_batch()
    for _ in range(seqs):
        batch.add_decode(context)
    return batch


def test_the_busiest_expert_rank_carries_the_mean_plus_the_spread_of_random_routing():
    assert expert_rank_rows(800, 1) == 800
    # 800 token-expert pairs over 8 ranks: 100 each on average, sd sqrt(800 x 1/8 x 7/8) = 9.35
    assert expert_rank_rows(800, 8) == pytest.approx(100 + math.sqrt(2 * math.log(8) * 100 * 7 / 8))
    assert expert_rank_rows(3, 8) <= 3  # never more than there are


def test_each_attention_dp_rank_reads_only_its_own_requests_kv():
    tp_only, dp = perf(dp=1), perf(dp=8)
    batch = decodes(tp_only, 64, 4000)
    # attention heads: 8 over 8 GPUs (TP) or all 8 on each of 8 ranks holding 1/8 of the requests: the same
    # FLOPs per GPU, and with one KV head per GPU under TP the same bytes too
    tp_attention = tp_only._attention(tp_only.attn_flops_per_pair * 64 * 4000, 64 * 4000)
    dp_attention = dp._attention(dp.attn_flops_per_pair * 64 * 4000, 64 * 4000)
    assert dp_attention[1] == pytest.approx(tp_attention[1])
    assert dp_attention[2] == pytest.approx(tp_attention[2])
    assert dp.rank_tokens(batch.num_tokens) == 8  # 64 decodes over 8 ranks


def test_mla_attention_data_parallel_reads_an_eighth_of_the_replicated_latent():
    deepseek = builtin_model_profiles()["deepseek_v3"]
    tp = PerformanceModel(deepseek, device(), EFF, LINK, tensor_parallel_size=8)
    dp = PerformanceModel(deepseek, device(), EFF, LINK, tensor_parallel_size=8, attention_dp=8)
    kv = 64 * 4000
    # MLA's latent is not split by heads: under TP every GPU reads all of it, a DP rank only its own
    assert dp._attention(0.0, kv)[2] == pytest.approx(tp._attention(0.0, kv)[2] / 8)


def test_expert_parallel_moe_layer_dispatches_and_combines_tokens_whose_experts_live_elsewhere():
    pm = perf(dp=8, ep=8, **MOE)
    tokens = 64
    # each GPU (a DP rank of one GPU) has 8 tokens; each goes to 2 experts, 7/8 of them on other GPUs
    sent = 8 * 2 * 7 / 8 * 64 * 2  # tokens x k x remote share x hidden x bf16 bytes
    one = LINK.latency_s + sent / (LINK.bandwidth_gbps * 1e9 * LINK.allreduce_efficiency)
    assert pm.all_to_all_time(sent) == pytest.approx(one)
    # two MoE layers (every layer), dispatch + combine each; attention ranks of one GPU all-reduce nothing
    assert pm.communication_time(tokens) == pytest.approx(2 * 2 * one)


def test_without_dp_or_ep_the_collectives_are_two_all_reduces_per_layer():
    pm = perf(**MOE)
    assert pm.communication_time(64) == pytest.approx(2 * 2 * pm.allreduce_time(64 * 64 * 2))


def test_expert_parallel_gemm_runs_the_busiest_ranks_rows_on_whole_experts():
    tp, ep = perf(**MOE), perf(ep=8, **MOE)
    tokens = 512
    tp_terms, ep_terms = tp._token_terms(tokens, tp.layer_groups[0][1]), ep._token_terms(tokens, ep.layer_groups[0][1])
    # expert GEMM (after the attention projections and the router): TP slices every expert 8 ways and runs
    # all 1024 rows; EP runs whole experts on the busiest rank's rows
    projections = len(tiny_model().attention_projections)
    tp_flops, ep_flops = tp_terms.linear[projections + 1][1], ep_terms.linear[projections + 1][1]
    expert = 3 * 64 * 128
    assert tp_flops == pytest.approx(2 * tokens * 2 * expert / 8)
    assert ep_flops == pytest.approx(2 * expert_rank_rows(tokens * 2, 8) * expert)
    assert ep_flops > tp_flops  # imbalance: the busiest rank does more than an even share


def test_attention_dp_replicates_all_but_the_routed_experts():
    deepseek = builtin_model_profiles()["deepseek_v3"]
    routed = deepseek.routed_expert_params * DTYPE_BYTES["fp8"]
    rest = deepseek.weight_bytes("fp8") - routed
    assert weights_per_gpu(deepseek, "fp8", 8, attention_dp=8) == pytest.approx(rest + routed / 8)
    assert weights_per_gpu(deepseek, "fp8", 8) == pytest.approx((rest + routed) / 8)


def trt(model: str = "deepseek_v3", hardware: str = "h200", **knobs):
    """A set-up TensorRT-LLM engine (LLM-API defaults) of ``model``."""
    config = make_config(hardware=hardware, model=model)
    config["framework"] = {**conf_file("framework", "trtllm"), "settings_from": "llm_api", **knobs}
    return framework_for(config)


def test_dp_attention_ranks_add_up_their_kv_blocks_and_scheduler_limits():
    plain = trt(tensor_parallel_size=8, dtype="fp8")
    dp = trt(tensor_parallel_size=8, dtype="fp8", enable_attention_dp=True, moe_expert_parallel_size=8)
    assert (dp.attention_dp, dp.expert_parallel) == (8, 8)
    assert dp.max_batch_size == 8 * plain.max_batch_size  # every rank schedules up to max_batch_size
    # MLA's latent is replicated under TP: eight ranks hold several times the tokens (less the
    # replicated attention weights they each keep)
    assert 4 * plain.memory_plan.num_blocks < dp.memory_plan.num_blocks < 8 * plain.memory_plan.num_blocks


def test_parallel_sizes_that_do_not_divide_the_gpus_are_refused():
    with pytest.raises(ConfigError, match="moe_expert_parallel_size"):
        trt(model="mixtral_8x7b", hardware="h100", tensor_parallel_size=4, moe_expert_parallel_size=3)


def test_kernel_floor_still_bounds_a_tiny_rank_share():
    pm = perf(dp=8)
    assert pm._attention(1.0, 1.0)[0] == KERNEL_FLOOR_S
