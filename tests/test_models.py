"""Model profiles: every conf/model file loads, derived numbers match the reference, the database resolves ids."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from llmsim.errors import ConfigError
from llmsim.models import CONF_DIR, ModelDatabase, ModelProfile, builtin_model_profiles

MODEL_FILES = sorted((CONF_DIR / "model").glob("*.yaml"))
# shared/ sits inside the repository in some checkouts and next to it in others
REFERENCE_CSV = next(
    (
        path
        for path in (
            CONF_DIR.parent / "shared/reference/models.csv",
            CONF_DIR.parent.parent / "shared/reference/models.csv",
        )
        if path.exists()
    ),
    Path("shared/reference/models.csv"),
)

# conf/model file -> row of shared/reference/models.csv
REFERENCE_ROWS = {
    "llama2_7b": "Llama-2-7B",
    "llama2_70b": "Llama-2-70B",
    "llama3_8b": "Llama-3-8B",
    "llama3_70b": "Llama-3-70B",
    "mistral_7b": "Mistral-7B-v0.1",
    "mixtral_8x7b": "Mixtral-8x7B-v0.1",
    "qwen2_5_7b": "Qwen2.5-7B",
}


@pytest.fixture(scope="module")
def profiles() -> dict[str, ModelProfile]:
    return builtin_model_profiles()


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, str]]:
    if not REFERENCE_CSV.exists():
        pytest.skip(f"reference table not found at {REFERENCE_CSV}")
    with REFERENCE_CSV.open(newline="") as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def tiny_fields(**overrides) -> dict:
    fields = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 100,
        "max_position_embeddings": 1024,
    }
    fields.update(overrides)
    return fields


def test_there_are_model_files():
    assert MODEL_FILES


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_every_model_file_loads_under_its_file_name(path, profiles):
    profile = profiles[path.stem]
    assert profile.name == path.stem
    assert profile.total_params > 0
    assert profile.kv_bytes_per_token("bf16") > 0


def test_builtin_profiles_are_exactly_the_model_files(profiles):
    assert sorted(profiles) == [p.stem for p in MODEL_FILES]


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_derived_total_params_are_within_two_percent_of_the_published_count(path, profiles):
    profile = profiles[path.stem]
    if profile.params_published_b is None:
        pytest.skip("no published parameter count")
    assert profile.total_params / 1e9 == pytest.approx(profile.params_published_b, rel=0.02)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_derived_active_params_of_moe_models_are_within_three_percent_of_the_published_count(path, profiles):
    profile = profiles[path.stem]
    if not profile.is_moe:
        assert profile.active_params == profile.total_params
        return
    assert profile.active_params_published_b is not None, "an MoE profile should state its active parameters"
    assert profile.active_params / 1e9 == pytest.approx(profile.active_params_published_b, rel=0.03)
    assert profile.active_params < profile.total_params


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [("llama3_8b", 131072), ("llama2_7b", 524288), ("llama3_70b", 327680)],
)
def test_kv_bytes_per_token_in_bf16_matches_hand_values(model_id, expected, profiles):
    assert profiles[model_id].kv_bytes_per_token("bf16") == expected


@pytest.mark.parametrize(("model_id", "row"), sorted(REFERENCE_ROWS.items()))
def test_kv_bytes_per_token_in_bf16_matches_the_reference_table(model_id, row, profiles, reference):
    if model_id not in profiles:
        pytest.skip(f"no conf/model/{model_id}.yaml")
    assert profiles[model_id].kv_bytes_per_token("bf16") == int(reference[row]["kv_bytes_per_token_fp16"])


def test_kv_bytes_per_token_scale_with_the_kv_dtype(profiles):
    model = profiles["llama3_8b"]
    assert model.kv_bytes_per_token("fp8") == model.kv_bytes_per_token("bf16") / 2
    assert model.kv_bytes_per_token("fp16") == model.kv_bytes_per_token("bf16")


def test_seed_model_id_resolves_through_the_database():
    db = ModelDatabase.load()
    assert db["Llama3-8B"].name == "llama3_8b"
    assert db["Llama3-8B"] is db["llama3_8b"]


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_every_alias_resolves_to_its_profile(path):
    db = ModelDatabase.load()
    profile = db[path.stem]
    assert profile.name == path.stem
    for alias in profile.aliases:
        assert db[alias].name == path.stem


def test_json_file_adds_and_overrides_profiles(tmp_path):
    path = tmp_path / "model_params.json"
    path.write_text(
        json.dumps(
            {
                "tiny": tiny_fields(aliases=["Tiny-1"]),
                "llama3_8b": tiny_fields(num_hidden_layers=3),
            }
        )
    )
    db = ModelDatabase.load(path)
    assert db["tiny"].name == "tiny"
    assert db["Tiny-1"] is db["tiny"]
    assert db["tiny"].total_params == ModelProfile(name="tiny", **tiny_fields()).total_params
    assert db["llama3_8b"].num_hidden_layers == 3  # the file wins over the built-in profile
    assert db["llama2_7b"].num_hidden_layers == 32  # built-ins the file does not name stay


def test_yaml_file_adds_profiles(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"tiny": tiny_fields()}))
    assert ModelDatabase.load(path)["tiny"].hidden_size == 64


def test_invalid_profile_in_a_model_file_names_the_file_and_id(tmp_path):
    path = tmp_path / "models.json"
    fields = tiny_fields()
    del fields["hidden_size"]
    path.write_text(json.dumps({"tiny": fields}))
    with pytest.raises(ConfigError) as info:
        ModelDatabase.load(path)
    assert info.value.key == "models.json:tiny.hidden_size"


def test_model_file_that_is_not_a_mapping_is_a_config_error(tmp_path):
    path = tmp_path / "models.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ConfigError) as info:
        ModelDatabase.load(path)
    assert info.value.key == "model_characteristics_db_path"


def test_tiny_profile_parameter_count_by_hand():
    model = ModelProfile(name="tiny", **tiny_fields())
    # per layer: q 64x64 + k,v 2 x 64x32 + o 64x64 = 12288; gated MLP 3 x 64x128 = 24576
    assert model.attention_params_per_layer == 12288
    assert model.mlp_params_per_layer == 24576
    # 2 layers + embedding and LM head 2 x 100x64 + norms 2x64 per layer + final 64
    assert model.total_params == 2 * (12288 + 24576) + 12800 + 2 * 2 * 64 + 64
    # K and V, 2 layers, 2 KV heads x 16 dims, 2 bytes
    assert model.kv_bytes_per_token("bf16") == 2 * 2 * 32 * 2


def test_moe_profile_needs_a_valid_number_of_experts_per_token():
    with pytest.raises(ValueError):
        ModelProfile(name="bad", num_local_experts=8, num_experts_per_tok=9, **tiny_fields())
