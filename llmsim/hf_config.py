"""A model profile from a Hugging Face ``config.json``: ``model=hf model.config_path=PATH``.

Reads the fields each supported architecture's ``config.json`` carries (the names are those of the
``transformers`` configuration classes) and maps them onto :class:`~llmsim.models.ModelProfile`.
Quantisation comes from ``quantization_config`` where present (FP8 weights, MXFP4 experts,
NVIDIA ModelOpt FP8/NVFP4, 4-bit AWQ/GPTQ). An unsupported architecture, a missing field or an
unknown quantisation method is a one-line :class:`~llmsim.errors.ConfigError` naming it.

Multimodal wrappers (``Llama4ForConditionalGeneration``, ``Gemma3ForConditionalGeneration``) keep
the language model's fields under ``text_config``; only the language model is profiled. Llama-4's
reader maps ``intermediate_size`` (one expert) and ``intermediate_size_mlp`` (dense layers), the shared
expert, ``interleave_moe_layer_step`` and chunked local attention (``attention_chunk_size`` on the
layers ``no_rope_layers`` / ``layer_types`` mark); Qwen3-MoE's ``decoder_sparse_step`` becomes the
same interleave step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llmsim.errors import ConfigError

KEY = "model.config_path"

#: ``architectures[0]`` of a config.json -> the family whose reader maps it
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "llama",
    "Phi3ForCausalLM": "llama",
    "MixtralForCausalLM": "mixtral",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV2ForCausalLM": "deepseek",
    "DeepseekV3ForCausalLM": "deepseek",
    "GptOssForCausalLM": "gpt_oss",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Llama4ForCausalLM": "llama4",
    "Llama4ForConditionalGeneration": "llama4",
}

#: ``torch_dtype`` (or ``dtype``) of a config.json -> llmsim's dtype name
#: (engines serve a 32-bit checkpoint in 16 bits: vLLM dtype=auto, SGLang --dtype auto; Gemma-2 ships float32)
TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "bf16", "float8_e4m3fn": "fp8"}


class _Fields:
    """The fields of one config.json with errors that name the file and the missing key."""

    def __init__(self, data: Mapping[str, Any], path: Path, architecture: str) -> None:
        self.data = data
        self.path = path
        self.architecture = architecture

    def need(self, name: str) -> Any:
        value = self.data.get(name)
        if value is None:
            raise ConfigError(KEY, str(self.path), f"a config.json with '{name}' (needed for {self.architecture})")
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = self.data.get(name)
        return default if value is None else value


def _common(f: _Fields) -> dict[str, Any]:
    """Fields every decoder-only architecture states the same way."""
    heads = int(f.need("num_attention_heads"))
    fields: dict[str, Any] = {
        "hidden_size": int(f.need("hidden_size")),
        "num_hidden_layers": int(f.need("num_hidden_layers")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(f.get("num_key_value_heads", heads)),
        "intermediate_size": int(f.need("intermediate_size")),
        "vocab_size": int(f.need("vocab_size")),
        "max_position_embeddings": int(f.need("max_position_embeddings")),
        "tie_word_embeddings": bool(f.get("tie_word_embeddings", False)),
        "qkv_bias": bool(f.get("attention_bias", False)),
    }
    if f.get("head_dim") is not None:
        fields["head_dim"] = int(f.data["head_dim"])
    return fields


def _window(f: _Fields, fields: dict[str, Any], windowed_layers: int | None) -> None:
    """A sliding window on ``windowed_layers`` layers (``None``: all of them), if the config sets one."""
    window = f.get("sliding_window")
    if window is None or (f.get("use_sliding_window") is False):
        return
    fields["sliding_window"] = int(window)
    if windowed_layers is not None:
        fields["sliding_window_layers"] = windowed_layers


def _layer_types_windowed(f: _Fields) -> int | None:
    """How many layers ``layer_types`` marks ``sliding_attention`` (None when the config has no such list)."""
    types = f.get("layer_types")
    if types is None:
        return None
    return sum(1 for t in types if t == "sliding_attention")


def _llama(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    _window(f, fields, None)
    return fields


def _qwen2(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    fields["qkv_bias"] = True  # Qwen2 always has q/k/v biases (transformers modeling_qwen2); config.json omits it
    _window(f, fields, None)
    return fields


def _mixtral(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    fields["num_local_experts"] = int(f.need("num_local_experts"))
    fields["num_experts_per_tok"] = int(f.need("num_experts_per_tok"))
    fields["moe_intermediate_size"] = fields["intermediate_size"]  # Mixtral's intermediate_size is one expert's
    _window(f, fields, None)
    return fields


def _qwen3_moe(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    if f.get("mlp_only_layers"):
        raise ConfigError(
            KEY,
            str(f.path),
            "a Qwen3-MoE config without mlp_only_layers (dense layers at listed indices are not modelled; "
            "every decoder_sparse_step-th layer MoE is)",
        )
    # modeling_qwen3_moe: layer i is sparse when (i + 1) % decoder_sparse_step == 0
    fields["interleave_moe_layer_step"] = int(f.get("decoder_sparse_step", 1))
    fields["num_local_experts"] = int(f.need("num_experts"))
    fields["num_experts_per_tok"] = int(f.need("num_experts_per_tok"))
    fields["moe_intermediate_size"] = int(f.need("moe_intermediate_size"))
    _window(f, fields, None)
    return fields


def _deepseek(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    fields.pop("head_dim", None)  # MLA: the head shape comes from the latent dims below
    fields["num_local_experts"] = int(f.need("n_routed_experts"))
    fields["num_experts_per_tok"] = int(f.need("num_experts_per_tok"))
    fields["moe_intermediate_size"] = int(f.need("moe_intermediate_size"))
    fields["num_shared_experts"] = int(f.get("n_shared_experts", 0))
    fields["first_k_dense_replace"] = int(f.get("first_k_dense_replace", 0))
    fields["kv_lora_rank"] = int(f.need("kv_lora_rank"))
    if f.get("q_lora_rank") is not None:
        fields["q_lora_rank"] = int(f.data["q_lora_rank"])
    for name in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        fields[name] = int(f.need(name))
    return fields


def _gpt_oss(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    fields["num_local_experts"] = int(f.need("num_local_experts"))
    fields["num_experts_per_tok"] = int(f.get("num_experts_per_tok") or f.need("experts_per_token"))
    fields["moe_intermediate_size"] = fields["intermediate_size"]
    fields["qkv_bias"] = bool(f.get("attention_bias", True))  # GptOssConfig default: attention_bias=True
    windowed = _layer_types_windowed(f)
    # GptOssConfig's default layer_types alternate sliding and full attention, starting with sliding
    _window(f, fields, windowed if windowed is not None else (fields["num_hidden_layers"] + 1) // 2)
    return fields


def _gemma2(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    fields["tie_word_embeddings"] = bool(f.get("tie_word_embeddings", True))  # Gemma ties by default
    windowed = _layer_types_windowed(f)
    # Gemma-2 alternates local (sliding) and global layers, local first (modeling_gemma2: even layer indices)
    _window(f, fields, windowed if windowed is not None else (fields["num_hidden_layers"] + 1) // 2)
    return fields


def _gemma3(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    fields["tie_word_embeddings"] = bool(f.get("tie_word_embeddings", True))
    windowed = _layer_types_windowed(f)
    if windowed is None:  # older configs: every sliding_window_pattern-th layer is global (default 6: 5 local : 1)
        pattern = int(f.get("sliding_window_pattern", 6))
        layers = fields["num_hidden_layers"]
        windowed = layers - layers // pattern
    _window(f, fields, windowed)
    return fields


def _llama4_moe_step(f: _Fields, layers: int) -> int:
    """The MoE interleave step; an explicit ``moe_layers`` list must be that step's pattern."""
    step = int(f.get("interleave_moe_layer_step", 1))  # Llama4TextConfig default: 1 (every layer MoE)
    if step < 1:
        raise ConfigError(f"{KEY} interleave_moe_layer_step", step, "a positive integer")
    listed = f.get("moe_layers")
    # Llama4TextConfig: moe_layers defaults to range(step - 1, layers, step)
    if listed is not None and list(listed) != list(range(step - 1, layers, step)):
        raise ConfigError(
            f"{KEY} moe_layers",
            str(list(listed))[:60],
            f"every interleave_moe_layer_step-th layer ({step}); other MoE layer lists are not modelled",
        )
    return step


