"""model=hf: a model profile read from a Hugging Face config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsim.cli import preflight
from llmsim.errors import ConfigError
from llmsim.hf_config import hf_profile_data, profile_fields
from llmsim.models import ModelProfile, builtin_model_profiles

CONFIGS = Path(__file__).parent / "data" / "hf_configs"

# config.json folder (published model) -> the shipped profile it must reproduce
SHIPPED = {
    "Meta-Llama-3-8B": "llama3_8b",  # meta-llama/Meta-Llama-3-8B
    "Mistral-7B-v0.1": "mistral_7b",  # mistralai/Mistral-7B-v0.1
    "Qwen2.5-7B": "qwen2_5_7b",  # Qwen/Qwen2.5-7B
    "Phi-3-mini-4k-instruct": "phi3_mini",  # microsoft/Phi-3-mini-4k-instruct
    "Mixtral-8x7B-v0.1": "mixtral_8x7b",  # mistralai/Mixtral-8x7B-v0.1
    "Qwen3-235B-A22B": "qwen3_235b_a22b",  # Qwen/Qwen3-235B-A22B
    "DeepSeek-V3": "deepseek_v3",  # deepseek-ai/DeepSeek-V3
    "gpt-oss-120b": "gpt_oss_120b",  # openai/gpt-oss-120b
    "gemma-2-9b": "gemma2_9b",  # google/gemma-2-9b
    "Qwen3-8B": "qwen3_8b",  # Qwen/Qwen3-8B
    "Qwen3-30B-A3B": "qwen3_30b_a3b",  # Qwen/Qwen3-30B-A3B
    "Llama-4-Scout-17B-16E": "llama4_scout",  # meta-llama/Llama-4-Scout-17B-16E (text_config)
    "Llama-4-Maverick-17B-128E": "llama4_maverick",  # meta-llama/Llama-4-Maverick-17B-128E (text_config)
}
ARCHITECTURE_FIELDS = (
    "architecture", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_size",
    "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "qkv_bias", "dtype",
    "num_local_experts", "num_experts_per_tok", "expert_intermediate_size", "num_shared_experts",
    "first_k_dense_replace", "expert_dtype", "num_window_layers", "kv_lora_rank", "q_lora_rank",
    "interleave_moe_layer_step", "num_moe_layers", "attention_window", "window_is_chunked",
)  # fmt: skip


def imported(folder: str) -> ModelProfile:
    return ModelProfile.model_validate(hf_profile_data({"name": "hf", "config_path": str(CONFIGS / folder)}))


@pytest.mark.parametrize("folder", sorted(SHIPPED))
def test_a_published_config_json_gives_the_shipped_profile_of_that_model(folder):
    profile, shipped = imported(folder), builtin_model_profiles()[SHIPPED[folder]]
    for field in ARCHITECTURE_FIELDS:
        assert getattr(profile, field) == getattr(shipped, field), field
    if shipped.sliding_window and profile.num_window_layers:
        assert profile.sliding_window == shipped.sliding_window
    assert profile.attention_chunk_size == shipped.attention_chunk_size
    assert profile.total_params == shipped.total_params
    assert profile.active_params == shipped.active_params
    assert profile.kv_bytes_per_token("bf16") == shipped.kv_bytes_per_token("bf16")


@pytest.mark.parametrize("folder", sorted(SHIPPED))
def test_derived_parameter_counts_are_within_three_percent_of_the_published_ones(folder):
    profile, shipped = imported(folder), builtin_model_profiles()[SHIPPED[folder]]
    assert profile.total_params / 1e9 == pytest.approx(shipped.params_published_b, rel=0.03)


def test_quantisation_is_read_from_quantization_config():
    assert imported("DeepSeek-V3").dtype == "fp8"  # block-scaled FP8 checkpoint
    oss = imported("gpt-oss-120b")
    assert (oss.dtype, oss.expert_dtype) == ("bf16", "fp4")  # MXFP4 experts only
    assert imported("Meta-Llama-3-8B").expert_dtype is None


def test_the_profile_is_named_after_its_folder_unless_a_name_is_given():
    assert imported("Qwen2.5-7B").name == "Qwen2.5-7B"
    named = hf_profile_data({"name": "my-qwen", "config_path": str(CONFIGS / "Qwen2.5-7B" / "config.json")})
    assert named["name"] == "my-qwen"


def test_qwen2_sliding_window_is_ignored_when_use_sliding_window_is_false():
    assert imported("Qwen2.5-7B").num_window_layers == 0


def write_config(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "model" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(fields))
    return path


def test_an_unsupported_architecture_is_a_one_line_error_naming_it(tmp_path):
    path = write_config(tmp_path, architectures=["MambaForCausalLM"], hidden_size=768)
    with pytest.raises(ConfigError, match=r"model.config_path architectures='MambaForCausalLM' is not valid: one of"):
        profile_fields(path)


def test_a_missing_field_is_a_one_line_error_naming_the_field(tmp_path):
    llama = json.loads((CONFIGS / "Meta-Llama-3-8B" / "config.json").read_text())
    del llama["vocab_size"]
    path = write_config(tmp_path, **llama)
    with pytest.raises(ConfigError) as excinfo:
        profile_fields(path)
    assert "'vocab_size' (needed for LlamaForCausalLM)" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_an_unknown_quantisation_method_is_a_one_line_error(tmp_path):
    llama = json.loads((CONFIGS / "Meta-Llama-3-8B" / "config.json").read_text())
    path = write_config(tmp_path, **llama, quantization_config={"quant_method": "bitnet"})
    with pytest.raises(ConfigError, match="quant_method='bitnet' is not valid: one of fp8, mxfp4"):
        profile_fields(path)


def test_model_hf_without_a_config_path_names_the_key():
    with pytest.raises(ConfigError, match=r"model.config_path=None is not valid"):
        preflight(["model=hf"])


def test_model_hf_runs_from_the_command_line_with_the_imported_profile():
    assert preflight(["model=hf", f"model.config_path={CONFIGS / 'Mistral-7B-v0.1' / 'config.json'}"])


def llama4_text(**changes) -> dict:
    config = json.loads((CONFIGS / "Llama-4-Maverick-17B-128E" / "config.json").read_text())
    config["text_config"].update(changes)
    return config


def test_llama4_layers_take_moe_from_the_interleave_step_and_chunking_from_the_rope_layers(tmp_path):
    maverick = imported("Llama-4-Maverick-17B-128E")
    assert (maverick.num_moe_layers, maverick.intermediate_size, maverick.expert_intermediate_size) == (24, 16384, 8192)
    assert (maverick.num_shared_experts, maverick.attention_chunk_size, maverick.num_window_layers) == (1, 8192, 36)
    # explicit lists as transformers derives them: moe_layers 1, 3, ...; NoPE (global) every 4th layer
    explicit = llama4_text(moe_layers=list(range(1, 48, 2)), no_rope_layers=[1, 1, 1, 0] * 12)
    path = write_config(tmp_path, **explicit)
    assert ModelProfile.model_validate({"name": "m", **profile_fields(path)}).num_window_layers == 36
    layer_types = llama4_text(layer_types=["chunked_attention", "full_attention"] * 24)
    assert profile_fields(write_config(tmp_path, **layer_types))["chunked_attention_layers"] == 24


def test_llama4_without_an_attention_chunk_has_full_attention_everywhere(tmp_path):
    fields = profile_fields(write_config(tmp_path, **llama4_text(attention_chunk_size=None)))
    assert "attention_chunk_size" not in fields


def test_llama4_moe_layers_off_the_interleave_pattern_are_a_one_line_error(tmp_path):
    path = write_config(tmp_path, **llama4_text(moe_layers=[0, 5, 9]))
    with pytest.raises(ConfigError, match=r"moe_layers='\[0, 5, 9\]' is not valid: every interleave_moe_layer_step"):
        profile_fields(path)


def test_qwen3_moe_decoder_sparse_step_interleaves_dense_layers(tmp_path):
    qwen = json.loads((CONFIGS / "Qwen3-30B-A3B" / "config.json").read_text())
    profile = ModelProfile.model_validate(
        {"name": "q", **profile_fields(write_config(tmp_path, **{**qwen, "decoder_sparse_step": 2}))}
    )
    assert (profile.interleave_moe_layer_step, profile.num_moe_layers) == (2, 24)


def test_qwen3_moe_mlp_only_layers_are_a_one_line_error(tmp_path):
    qwen = json.loads((CONFIGS / "Qwen3-30B-A3B" / "config.json").read_text())
    path = write_config(tmp_path, **{**qwen, "mlp_only_layers": [0, 1]})
    with pytest.raises(ConfigError, match="without mlp_only_layers") as excinfo:
        profile_fields(path)
    assert "\n" not in str(excinfo.value)
