"""``workload=random``: the request stream of ``vllm bench serve --dataset-name random``.

vLLM's ``RandomDataset`` (``vllm/benchmarks/datasets.py``) draws, for every request, an input
length uniformly from the whole numbers in ``[floor(input_len * (1 - range_ratio)),
ceil(input_len * (1 + range_ratio))]`` and an output length the same way from ``output_len`` (at
least 1), with ``0 <= range_ratio < 1``. It prepends one fixed prefix of ``prefix_len`` random
tokens, drawn once and shared by every request, so a request's prompt is ``prefix_len`` plus its
drawn input length (vLLM reports that sum as the prompt length). Output lengths are enforced
(``ignore_eos``), every request is streamed and there are no conversations.

vLLM also subtracts the tokenizer's special tokens (a BOS token, say) from ``input_len`` before
drawing and the server adds them back; llmsim has no tokenizer and draws from ``input_len`` as given.
A drawn input length is at least 1 token (vLLM allows 0 after a prefix, at ``range_ratio`` near 1).
"""

from __future__ import annotations

import math
from typing import Any

#: ``vllm bench serve`` defaults for the random dataset (``--random-input-len`` and friends).
DEFAULT_INPUT_LEN = 1024
DEFAULT_OUTPUT_LEN = 128
DEFAULT_RANGE_RATIO = 0.0
DEFAULT_PREFIX_LEN = 0
DEFAULT_NUM_REQUESTS = 1000  # --num-prompts


def length_bounds(length: int, range_ratio: float, minimum: int = 0) -> tuple[int, int]:
    """Inclusive range vLLM draws a length from: floor below, ceil above, at least ``minimum``."""
    low = max(math.floor(length * (1.0 - range_ratio)), minimum)
    high = max(math.ceil(length * (1.0 + range_ratio)), minimum)
    return low, high


def length_distribution(length: int, range_ratio: float, minimum: int) -> dict[str, Any]:
    """The distribution spec of one length: a constant when the range is a single number."""
    low, high = length_bounds(length, range_ratio, minimum)
    if low == high:
        return {"type": "Constant", "value": low, "is_int": True}
    return {"type": "Uniform", "low": low, "high": high, "is_int": True}


def random_client_profile(input_len: int, output_len: int, range_ratio: float, prefix_len: int) -> dict[str, Any]:
    """The one client profile that reproduces vLLM's random dataset (a ``ClientProfile`` mapping)."""
    profile: dict[str, Any] = {
        "profile_name": "random",
        "weight": 1.0,
        "prompt_tokens_dist_config": length_distribution(input_len, range_ratio, 1),
        "max_output_tokens_dist_config": length_distribution(output_len, range_ratio, 1),
        "conversational_probability": 0.0,
        "streaming_response_probability": 1.0,
    }
    if prefix_len > 0:
        profile.update(
            shared_prefix_groups=1,
            shared_prefix_fraction=1.0,
            shared_prefix_tokens_dist_config={"type": "Constant", "value": prefix_len, "is_int": True},
        )
    return profile
