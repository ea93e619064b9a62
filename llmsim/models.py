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

DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ModelProfile(Schema):
    """Architecture of one decoder-only transformer, as its ``config.json`` states it."""

    name: str = Field(description="Profile id, the conf/model file name (e.g. llama3_8b).")
    display_name: str = ""
    hf_repo: str = ""
    aliases: tuple[str, ...] = Field(default=(), description="Other ids that find this profile.")
    source: str = ""
    hidden_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    head_dim: PositiveInt | None = Field(default=None, description="Defaults to hidden_size / heads.")
    intermediate_size: PositiveInt
    vocab_size: PositiveInt
    max_position_embeddings: PositiveInt
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    gated_mlp: bool = Field(default=True, description="SwiGLU-style MLP with gate, up and down.")
    dtype: Dtype = "bf16"
    num_local_experts: int = Field(default=0, ge=0, description="Routed experts per MoE layer; 0 = dense.")
    num_experts_per_tok: int = Field(default=0, ge=0)
    moe_intermediate_size: int | None = Field(default=None, gt=0)
    sliding_window: int | None = Field(default=None, gt=0)
    sliding_window_layers: int | None = Field(
        default=None, ge=0, description="Layers that use the sliding window (default: all when set)."
    )
    params_published_b: float | None = Field(default=None, gt=0, description="Published total, 1e9.")
    active_params_published_b: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_moe(self) -> ModelProfile:
        if self.num_local_experts and not 0 < self.num_experts_per_tok <= self.num_local_experts:
            raise ValueError("num_experts_per_tok must be between 1 and num_local_experts for an MoE model")
        return self

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def head_size(self) -> int:
        """Dimension of one attention head."""
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
    def is_moe(self) -> bool:
        """Whether MLP layers are mixtures of experts."""
        return self.num_local_experts > 0

    @property
    def expert_intermediate_size(self) -> int:
        """MLP width of one expert (or of the dense MLP)."""
        return self.moe_intermediate_size or self.intermediate_size

    # ---- parameter counts ---------------------------------------------------------------------
    @cached_property
    def attention_params_per_layer(self) -> int:
        """Q, K, V and O projection weights (and QKV bias) of one layer."""
        h = self.hidden_size
        params = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        if self.qkv_bias:
            params += self.q_dim + 2 * self.kv_dim
        return params

    @property
    def mlp_params_per_expert(self) -> int:
        """Weights of one MLP (one expert for MoE)."""
        matrices = 3 if self.gated_mlp else 2
        return matrices * self.hidden_size * self.expert_intermediate_size

    @cached_property
    def mlp_params_per_layer(self) -> int:
        """All MLP weights of one layer (every expert plus the router for MoE)."""
        if self.is_moe:
            return self.num_local_experts * self.mlp_params_per_expert + self.hidden_size * self.num_local_experts
        return self.mlp_params_per_expert

    @property
    def active_mlp_params_per_layer(self) -> int:
        """MLP weights one token uses (top-k experts plus the router for MoE)."""
        if self.is_moe:
            return self.num_experts_per_tok * self.mlp_params_per_expert + self.hidden_size * self.num_local_experts
        return self.mlp_params_per_expert

    @property
    def embedding_params(self) -> int:
        """Input embedding plus (untied) LM head."""
        per_matrix = self.vocab_size * self.hidden_size
        return per_matrix if self.tie_word_embeddings else 2 * per_matrix

    @cached_property
    def total_params(self) -> int:
        """Every weight of the model."""
        norms = 2 * self.hidden_size * self.num_hidden_layers + self.hidden_size
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer
        return per_layer * self.num_hidden_layers + self.embedding_params + norms

    @cached_property
    def active_params(self) -> int:
        """Weights one token touches (equal to total_params for dense models)."""
        norms = 2 * self.hidden_size * self.num_hidden_layers + self.hidden_size
        per_layer = self.attention_params_per_layer + self.active_mlp_params_per_layer
        return per_layer * self.num_hidden_layers + self.embedding_params + norms

    def kv_bytes_per_token(self, kv_dtype: str) -> float:
        """Bytes of K and V one token occupies across all layers."""
        return 2 * self.num_hidden_layers * self.kv_dim * DTYPE_BYTES[kv_dtype]


def _profile_from_mapping(data: Mapping[str, Any], key: str) -> ModelProfile:
    from llmsim.config import validate_schema  # local import: config imports this module

    return validate_schema(ModelProfile, dict(data), key)


def builtin_model_profiles() -> dict[str, ModelProfile]:
    """Every profile under ``conf/model``, keyed by file name."""
    profiles = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
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
