"""Model profiles: every conf/model file loads, derived numbers match the reference, the database resolves ids."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from llmsim.errors import ConfigError
from llmsim.models import CONF_DIR, ModelDatabase, ModelProfile, builtin_model_profiles

# hf.yaml reads a config.json: it is a reader, not a profile
MODEL_FILES = [
    p for p in sorted((CONF_DIR / "model").glob("*.yaml")) if "config_path" not in yaml.safe_load(p.read_text())
]
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
    "llama2_13b": "Llama-2-13B",
    "llama2_70b": "Llama-2-70B",
    "llama3_8b": "Llama-3-8B",
    "llama3_70b": "Llama-3-70B",
    "llama3_405b": "Llama-3.1-405B",
    "mistral_7b": "Mistral-7B-v0.1",
    "mixtral_8x7b": "Mixtral-8x7B-v0.1",
    "mixtral_8x22b": "Mixtral-8x22B-v0.1",
    "qwen2_5_7b": "Qwen2.5-7B",
    "qwen2_5_72b": "Qwen2.5-72B",
    "phi3_mini": "Phi-3-mini-4k-instruct",
    "gemma2_9b": "Gemma-2-9B",
    "deepseek_v3": "DeepSeek-V3",
    "gpt_oss_120b": "gpt-oss-120b",
}

# Integer columns of models.csv that map one-to-one onto ModelProfile fields (the leading number of the cell
# is the config value; the rest is a note, e.g. "2880 (per expert; no dense FFN layers)").
REFERENCE_INT_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "moe_intermediate_size",
    "num_local_experts",
    "num_experts_per_tok",
    "vocab_size",
    "max_position_embeddings",
)

# A kv_formula cell that is the plain GQA formula: 2 (K and V) * layers * KV heads * head_dim * 2 bytes.
PLAIN_KV_FORMULA = re.compile(r"^2\*(\d+)\*(\d+)\*(\d+)\*2 = (\d+) B")

# DeepSeek-V3's MLA cache: 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes (models.csv kv_formula).
DEEPSEEK_V3_MLA_KV_BYTES = 70272

# Profiles whose published active count follows another convention than ModelProfile.active_params (which counts
# the input embedding and the LM head): the test against the published figure is expected to fail, and the
# convention itself is tested below.
ACTIVE_COUNT_EXCLUDES_INPUT_EMBEDDING = {
    # OpenAI's model card counts the unembedding but not the embedding lookup: 5.71B - 201088 x 2880 = 5.13B.
    "gpt_oss_120b": "published 5.1B active leaves out the 0.58B input embedding (gpt-oss model card convention)",
    "gpt_oss_20b": "published 3.6B active leaves out the 0.58B input embedding (gpt-oss model card convention)",
}


def _model_file_params(marks_for: dict[str, str]) -> list:
    return [
        pytest.param(path, id=path.stem, marks=pytest.mark.xfail(strict=True, reason=marks_for[path.stem]))
        if path.stem in marks_for
        else pytest.param(path, id=path.stem)
        for path in MODEL_FILES
    ]


def _leading_int(cell: str) -> int | None:
    match = re.match(r"\s*(\d+)", cell)
    return int(match.group(1)) if match else None


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


@pytest.mark.parametrize("path", _model_file_params(ACTIVE_COUNT_EXCLUDES_INPUT_EMBEDDING))
def test_derived_active_params_of_moe_models_are_within_three_percent_of_the_published_count(path, profiles):
    profile = profiles[path.stem]
    if not profile.is_moe:
        assert profile.active_params == profile.total_params
        return
    assert profile.active_params_published_b is not None, "an MoE profile should state its active parameters"
    assert profile.active_params / 1e9 == pytest.approx(profile.active_params_published_b, rel=0.03)
    assert profile.active_params < profile.total_params


@pytest.mark.parametrize("model_id", sorted(ACTIVE_COUNT_EXCLUDES_INPUT_EMBEDDING))
def test_active_params_without_the_input_embedding_match_the_published_count(model_id, profiles):
    profile = profiles[model_id]
    without_embedding = profile.active_params - profile.vocab_size * profile.hidden_size
    assert without_embedding / 1e9 == pytest.approx(profile.active_params_published_b, rel=0.03)


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("llama3_8b", 131072),
        ("llama2_7b", 524288),
        ("llama3_70b", 327680),
        ("qwen3_235b_a22b", 2 * 94 * 4 * 128 * 2),  # not in models.csv: 2 x layers x KV heads x head_dim x 2 bytes
        ("qwen3_30b_a3b", 2 * 48 * 4 * 128 * 2),
        ("qwen3_8b", 2 * 36 * 8 * 128 * 2),
        ("llama4_scout", 2 * 48 * 8 * 128 * 2),  # chunked layers hold full-size K/V per token they keep
        ("llama4_maverick", 2 * 48 * 8 * 128 * 2),
        ("deepseek_r1", DEEPSEEK_V3_MLA_KV_BYTES),
        ("deepseek_v3", DEEPSEEK_V3_MLA_KV_BYTES),
    ],
)
def test_kv_bytes_per_token_in_bf16_matches_hand_values(model_id, expected, profiles):
    assert profiles[model_id].kv_bytes_per_token("bf16") == expected


@pytest.mark.parametrize(("model_id", "row"), sorted(REFERENCE_ROWS.items()))
def test_kv_bytes_per_token_in_bf16_matches_the_reference_table(model_id, row, profiles, reference):
    if model_id not in profiles:
        pytest.skip(f"no conf/model/{model_id}.yaml")
    assert profiles[model_id].kv_bytes_per_token("bf16") == int(reference[row]["kv_bytes_per_token_fp16"])


@pytest.mark.parametrize(("model_id", "row"), sorted(REFERENCE_ROWS.items()))
def test_kv_bytes_per_token_in_bf16_follows_the_reference_formula(model_id, row, profiles, reference):
    """Plain GQA rows: 2 * layers * KV heads * head_dim * 2 bytes, factor by factor; MLA: the 70272-byte latent."""
    if model_id not in profiles:
        pytest.skip(f"no conf/model/{model_id}.yaml")
    profile = profiles[model_id]
    formula = reference[row]["kv_formula"]
    if profile.is_mla:
        assert int(reference[row]["kv_bytes_per_token_fp16"]) == DEEPSEEK_V3_MLA_KV_BYTES
        assert profile.kv_bytes_per_token("bf16") == DEEPSEEK_V3_MLA_KV_BYTES
        return
    match = PLAIN_KV_FORMULA.match(formula)
    assert match, f"models.csv kv_formula of {row} is not the plain formula: {formula!r}"
    layers, kv_heads, head_dim, total = (int(g) for g in match.groups())
    assert (profile.num_hidden_layers, profile.num_key_value_heads, profile.head_size) == (layers, kv_heads, head_dim)
    assert profile.kv_bytes_per_token("bf16") == total == 2 * layers * kv_heads * head_dim * 2


@pytest.mark.parametrize(("model_id", "row"), sorted(REFERENCE_ROWS.items()))
def test_architecture_fields_match_the_reference_table(model_id, row, profiles, reference):
    if model_id not in profiles:
        pytest.skip(f"no conf/model/{model_id}.yaml")
    profile, cells = profiles[model_id], reference[row]
    assert profile.hf_repo == cells["hf_repo"]
    for field in REFERENCE_INT_FIELDS:
        expected = _leading_int(cells[field])
        if expected is None or (field == "head_dim" and profile.is_mla):
            continue  # no number in the cell, or MLA's K/V head sizes (checked through the MLA fields)
        actual = profile.head_size if field == "head_dim" else getattr(profile, field)
        assert actual == expected, f"{field}: conf/model/{model_id}.yaml has {actual}, models.csv {expected}"
    assert profile.tie_word_embeddings == (cells["tie_word_embeddings"].split()[0] == "true")


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


def test_deepseek_r1_is_the_deepseek_v3_architecture_under_its_own_name(profiles):
    r1, v3 = profiles["deepseek_r1"], profiles["deepseek_v3"]
    identity = {"name", "display_name", "hf_repo", "aliases", "source"}
    assert r1.model_dump(exclude=identity) == v3.model_dump(exclude=identity)
    assert (r1.hf_repo, r1.display_name) == ("deepseek-ai/DeepSeek-R1", "DeepSeek-R1")
    db = ModelDatabase.load()
    assert db["DeepSeek-R1"].name == "deepseek_r1"
    assert db["DeepSeek-V3"].name == "deepseek_v3"


def test_every_calibration_case_names_a_shipped_model_profile(profiles):
    from llmsim.data import CASES_FILE

    with Path(CASES_FILE).open(newline="") as handle:
        models = {row["model"] for row in csv.DictReader(handle)}
    assert models <= set(profiles), sorted(models - set(profiles))


def test_interleaved_moe_puts_experts_on_every_nth_layer_after_the_dense_ones():
    model = ModelProfile(
        name="tiny",
        num_local_experts=4,
        num_experts_per_tok=1,
        interleave_moe_layer_step=2,
        **tiny_fields(num_hidden_layers=6),
    )
    assert [model.is_moe_layer(i) for i in range(6)] == [False, True, False, True, False, True]
    assert (model.num_moe_layers, model.num_dense_layers) == (3, 3)
    with_dense_start = model.model_copy(update={"first_k_dense_replace": 2})
    assert [with_dense_start.is_moe_layer(i) for i in range(6)] == [False, False, False, True, False, True]


def test_interleaved_moe_parameter_count_by_hand():
    model = ModelProfile(
        name="tiny",
        num_local_experts=4,
        num_experts_per_tok=1,
        num_shared_experts=1,
        moe_intermediate_size=32,
        interleave_moe_layer_step=2,
        **tiny_fields(),
    )
    # layer 0 dense (3 x 64x128 = 24576); layer 1 MoE: 4 + 1 experts of 3 x 64x32 = 6144 and a 64x4 router
    assert model.total_params == 2 * 12288 + 24576 + (5 * 6144 + 256) + 12800 + 2 * 2 * 64 + 64
    assert model.active_params == 2 * 12288 + 24576 + (2 * 6144 + 256) + 12800 + 2 * 2 * 64 + 64


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"interleave_moe_layer_step": 2}, "interleave_moe_layer_step needs an MoE model"),
        ({"attention_chunk_size": 64, "chunked_attention_layers": 3}, "chunked_attention_layers cannot exceed"),
        ({"attention_chunk_size": 64, "sliding_window": 64}, "either sliding_window or attention_chunk_size"),
    ],
)
def test_inconsistent_moe_or_chunked_attention_fields_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelProfile(name="bad", **tiny_fields(**overrides))


def test_chunked_attention_layers_default_to_every_layer():
    model = ModelProfile(name="tiny", **tiny_fields(attention_chunk_size=64))
    assert (model.num_window_layers, model.attention_window, model.window_is_chunked) == (2, 64, True)
