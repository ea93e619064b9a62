"""trtllm-bench's settings: ``max_batch_size`` and ``max_num_tokens`` from the dataset's lengths.

``trtllm-bench throughput`` (NVIDIA/TensorRT-LLM ``tensorrt_llm/bench/benchmark/throughput.py``, read
at commit 000a01de, version 1.0.0rc4) reads the dataset first and, unless both limits are given,
asks ``get_settings`` (``bench/benchmark/utils/general.py``) for them. That calls
``get_benchmark_engine_settings`` (``bench/build/build.py``) -> ``calc_engine_setting`` and
``finetune_setting`` (``bench/build/tuning.py``, commit 04cba882) with the dataset's average input
and output lengths and ``--kv_cache_free_gpu_mem_fraction`` (default 0.90). The same heuristic sizes
engines in ``trtllm-bench build --dataset`` (fraction 0.95 there). This module re-derives it:

1. KV bytes per token (GiB) = 2 x attention layers x max(tp, KV heads) x head size x KV bytes per
   element (2, 1 for FP8, 0.5 for NVFP4); weights (GiB) = parameters x weight bytes per element;
2. the memory for the cache = (GPU memory x tp x pp - weights) x fraction; requests that fit it
   = cache / (KV bytes per token x (ISL + OSL));
3. ``finetune_setting``: raw batch = min(requests, 4096) / pp and raw tokens = min(raw batch x
   (1 + ISL / OSL), 32768), then rounded up optimistically: batch to a multiple of 32 (at least 64)
   below 256, of 128 below 1024, else of 256; tokens to a multiple of 256 (at least 2048) below
   4096, of 512 below 8192, else of 1024;
4. without chunked prefill, ``get_settings`` raises ``max_num_tokens`` to
   ``max ISL + max_batch_size`` so the longest prompt (and a decode token for every other request)
   fits one iteration.

The real tool reads GPU memory from NVML (``bench/build/utils.py get_device_memory``: total
memory in GiB); here it is the device's ``memory_capacity_bytes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmsim.distributions import Constant, Distribution, Uniform
from llmsim.hardware.spec import GIB

if TYPE_CHECKING:
    from llmsim.config import WorkloadConfig

#: bytes per element by dtype (``tuning.py BYTES_PER_ELEM``: no quantisation 2, FP8 1, NVFP4 0.5;
#: anything else counts as 2, as ``BYTES_PER_ELEM.get(..., 2)`` does)
BYTES_PER_ELEMENT: dict[str, float] = {"fp8": 1.0, "fp4": 0.5}
#: ``finetune_setting`` caps: the decoder buffers' batch and the activation buffers' tokens
MAX_RAW_BATCH = 4096
MAX_RAW_TOKENS = 32768


@dataclass(frozen=True)
class DatasetLengths:
    """What trtllm-bench reads from its dataset: mean input and output lengths and the longest input."""

    avg_isl: float
    avg_osl: float
    max_isl: int


@dataclass(frozen=True)
class BenchSettings:
    """``calc_engine_setting``'s result with the intermediate figures (GiB as the tool logs them)."""

    max_batch_size: int
    max_num_tokens: int
    kv_cache_max_requests: float
    cache_memory_gib: float


def bytes_per_element(dtype: str) -> float:
    """``BYTES_PER_ELEM`` of a weight or KV dtype (2 unless FP8 or FP4)."""
    return BYTES_PER_ELEMENT.get(dtype, 2.0)


def finetune_setting(kv_cache_max_requests: float, input_len: float, output_len: float, pp: int = 1) -> tuple[int, int]:
    """``tuning.py finetune_setting`` with optimistic tuning (every non-hybrid model): (batch, tokens)."""
    raw_bs = min(kv_cache_max_requests, MAX_RAW_BATCH) / pp
    raw_tokens = min(raw_bs * (1 + input_len / output_len), MAX_RAW_TOKENS)
    if raw_bs < 256:
        max_bs = max(64, 32 * math.ceil(raw_bs / 32))
    elif raw_bs < 1024:
        max_bs = 128 * math.ceil(raw_bs / 128)
    else:
        max_bs = 256 * math.ceil(raw_bs / 256)
    if raw_tokens < 4096:
        max_tokens = max(2048, 256 * math.ceil(raw_tokens / 256))
    elif raw_tokens < 8192:
        max_tokens = 512 * math.ceil(raw_tokens / 512)
    else:
        max_tokens = 1024 * math.ceil(raw_tokens / 1024)
    return max_bs, max_tokens


