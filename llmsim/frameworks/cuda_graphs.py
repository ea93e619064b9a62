"""The CUDA graphs each engine captures, as :class:`~llmsim.hardware.perf_model.CudaGraphs`.

vLLM v1 (``vllm/config/vllm.py`` ``VllmConfig._set_cudagraph_sizes`` and
``vllm/config/compilation.py`` at v0.33.0, ``cudagraph_mode`` FULL_AND_PIECEWISE by default):

- the largest capture size is ``min(2 x max_num_seqs, 512)`` (1024 on data-centre Blackwell, device
  capability family 100: B200/GB200), then at most ``max_num_batched_tokens``;
- the sizes are 1, 2, 4, multiples of 8 below 256 and multiples of 16 from 256 up to it, plus
  ``max_num_batched_tokens`` and ``max_num_seqs`` (the uniform decode batch) when they fit;
- a uniform decode batch replays the FULL graph of the smallest size that holds it; a step with
  prefill work of at most the largest size replays the PIECEWISE graph of the smallest token count
  that holds it (attention eager); anything larger runs eager; ``enforce_eager`` captures nothing.

TensorRT-LLM's PyTorch backend (``tensorrt_llm/llmapi/llm_args.py`` ``CudaGraphConfig``, on by default
since NVIDIA/TensorRT-LLM#5480, 2025-07): generation-only batches replay
graphs of 1..31, 32, 64, 128 sequences (``max_batch_size`` 128, ``enable_padding`` False: another
size runs eager), or with padding 1, 2, 4, 8, 16 ... 128; powers of two from 256 and the maximum
itself are added for larger maxima. trtllm-bench turns padding on with its own ``max_batch_size``
(``bench/benchmark/utils/general.py`` ``get_settings``). Context (prefill) steps run eager.

vLLM v0 (``vllm/worker/model_runner.py``: ``_BATCH_SIZES_TO_CAPTURE = [1, 2, 4] + [8 * i for i in
1..32]``, filtered to the padded ``max_num_seqs``): decode batches only, padded to the next size;
prefill always eager.
"""

from __future__ import annotations

import math

from llmsim.hardware.perf_model import CudaGraphs

#: vLLM's default ceiling of capture sizes, and on data-centre Blackwell (capability family 100)
VLLM_MAX_CAPTURE = 512
VLLM_MAX_CAPTURE_BLACKWELL = 1024
#: v0's largest decode graph (``_BATCH_SIZES_TO_CAPTURE``'s last entry)
VLLM_V0_MAX_CAPTURE = 256

EAGER = CudaGraphs(decode_sizes=(), piecewise_sizes=())


def vllm_v1_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int, blackwell: bool = False) -> tuple[int, ...]:
    """vLLM v1's default ``cudagraph_capture_sizes`` (no speculative decoding), ascending."""
    ceiling = VLLM_MAX_CAPTURE_BLACKWELL if blackwell else VLLM_MAX_CAPTURE
    largest = min(min(2 * max_num_seqs, ceiling), max_num_batched_tokens)
    sizes = {n for n in (1, 2, 4) if n <= largest}
    if largest >= 8:
        sizes.update(range(8, min(largest + 1, 256), 8))
    if largest >= 256:
        sizes.update(range(256, largest + 1, 16))
    if max_num_batched_tokens <= largest:
        sizes.add(max_num_batched_tokens)
    if max_num_seqs <= min(2 * max_num_seqs, ceiling) and max_num_seqs <= max_num_batched_tokens:
        sizes.add(max_num_seqs)  # the uniform decode batch, within the platform's ceiling
    return tuple(sorted(sizes))


def vllm_v1_graphs(max_num_seqs: int, max_num_batched_tokens: int, blackwell: bool = False) -> CudaGraphs:
    """FULL graphs for decode batches and PIECEWISE graphs for mixed steps, at the same sizes."""
    sizes = vllm_v1_capture_sizes(max_num_seqs, max_num_batched_tokens, blackwell)
    return CudaGraphs(decode_sizes=sizes, pad_decode=True, piecewise_sizes=sizes)


def vllm_v0_graphs(max_num_seqs: int) -> CudaGraphs:
    """v0: decode graphs of 1, 2, 4, 8, 16 ... 256 sequences up to the padded ``max_num_seqs``; prefill eager."""
    candidates = (1, 2, 4, *range(8, VLLM_V0_MAX_CAPTURE + 1, 8))
    padded_seqs = next((n for n in candidates if n >= max_num_seqs), VLLM_V0_MAX_CAPTURE)
    return CudaGraphs(decode_sizes=tuple(n for n in candidates if n <= padded_seqs), pad_decode=True)


def is_data_center_blackwell(device_name: str) -> bool:
    """Whether a GPU is of capability family 100 (B200, GB200, B300), where vLLM captures up to 1024."""
    name = device_name.upper()
    return any(part in name for part in ("B200", "GB200", "B300", "GB300"))


def trtllm_capture_sizes(max_batch_size: int, enable_padding: bool) -> tuple[int, ...]:
    """``CudaGraphConfig._generate_cuda_graph_batch_sizes``: the captured generation batch sizes."""
    padded, unpadded = [1, 2, 4, *(8 * i for i in range(1, 17))], [*range(1, 32), 32, 64, 128]
    sizes = padded if enable_padding else unpadded
    if max_batch_size > 1:
        sizes += [2**i for i in range(8, math.ceil(math.log2(max_batch_size)))]
    return tuple(sorted({n for n in sizes if n <= max_batch_size} | {max_batch_size}))


def trtllm_graphs(max_batch_size: int, enable_padding: bool) -> CudaGraphs:
    """TensorRT-LLM's PyTorch backend: generation-only batches from graphs, context steps eager."""
    return CudaGraphs(decode_sizes=trtllm_capture_sizes(max_batch_size, enable_padding), pad_decode=enable_padding)
