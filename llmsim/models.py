"""Model profiles: architecture facts from ``conf/model/*.yaml`` and what follows from them.

A profile holds the numbers a Hugging Face ``config.json`` holds (see ``shared/reference/models.csv``
for their sources); the properties derive parameter counts, KV-cache bytes per token and the per-layer
shapes the performance model needs. The model characteristics database is a mapping from profile
id (and aliases such as the seed's ``"Llama3-8B"``) to profiles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PositiveInt, model_validator

from llmsim.errors import ConfigError
from llmsim.schema import Schema

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "fp4": 0.53125,  # MXFP4: 4-bit values plus one 8-bit scale per 32 values
}
Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4", "fp4"]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ModelProfile(Schema):
    """Architecture of one decoder-only transformer, as its ``config.json`` states it.

    Covers dense GQA models, mixtures of experts (routed plus shared experts, leading dense layers,
    MoE on every n-th layer), sliding-window attention on all or some layers, chunked local attention
    (Llama-4), and DeepSeek's multi-head latent attention (MLA).
    """

    name: str = Field(description="Profile id, the conf/model file name (e.g. llama3_8b).")
    display_name: str = ""
    hf_repo: str = ""
    aliases: tuple[str, ...] = Field(default=(), description="Other ids that find this profile.")
    source: str = ""
    architecture: str = Field(
        default="", description="The config.json's architectures entry (e.g. GptOssForCausalLM); engines key on it."
    )
    hidden_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    head_dim: PositiveInt | None = Field(default=None, description="Defaults to hidden_size / heads.")
    intermediate_size: PositiveInt = Field(description="Width of the dense MLP (the dense layers of an MoE).")
    vocab_size: PositiveInt
    max_position_embeddings: PositiveInt
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    gated_mlp: bool = Field(default=True, description="SwiGLU-style MLP with gate, up and down.")
    dtype: Dtype = "bf16"
    num_local_experts: int = Field(default=0, ge=0, description="Routed experts per MoE layer; 0 = dense.")
    num_experts_per_tok: int = Field(default=0, ge=0)
    moe_intermediate_size: int | None = Field(default=None, gt=0, description="Width of one expert.")
    num_shared_experts: int = Field(default=0, ge=0, description="Experts every token uses (DeepSeek, Qwen2-MoE).")
    first_k_dense_replace: int = Field(default=0, ge=0, description="Leading layers with a dense MLP (DeepSeek).")
    interleave_moe_layer_step: int = Field(
        default=1,
        ge=1,
        description="Every n-th layer is MoE (layers n-1, 2n-1, ...; Llama-4 Maverick: 2), the others dense.",
    )
    expert_dtype: Dtype | None = Field(
        default=None, description="Storage dtype of expert weights when it differs (gpt-oss ships MXFP4 experts)."
    )
    sliding_window: int | None = Field(default=None, gt=0)
    sliding_window_layers: int | None = Field(
        default=None, ge=0, description="Layers that use the sliding window (default: all when set)."
    )
    attention_chunk_size: int | None = Field(
        default=None, gt=0, description="Chunked local attention: a token sees only its own chunk (Llama-4)."
    )
    chunked_attention_layers: int | None = Field(
        default=None, ge=0, description="Layers with chunked local attention (default: all when a chunk size is set)."
    )
    kv_lora_rank: int | None = Field(default=None, gt=0, description="MLA: width of the compressed KV latent.")
    q_lora_rank: int | None = Field(default=None, gt=0, description="MLA: width of the compressed query.")
    qk_nope_head_dim: int | None = Field(default=None, gt=0)
    qk_rope_head_dim: int | None = Field(default=None, gt=0)
    v_head_dim: int | None = Field(default=None, gt=0)
    params_published_b: float | None = Field(default=None, gt=0, description="Published total, 1e9.")
    active_params_published_b: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_architecture(self) -> ModelProfile:
        if self.num_local_experts and not 0 < self.num_experts_per_tok <= self.num_local_experts:
            raise ValueError("num_experts_per_tok must be between 1 and num_local_experts for an MoE model")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.first_k_dense_replace > self.num_hidden_layers:
            raise ValueError("first_k_dense_replace cannot exceed num_hidden_layers")
        if self.sliding_window_layers is not None and self.sliding_window_layers > self.num_hidden_layers:
            raise ValueError("sliding_window_layers cannot exceed num_hidden_layers")
        if self.chunked_attention_layers is not None and self.chunked_attention_layers > self.num_hidden_layers:
            raise ValueError("chunked_attention_layers cannot exceed num_hidden_layers")
        if self.sliding_window is not None and self.attention_chunk_size is not None:
            raise ValueError("a model has either sliding_window or attention_chunk_size, not both")
        if self.interleave_moe_layer_step > 1 and not self.num_local_experts:
            raise ValueError("interleave_moe_layer_step needs an MoE model (num_local_experts > 0)")
        mla = (self.kv_lora_rank, self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim)
        if any(v is not None for v in mla) and any(v is None for v in mla):
            raise ValueError("MLA needs kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim together")
        return self

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def head_size(self) -> int:
        """Dimension of one attention head (query/key; for MLA the nope + rope parts)."""
        if self.is_mla:
            return self.qk_nope_head_dim + self.qk_rope_head_dim  # type: ignore[operator]
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_dim(self) -> int:
        """Width of the query projection output."""
        return self.num_attention_heads * self.head_size

    @property
    def kv_dim(self) -> int:
        """Width of the key (or value) projection output."""
        return self.num_key_value_heads * self.head_size

    @property
    def is_mla(self) -> bool:
        """Whether attention is DeepSeek-style multi-head latent attention."""
        return self.kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        """Whether MLP layers are mixtures of experts."""
        return self.num_local_experts > 0

    @property
    def expert_intermediate_size(self) -> int:
        """MLP width of one expert (or of the dense MLP)."""
        return self.moe_intermediate_size or self.intermediate_size

    def is_moe_layer(self, index: int) -> bool:
        """Whether layer ``index`` (0-based) has an MoE MLP: past the leading dense layers, every
        ``interleave_moe_layer_step``-th one (transformers' Llama-4 ``moe_layers``: step-1, 2*step-1, ...)."""
        if not self.is_moe or index < self.first_k_dense_replace:
            return False
        return (index + 1) % self.interleave_moe_layer_step == 0

    @cached_property
    def num_moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts."""
        return sum(1 for index in range(self.num_hidden_layers) if self.is_moe_layer(index))

    @property
    def num_dense_layers(self) -> int:
        """Layers with a dense MLP."""
        return self.num_hidden_layers - self.num_moe_layers

    @property
    def attention_window(self) -> int | None:
        """Tokens the windowed layers keep: the sliding window, or the chunk of chunked local attention."""
        return self.sliding_window if self.sliding_window is not None else self.attention_chunk_size

    @property
    def window_is_chunked(self) -> bool:
        """Whether the windowed layers use chunked local attention (a token sees only its own chunk)."""
        return self.attention_chunk_size is not None

    @property
    def num_window_layers(self) -> int:
        """Layers whose attention sees only part of the context (sliding-window or chunked local attention)."""
        if self.sliding_window is not None:
            return self.num_hidden_layers if self.sliding_window_layers is None else self.sliding_window_layers
        if self.attention_chunk_size is not None:
            return self.num_hidden_layers if self.chunked_attention_layers is None else self.chunked_attention_layers
        return 0

    def is_window_layer(self, index: int) -> bool:
        """Whether layer ``index`` (0-based) is windowed: the full-attention layers are spread evenly and
        close each period (gpt-oss and Gemma-2: odd layers full; Gemma-3: every 6th; Llama-4: every 4th)."""
        windowed = self.num_window_layers
        layers = self.num_hidden_layers
        full = layers - windowed
        if windowed == 0:
            return False
        return (index * full) // layers == ((index + 1) * full) // layers

    # ---- parameter counts ---------------------------------------------------------------------
    @cached_property
    def attention_projections(self) -> tuple[tuple[str, int], ...]:
        """(name, weights) of each attention projection of one layer."""
        h = self.hidden_size
        heads = self.num_attention_heads
        if self.is_mla:
            rope, nope, v, kv_lora = self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim, self.kv_lora_rank
            q = (
                (("q_a", h * self.q_lora_rank), ("q_b", self.q_lora_rank * heads * (nope + rope)))
                if self.q_lora_rank
                else (("q", h * heads * (nope + rope)),)
            )
            return (*q, ("kv_a", h * (kv_lora + rope)), ("kv_b", kv_lora * heads * (nope + v)), ("o", heads * v * h))
        qkv = h * (self.q_dim + 2 * self.kv_dim) + ((self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0)
        return (("qkv", qkv), ("o", self.q_dim * h))

    @cached_property
    def attention_params_per_layer(self) -> int:
        """Attention projection weights of one layer (MLA latent norms included)."""
        params = sum(p for _, p in self.attention_projections)
        if self.is_mla:
            params += self.kv_lora_rank + (self.q_lora_rank or 0)  # type: ignore[operator]
        return params

    @property
    def mlp_params_per_expert(self) -> int:
        """Weights of one MLP (one expert for MoE)."""
        matrices = 3 if self.gated_mlp else 2
        return matrices * self.hidden_size * self.expert_intermediate_size

    @property
    def dense_mlp_params(self) -> int:
        """Weights of a dense layer's MLP."""
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size

    @property
    def router_params(self) -> int:
        """Router weights of one MoE layer."""
        return self.hidden_size * self.num_local_experts

    @cached_property
    def mlp_params_per_layer(self) -> int:
        """All MLP weights of one MoE layer (every expert, shared experts and router), or of a dense layer."""
        if self.is_moe:
            experts = self.num_local_experts + self.num_shared_experts
            return experts * self.mlp_params_per_expert + self.router_params
        return self.dense_mlp_params

    @property
    def active_mlp_params_per_layer(self) -> int:
        """MLP weights one token uses in an MoE layer (top-k + shared experts + router), or a dense one."""
        if self.is_moe:
            experts = self.num_experts_per_tok + self.num_shared_experts
            return experts * self.mlp_params_per_expert + self.router_params
        return self.dense_mlp_params

    @property
    def embedding_params(self) -> int:
        """Input embedding plus (untied) LM head."""
        per_matrix = self.vocab_size * self.hidden_size
        return per_matrix if self.tie_word_embeddings else 2 * per_matrix

    @property
    def _norm_params(self) -> int:
        return 2 * self.hidden_size * self.num_hidden_layers + self.hidden_size

    @cached_property
    def expert_params(self) -> int:
        """Weights of all routed and shared experts (the part ``expert_dtype`` applies to)."""
        experts = self.num_local_experts + self.num_shared_experts
        return self.num_moe_layers * experts * self.mlp_params_per_expert if self.is_moe else 0

    @cached_property
    def routed_expert_params(self) -> int:
        """Weights of the routed experts alone (what expert parallelism spreads over its ranks)."""
        return self.num_moe_layers * self.num_local_experts * self.mlp_params_per_expert if self.is_moe else 0

    @cached_property
    def total_params(self) -> int:
        """Every weight of the model."""
        moe = self.num_moe_layers * self.mlp_params_per_layer if self.is_moe else 0
        dense = self.num_dense_layers * self.dense_mlp_params
        attention = self.attention_params_per_layer * self.num_hidden_layers
        return attention + moe + dense + self.embedding_params + self._norm_params

    @cached_property
    def active_params(self) -> int:
        """Weights one token touches (equal to total_params for dense models)."""
        moe = self.num_moe_layers * self.active_mlp_params_per_layer if self.is_moe else 0
        dense = self.num_dense_layers * self.dense_mlp_params
        attention = self.attention_params_per_layer * self.num_hidden_layers
        return attention + moe + dense + self.embedding_params + self._norm_params

    def weight_bytes(self, dtype: str) -> float:
        """Bytes of all weights when stored in ``dtype`` (experts in ``expert_dtype`` when set)."""
        expert_bytes = DTYPE_BYTES[self.expert_dtype or dtype]
        return (self.total_params - self.expert_params) * DTYPE_BYTES[dtype] + self.expert_params * expert_bytes

    def kv_bytes_per_token_layer(self, kv_dtype: str) -> float:
        """KV-cache bytes of one token in one layer (the compressed latent for MLA)."""
        if self.is_mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * DTYPE_BYTES[kv_dtype]  # type: ignore[operator]
        return 2 * self.kv_dim * DTYPE_BYTES[kv_dtype]

    def kv_bytes_per_token(self, kv_dtype: str) -> float:
        """Bytes of K and V one token occupies across all layers."""
        return self.num_hidden_layers * self.kv_bytes_per_token_layer(kv_dtype)

    def kv_shards(self, tp: int) -> int:
        """Ways the KV cache splits over ``tp`` GPUs: KV heads (at least one per GPU); MLA's latent is replicated."""
        return 1 if self.is_mla else min(tp, self.num_key_value_heads)


def _profile_from_mapping(data: Mapping[str, Any], key: str) -> ModelProfile:
    from llmsim.config import validate_schema  # local import: config imports this module

    return validate_schema(ModelProfile, dict(data), key)


def builtin_model_profiles() -> dict[str, ModelProfile]:
    """Every profile under ``conf/model``, keyed by file name (``hf.yaml``, a config.json reader, is none)."""
    profiles = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "config_path" in data:
            continue
        profiles[path.stem] = _profile_from_mapping(data, f"model ({path.name})")
    return profiles


class ModelDatabase(dict):
    """Model characteristics database: profile id or alias -> :class:`ModelProfile`."""

    def add(self, profile: ModelProfile, profile_id: str | None = None) -> None:
        """Register a profile under its name, the given id and all its aliases."""
        for key in {profile.name, profile_id or profile.name, *profile.aliases}:
            self[key] = profile

    @classmethod
    def load(cls, path: str | Path | None = None, extra: Mapping[str, ModelProfile] | None = None) -> ModelDatabase:
        """The built-in profiles, then those in ``path`` (JSON or YAML mapping id -> fields), then ``extra``."""
        db = cls()
        for profile in builtin_model_profiles().values():
            db.add(profile)
        if path is not None:
            db.update(load_model_file(Path(path)))
        for profile_id, profile in (extra or {}).items():
            db.add(profile, profile_id)
        return db


def load_model_file(path: Path) -> dict[str, ModelProfile]:
    """Read a model characteristics file: ``{id: {hidden_size: ..., ...}}`` in JSON or YAML."""
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise ConfigError("model_characteristics_db_path", str(path), "a JSON/YAML mapping of id -> profile")
    db: dict[str, ModelProfile] = {}
    for profile_id, fields in data.items():
        fields = {"name": str(profile_id), **dict(fields)}
        profile = _profile_from_mapping(fields, f"{path.name}:{profile_id}")
        for key in {str(profile_id), *profile.aliases}:
            db[key] = profile
    return db
