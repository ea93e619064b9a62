"""KV-cache groups of hybrid-attention models: full-attention layers and sliding-window layers.

A model whose layers all attend to the whole context has one group. A model with sliding-window
layers (gpt-oss, Gemma-2: every other layer; Mistral-7B, Phi-3: every layer) keeps, in its windowed
layers, only the blocks that hold the last ``window - 1`` computed tokens and the tokens being
computed; the blocks before them are freed as the window slides.

The grouping and the block counts follow vLLM 0.33.0's hybrid KV cache manager:

- ``vllm/v1/core/kv_cache_planning.py`` ``_get_kv_cache_groups_uniform_page_size``: layers are bucketed
  by attention type; the group size is the smallest bucket's layer count (the largest one's when it
  is under 1.5x the smallest); each bucket splits into ``ceil(layers / group_size)`` groups, padding
  the last. A model of one attention type has one group of all its layers
  (``_get_kv_cache_groups_uniform_type``).
- ``get_kv_cache_config_from_groups`` / ``_get_kv_cache_bytes_per_block``: every group draws its blocks
  from one shared pool; a block holds ``block_size`` tokens of ``group_size`` layers, and
  ``num_blocks = available_memory // bytes_per_block``.
- ``vllm/v1/core/single_type_kv_cache_manager.py`` ``SlidingWindowManager.get_num_skipped_tokens``:
  with ``c`` tokens computed, ``max(0, c - window + 1)`` tokens lie before the window;
  ``remove_skipped_blocks`` (called by ``KVCacheManager.allocate_slots`` before it allocates) frees the
  ``skipped // block_size`` leading blocks and puts the null block in their place, so the block table
  keeps its length and a request holds ``ceil(total / bs) - skipped // bs`` real blocks in the group.
- ``vllm/v1/kv_cache_interface.py`` ``SlidingWindowSpec.max_admission_blocks_per_request``: the most a
  request ever holds in a windowed group, ``ceil(min(window - 1 + in_flight, max_model_len) / bs) + 1``
  (the +1: the window need not start on a block boundary).
- Chunked local attention (Llama-4: 3 of every 4 layers see only their own ``attention_chunk_size``-token
  chunk) is its own attention type, ``ChunkedLocalAttentionSpec``, grouped like a sliding window;
  ``ChunkedLocalAttentionManager`` skips the ``c // chunk * chunk`` tokens before the current chunk
  (the start index its ``find_longest_cache_hit`` and ``remove_skipped_blocks`` use), and
  ``ChunkedLocalAttentionSpec.max_admission_blocks_per_request`` caps a request at
  ``ceil(min(chunk + in_flight, max_model_len) / bs)`` blocks (no +1: chunks start on block boundaries).
  (``VllmConfig`` turns the hybrid manager off for such models unless
  ``VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE`` is set, which later releases default to true;
  llmsim models the default-on behaviour.)
- Mistral-7B and Phi-3 name one model-wide ``sliding_window``: vLLM passes it as
  ``CacheConfig.sliding_window`` (``vllm/engine/arg_utils.py``), and ``Attention`` applies it to every
  layer without a per-layer window (``vllm/model_executor/layers/attention/attention.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.models import ModelProfile


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-a // b)


@dataclass(frozen=True)
class KVGroup:
    """One KV-cache group: ``layers`` layers (padding included) of one attention type."""

    layers: int
    window: int | None = None  # None: full attention
    chunked: bool = False  # the window is the chunk of chunked local attention

    @property
    def is_windowed(self) -> bool:
        """Whether the group's layers attend only to the last ``window`` tokens (or their own chunk)."""
        return self.window is not None

    def skipped_tokens(self, num_computed: int) -> int:
        """Tokens before the window of the next token once ``num_computed`` are computed (vLLM's rule)."""
        if self.window is None:
            return 0
        if self.chunked:
            return num_computed // self.window * self.window
        return max(0, num_computed - self.window + 1)

    def blocks_held(self, num_tokens: int, num_computed: int, block_size: int) -> int:
        """Real blocks a request with slots for ``num_tokens`` tokens holds after freeing those before its window."""
        return cdiv(num_tokens, block_size) - min(
            self.skipped_tokens(num_computed) // block_size, cdiv(num_tokens, block_size)
        )

    def max_blocks_per_request(self, in_flight_tokens: int, max_model_len: int, block_size: int) -> int:
        """The most blocks one request ever holds in this group (unbounded for full attention: its whole length)."""
        if self.window is None:
            return cdiv(max_model_len, block_size)
        if self.chunked:
            return cdiv(min(self.window + in_flight_tokens, max_model_len), block_size)
        return cdiv(min(self.window - 1 + in_flight_tokens, max_model_len), block_size) + 1