def _llama4_chunked_layers(f: _Fields, layers: int) -> int:
    """Layers with chunked local attention: those using RoPE (Llama4TextConfig layer_types: a layer is
    ``chunked_attention`` when its ``no_rope_layers`` entry is 1; default every layer but each
    ``no_rope_layer_interval``-th, 4)."""
    types = f.get("layer_types")
    if types is not None:
        return sum(1 for t in types if t == "chunked_attention")
    no_rope = f.get("no_rope_layers")
    if no_rope:
        return sum(1 for flag in list(no_rope)[:layers] if int(flag))
    interval = int(f.get("no_rope_layer_interval", 4))
    return sum(1 for index in range(layers) if (index + 1) % interval != 0)


def _llama4(f: _Fields) -> dict[str, Any]:
    fields = _common(f)
    layers = fields["num_hidden_layers"]
    # Llama-4 names one expert's width intermediate_size and the dense layers' intermediate_size_mlp
    fields["moe_intermediate_size"] = fields["intermediate_size"]
    fields["intermediate_size"] = int(f.get("intermediate_size_mlp", 16384))  # Llama4TextConfig default
    fields["num_local_experts"] = int(f.need("num_local_experts"))
    fields["num_experts_per_tok"] = int(f.need("num_experts_per_tok"))
    fields["num_shared_experts"] = 1  # every Llama4TextMoe layer has one shared expert of the expert width
    fields["interleave_moe_layer_step"] = _llama4_moe_step(f, layers)
    chunk = f.data.get("attention_chunk_size", 8192)  # Llama4TextConfig default 8192; null: no chunking
    if chunk is not None:
        fields["attention_chunk_size"] = int(chunk)
        fields["chunked_attention_layers"] = _llama4_chunked_layers(f, layers)
    return fields