def calc_engine_setting(
    *,
    gpu_memory_bytes: float,
    param_count: int,
    weight_dtype: str,
    kv_dtype: str,
    num_attention_layers: int,
    num_kv_heads: int,
    head_size: int,
    tp: int,
    pp: int,
    target_input_len: float,
    target_output_len: float,
    kv_cache_gpu_mem_fraction: float,
) -> BenchSettings:
    """``tuning.py calc_engine_setting`` for a dense or MoE attention model; ValueError where it raises."""
    kv_heads = max(tp, num_kv_heads)  # every GPU of the TP group holds at least one KV head
    gib_per_token = 2 * num_attention_layers * kv_heads * head_size * bytes_per_element(kv_dtype) / GIB
    engine_gib = param_count * bytes_per_element(weight_dtype) / GIB
    total_gib = gpu_memory_bytes / GIB * tp * pp
    cache_gib = (total_gib - engine_gib) * kv_cache_gpu_mem_fraction
    requests = cache_gib / (gib_per_token * (target_input_len + target_output_len))
    if total_gib < engine_gib:
        raise ValueError(f"the model needs {engine_gib:.2f} GiB, more than the {total_gib:.2f} GiB of its GPUs")
    if requests < 1:
        raise ValueError("the KV cache memory left holds less than one request of the target lengths")
    max_bs, max_tokens = finetune_setting(requests, target_input_len, target_output_len, pp)
    return BenchSettings(max_bs, max_tokens, requests, cache_gib)


def fit_longest_prompt(max_num_tokens: int, max_batch_size: int, max_isl: int) -> int:
    """``get_settings`` without chunked prefill: at least the longest prompt plus one token per request."""
    return max(max_num_tokens, max_isl + max_batch_size)


#: draws that bound a length distribution without a closed-form maximum (deterministic: seed 0)
BOUND_DRAWS = 100_000


def _greatest(dist: Distribution) -> float:
    """The longest length ``dist`` gives (exact for Constant and Uniform, else the most of BOUND_DRAWS draws)."""
    if isinstance(dist, Constant | Uniform):
        top = dist.value if isinstance(dist, Constant) else dist.high
        if dist.high_clip is not None:
            top = min(top, dist.high_clip)
        return float(math.floor(top)) if dist.is_int and isinstance(dist, Uniform) else float(np.rint(top))
    return float(dist.sample(np.random.default_rng(0), BOUND_DRAWS).max())


def workload_lengths(workload: WorkloadConfig) -> DatasetLengths | None:
    """The dataset statistics trtllm-bench would read, from the workload's client profiles.

    Means are the profiles' length distributions' means weighted by profile weight (a shared prefix
    counts in the prompt, as the tokenizer sees it); the longest input is their largest possible
    prompt. None for a trace (its lengths are in a file the framework does not read).
    """
    from llmsim.config import parse_dist  # the framework modules import config first: no cycle at call time

    if workload.kind == "trace":
        return None
    total = sum(profile.weight for profile in workload.client_profiles)
    avg_isl = avg_osl = 0.0
    max_isl = 0.0
    for i, profile in enumerate(workload.client_profiles):
        key = f"workload.client_profiles[{i}]"
        prompt = parse_dist(profile.prompt_tokens_dist_config, f"{key}.prompt_tokens_dist_config")
        output = parse_dist(profile.max_output_tokens_dist_config, f"{key}.max_output_tokens_dist_config")
        prefix_mean = prefix_max = 0.0
        if profile.shared_prefix_groups and profile.shared_prefix_tokens_dist_config:
            prefix = parse_dist(profile.shared_prefix_tokens_dist_config, f"{key}.shared_prefix_tokens_dist_config")
            prefix_mean, prefix_max = prefix.mean() * profile.shared_prefix_fraction, _greatest(prefix)
        share = profile.weight / total
        avg_isl += share * (prompt.mean() + prefix_mean)
        avg_osl += share * output.mean()
        max_isl = max(max_isl, _greatest(prompt) + prefix_max)
    return DatasetLengths(avg_isl, max(avg_osl, 1.0), int(max_isl))