@dataclass(frozen=True)
class KVGroupLayout:
    """The groups of one model, each drawing blocks of ``group_size`` layers from one shared pool."""

    groups: tuple[KVGroup, ...]

    @property
    def group_size(self) -> int:
        """Layers per group: a block holds ``block_size`` tokens of this many layers."""
        return self.groups[0].layers

    @property
    def is_hybrid(self) -> bool:
        """Whether any group frees blocks as its window slides."""
        return any(g.is_windowed for g in self.groups)

    @property
    def full_groups(self) -> int:
        """Full-attention groups."""
        return sum(1 for g in self.groups if not g.is_windowed)

    @property
    def windowed_groups(self) -> tuple[KVGroup, ...]:
        """The sliding-window groups."""
        return tuple(g for g in self.groups if g.is_windowed)

    def blocks_for(self, num_tokens: int, num_computed: int, block_size: int) -> int:
        """Blocks a request holds over all groups with slots for ``num_tokens`` and ``num_computed`` computed."""
        return sum(g.blocks_held(num_tokens, num_computed, block_size) for g in self.groups)

    def steady_blocks(self, num_tokens: int, block_size: int) -> int:
        """Blocks a decoding request of ``num_tokens`` tokens holds (all but the newest computed)."""
        return self.blocks_for(num_tokens, num_tokens - 1, block_size)

    def admission_blocks(self, num_tokens: int, block_size: int, in_flight_tokens: int, max_model_len: int) -> int:
        """Blocks vLLM reserves to admit a whole ``num_tokens``-token sequence from scratch.

        ``KVCacheManager.allocate_slots`` with ``full_sequence_must_fit`` asks every group for
        ``cdiv(num_tokens, bs)`` blocks, a windowed one capped at
        :meth:`KVGroup.max_blocks_per_request` (``apply_admission_cap``); ``in_flight_tokens`` is
        ``VllmConfig.max_in_flight_tokens`` (concurrent batches x ``max_num_batched_tokens``).
        """
        need = cdiv(num_tokens, block_size)
        return sum(
            min(need, g.max_blocks_per_request(in_flight_tokens, max_model_len, block_size)) if g.is_windowed else need
            for g in self.groups
        )

    def max_tokens_for(
        self, num_blocks: int, block_size: int, in_flight_tokens: int | None = None, max_model_len: int = 1 << 40
    ) -> int:
        """Most tokens (at most ``num_blocks * block_size``) one request can hold in ``num_blocks`` blocks.

        Counted at its admission footprint (:meth:`admission_blocks`) when ``in_flight_tokens`` is
        given, else at its steady decode footprint; with every group windowed the footprint is
        bounded, so the answer is the bound.
        """

        def blocks(tokens: int) -> int:
            if in_flight_tokens is None:
                return self.steady_blocks(tokens, block_size)
            return self.admission_blocks(tokens, block_size, in_flight_tokens, max_model_len)

        low, high = 0, num_blocks * block_size
        while low < high:  # bisection: blocks grow with tokens
            mid = (low + high + 1) // 2
            if blocks(mid) <= num_blocks:
                low = mid
            else:
                high = mid - 1
        return low


def vllm_kv_groups(model: ModelProfile, hybrid: bool = True) -> KVGroupLayout:
    """The KV-cache groups vLLM 0.33's hybrid allocator forms for ``model`` (see the module docstring).

    ``hybrid=False`` (``--disable-hybrid-kv-cache-manager``) treats every layer as full attention.
    """
    layers = model.num_hidden_layers
    windowed = model.num_window_layers if hybrid else 0
    full = layers - windowed
    window, chunked = model.attention_window, model.window_is_chunked
    if windowed == 0 or full == 0:
        return KVGroupLayout((KVGroup(layers, window, chunked) if windowed else KVGroup(layers),))
    smallest, largest = min(full, windowed), max(full, windowed)
    size = largest if largest < 1.5 * smallest else smallest
    groups = [KVGroup(size) for _ in range(cdiv(full, size))]
    groups += [KVGroup(size, window, chunked) for _ in range(cdiv(windowed, size))]
    return KVGroupLayout(tuple(groups))


#: Architectures SGLang gives separate full and sliding-window token pools (of the modelled models: gpt-oss):
#: sgl-project/sglang python/sglang/srt/configs/model_config.py ``is_hybrid_swa_model`` (the 0.5 line also lists
#: Llama4, MiMoV2 and Step3p5; later ones Gemma4). Other windowed models (Gemma-2, Mistral, Phi-3) get one pool
#: of full-length token slots for every layer.
SGLANG_HYBRID_SWA_ARCHITECTURES = frozenset({"GptOssForCausalLM"})


def sglang_swa_pool_tokens(model: ModelProfile, tokens_per_layer: int, swa_full_tokens_ratio: float) -> tuple[int, int]:
    """(full-attention pool tokens, sliding-window pool tokens) SGLang makes of ``tokens_per_layer`` slots.

    sgl-project/sglang python/sglang/srt/model_executor/model_runner.py ``set_num_token_hybrid``: the memory
    of ``tokens_per_layer`` slots in every layer is split so that the SWA pool holds
    ``swa_full_tokens_ratio`` times the full pool's tokens: ``full = int(tokens * layers / (ratio *
    swa_layers + full_layers))``, ``swa = int(full * ratio)``.
    """
    swa_layers = model.num_window_layers
    full_layers = model.num_hidden_layers - swa_layers
    full = int(tokens_per_layer * model.num_hidden_layers / (swa_full_tokens_ratio * swa_layers + full_layers))
    return full, int(full * swa_full_tokens_ratio)


def sglang_uses_swa_pool(model: ModelProfile) -> bool:
    """Whether SGLang serves the model from separate full and SWA token pools (see the architectures above)."""
    return (
        model.architecture in SGLANG_HYBRID_SWA_ARCHITECTURES and 0 < model.num_window_layers < model.num_hidden_layers
    )