READERS: dict[str, Callable[[_Fields], dict[str, Any]]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    "mixtral": _mixtral,
    "qwen3_moe": _qwen3_moe,
    "deepseek": _deepseek,
    "gpt_oss": _gpt_oss,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "llama4": _llama4,
}


def quantization(data: Mapping[str, Any], path: Path) -> dict[str, str]:
    """``dtype`` / ``expert_dtype`` implied by ``quantization_config`` (empty when there is none)."""
    config = data.get("quantization_config")
    if not config:
        return {}
    method = str(config.get("quant_method", "")).lower()
    if method == "fp8":  # DeepSeek-V3/R1's block-scaled FP8 (weight_block_size 128x128), Qwen3 FP8 checkpoints
        return {"dtype": "fp8"}
    if method == "mxfp4":  # gpt-oss: MXFP4 experts, attention and the rest in bf16
        return {"expert_dtype": "fp4"}
    if method == "modelopt":
        algo = str(config.get("quant_algo") or config.get("quantization", {}).get("quant_algo", "")).upper()
        if algo == "FP8":
            return {"dtype": "fp8"}
        if algo == "NVFP4":
            return {"dtype": "fp4"}
        raise ConfigError(f"{KEY} quantization_config.quant_algo", algo, "FP8 or NVFP4 for ModelOpt checkpoints")
    if method in ("awq", "gptq") and int(config.get("bits", 4)) == 4:
        return {"dtype": "int4"}
    raise ConfigError(
        f"{KEY} quantization_config.quant_method",
        method,
        "one of fp8, mxfp4, modelopt (FP8, NVFP4), awq or gptq (4-bit); or no quantization_config",
    )


def read_config_json(path: Path) -> dict[str, Any]:
    """The parsed ``config.json`` (a directory means its ``config.json``)."""
    if path.is_dir():
        path = path / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(KEY, str(path), "a Hugging Face config.json file (or a directory holding one)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(KEY, str(path), f"a readable JSON config.json ({' '.join(str(exc).split())})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(KEY, str(path), "a JSON object (a Hugging Face config.json)")
    return dict(data)


def profile_fields(path: str | Path) -> dict[str, Any]:
    """ModelProfile fields for the model a ``config.json`` describes."""
    path = Path(path).expanduser()
    data = read_config_json(path)
    architectures = data.get("architectures") or []
    architecture = str(architectures[0]) if architectures else str(data.get("model_type", ""))
    family = ARCHITECTURES.get(architecture)
    if family is None:
        raise ConfigError(f"{KEY} architectures", architecture or None, "one of " + ", ".join(sorted(ARCHITECTURES)))
    text = data.get("text_config") if isinstance(data.get("text_config"), Mapping) else data
    reader = READERS.get(family)
    if reader is None:
        raise ConfigError(f"{KEY} architectures", architecture, "an architecture this llmsim release can profile")
    fields = reader(_Fields(text, path, architecture))
    fields["architecture"] = architecture
    dtype = TORCH_DTYPES.get(str(text.get("torch_dtype") or data.get("torch_dtype") or text.get("dtype") or ""))
    if dtype is not None:
        fields["dtype"] = dtype
    fields.update(quantization(data, path))
    return fields


def hf_profile_data(model: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` group with ``config_path`` replaced by the fields read from that config.json.

    Fields set beside ``config_path`` (``name``, ``dtype``, ``params_published_b`` ...) win over those
    read; the name defaults to the folder holding the config.json (``.../Qwen3-8B/config.json``: Qwen3-8B).
    """
    if model.get("config_path") in (None, ""):
        raise ConfigError(KEY, model.get("config_path"), "a path to a Hugging Face config.json (model=hf needs one)")
    source = Path(str(model["config_path"])).expanduser()
    fields = profile_fields(source)
    given = {k: v for k, v in model.items() if k != "config_path" and v is not None}
    if given.get("name") in (None, "", "hf"):
        folder = source if source.is_dir() else source.parent
        given["name"] = folder.resolve().name or "hf"
    return {**fields, **given}
