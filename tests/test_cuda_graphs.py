"""CUDA graphs: decode batches padded to the captured sizes, eager steps beyond them (vLLM 0.33,
SGLang 0.5.6, TensorRT-LLM 1.x PyTorch backend)."""

from __future__ import annotations

import pytest
from conftest import conf_file, make_config
from scenario import framework_for

from llmsim.frameworks.cuda_graphs import (
    trtllm_capture_sizes,
    vllm_v0_graphs,
    vllm_v1_capture_sizes,
    vllm_v1_graphs,
)
from llmsim.frameworks.sglang import sglang_capture_sizes
from llmsim.hardware.perf_model import EAGER_LAUNCH_PER_LAYER_S, PIECEWISE_LAUNCH_PER_LAYER_S, CudaGraphs

LAYERS = 32  # Llama-3-8B


def test_vllm_captures_1_2_4_then_steps_of_8_to_256_then_steps_of_16_to_twice_max_num_seqs():
    sizes = vllm_v1_capture_sizes(max_num_seqs=256, max_num_batched_tokens=8192)
    assert sizes[:5] == (1, 2, 4, 8, 16)
    assert sizes[sizes.index(248) + 1 : sizes.index(248) + 4] == (256, 272, 288)
    assert sizes[-1] == 512  # min(2 x 256, 512)
    assert len(sizes) == 3 + 31 + 17


def test_the_capture_ceiling_is_512_or_1024_on_blackwell_and_never_above_the_token_budget():
    assert vllm_v1_capture_sizes(1024, 8192)[-1] == 512
    assert vllm_v1_capture_sizes(1024, 8192, blackwell=True)[-1] == 1024
    assert vllm_v1_capture_sizes(1024, 300)[-1] == 300  # the budget itself is captured
    assert vllm_v1_capture_sizes(4, 2048) == (1, 2, 4, 8)  # 2 x 4 = 8


def test_a_decode_batch_of_257_is_priced_as_a_batch_of_272():
    graphs = vllm_v1_graphs(256, 8192)
    assert graphs.decode(257) == (272, 0.0)
    assert graphs.decode(256) == (256, 0.0)
    framework = framework_for(make_config(hardware="h100", framework={"max_num_seqs": 256}))
    pm = framework.perf_model
    assert pm.decode_step_time(257, 257 * 1000, 257 * 1000) == pytest.approx(
        pm.decode_step_time(272, 257 * 1000, 257 * 1000)
    )
    assert pm.decode_step_time(257, 257 * 1000, 257 * 1000) > pm.decode_step_time(256, 257 * 1000, 257 * 1000)


def test_a_decode_batch_above_the_largest_graph_runs_eager_and_pays_its_launches():
    graphs = vllm_v1_graphs(1024, 8192)  # captures up to 512
    assert graphs.decode(600) == (600, EAGER_LAUNCH_PER_LAYER_S)
    framework = framework_for(make_config(hardware="h100", framework={"max_num_seqs": 1024}))
    pm = framework.perf_model
    eager = pm.decode_step_time(600, 600 * 100, 600 * 100)
    pm.cuda_graphs = CudaGraphs()  # as if 600 had its own graph
    assert eager - pm.decode_step_time(600, 600 * 100, 600 * 100) == pytest.approx(EAGER_LAUNCH_PER_LAYER_S * LAYERS)


def test_mixed_steps_up_to_the_largest_graph_run_piecewise_and_larger_ones_eager():
    graphs = vllm_v1_graphs(256, 8192)
    assert graphs.mixed(300) == (304, PIECEWISE_LAUNCH_PER_LAYER_S)
    assert graphs.mixed(2048) == (2048, EAGER_LAUNCH_PER_LAYER_S)
    framework = framework_for(make_config(hardware="h100", framework={"max_num_seqs": 256}))
    pm = framework.perf_model
    small = pm.new_batch()
    small.add_prefill(300, 0, samples_token=True)
    padded = pm.new_batch()
    padded.add_prefill(300, 0, samples_token=True)
    padded.prefill_tokens += 4  # four padding tokens through the linear layers, attending to nothing
    pm_graph_free = framework_for(make_config(hardware="h100", framework={"enforce_eager": True})).perf_model
    expected = pm_graph_free.step_cost(padded).time_s - (EAGER_LAUNCH_PER_LAYER_S - PIECEWISE_LAUNCH_PER_LAYER_S) * 32
    assert pm.step_time(small) == pytest.approx(expected)


def test_enforce_eager_captures_nothing():
    framework = framework_for(make_config(framework={"enforce_eager": True}))
    assert framework.perf_model.cuda_graphs.decode(8) == (8, EAGER_LAUNCH_PER_LAYER_S)
    assert framework.describe()["cuda_graph_max_batch"] == 0


def test_vllm_v0_pads_decode_to_multiples_of_8_up_to_256_and_never_graphs_prefill():
    graphs = vllm_v0_graphs(256)
    assert graphs.decode(3) == (4, 0.0)
    assert graphs.decode(250) == (256, 0.0)
    assert graphs.decode(300)[1] == EAGER_LAUNCH_PER_LAYER_S
    assert graphs.mixed(100) == (100, EAGER_LAUNCH_PER_LAYER_S)
    assert vllm_v0_graphs(20).decode_sizes[-1] == 24  # up to max_num_seqs padded to a capture size


def test_sglang_pads_decode_batches_to_its_capture_list_and_runs_larger_ones_eager():
    assert sglang_capture_sizes(256)[:7] == (1, 2, 4, 8, 12, 16, 24)
    assert sglang_capture_sizes(512)[-3:] == (480, 496, 512)
    framework = framework_for(make_config(hardware="h100") | {"framework": conf_file("framework", "sglang")})
    graphs = framework.perf_model.cuda_graphs  # one H100: cuda_graph_max_bs 256
    assert graphs.decode(13) == (16, 0.0)
    assert graphs.decode(300) == (300, EAGER_LAUNCH_PER_LAYER_S)
    assert graphs.mixed(100) == (100, EAGER_LAUNCH_PER_LAYER_S)  # extend batches never replay graphs


def test_tensorrt_llm_pytorch_backend_graphs_exact_sizes_unless_trtllm_bench_turns_padding_on():
    assert trtllm_capture_sizes(128, enable_padding=False) == (*range(1, 32), 32, 64, 128)
    assert trtllm_capture_sizes(128, enable_padding=True) == (1, 2, 4, *range(8, 129, 8))
    assert trtllm_capture_sizes(2048, enable_padding=True)[-4:] == (256, 512, 1024, 2048)
    served = {"rate": 1, "total_duration": 2}
    api = framework_for(make_config(hardware="h100", workload=served) | {"framework": conf_file("framework", "trtllm")})
    assert api.perf_model.cuda_graphs.decode(33) == (33, EAGER_LAUNCH_PER_LAYER_S)  # 33 is not captured
    bench = framework_for(make_config(hardware="h100") | {"framework": conf_file("framework", "trtllm")})
    assert bench.settings_from == "trtllm-bench"
    assert bench.perf_model.cuda_graphs.decode(33) == (40, 0.0)
    old = framework_for(
        make_config(hardware="h100") | {"framework": {**conf_file("framework", "trtllm"), "version": "0.17.0"}}
    )
    assert old.config.backend == "tensorrt"
    assert old.perf_model.cuda_graphs.decode(33) == (33, 0.0)  # a TensorRT engine: no padding modelled
