"""Bad input, in process: every mistake in any config group is one LLMSimError line naming the key.

Hypothesis puts wrong values (wrong types, negatives, zeros, NaN/inf, huge numbers, containers) into
every key of every group and every framework; validation and set-up must answer with an
:class:`~llmsim.errors.LLMSimError` subclass (never a bare KeyError, TypeError or pydantic
ValidationError), on one line, naming the key where the value is of a wrong kind. A table of
hand-picked mistakes (contradictions, unknown keys and enum values, sizes beyond reason) checks the
key and what is allowed. Nothing is written for a config that does not validate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from conftest import REPO, conf_file, constant_profile, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim import ExperimentOrchestrator
from llmsim.config import load_experiment_config
from llmsim.errors import ConfigError, LLMSimError

FRAMEWORKS = ("vllm", "trtllm", "sglang", "static")


# ---- helpers ---------------------------------------------------------------------------------------
def leaves(data: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value) of every leaf of a config dict; lists of mappings are walked by index."""
    found = []
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            found += leaves(value, path)
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for index, item in enumerate(value):
                found += leaves(item, (*path, index))
        else:
            found.append((path, value))
    return found


def key_of(path: tuple) -> str:
    """``("workload", "client_profiles", 0, "weight")`` -> ``workload.client_profiles[0].weight``."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def with_value(config: dict, path: tuple, value: Any) -> dict:
    config = copy.deepcopy(config)
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return config


def base_config(framework: str = "vllm") -> dict:
    config = make_config(workload={"kind": "offline", "num_requests": 2})
    config["framework"] = conf_file("framework", framework)
    return config


def set_up(config: Any, output_dir: Any = None) -> ExperimentOrchestrator:
    orchestrator = ExperimentOrchestrator(config, output_dir=output_dir)
    orchestrator.setup_simulation()
    return orchestrator


def user_error(config: Any) -> LLMSimError | None:
    """The LLMSimError validation and set-up raise (None if the config is fine); anything else fails."""
    try:
        set_up(config)
    except LLMSimError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 1500, message
        assert "Traceback" not in message and "validation error" not in message, message
        return exc
    return None


# ---- hypothesis: wrong values anywhere --------------------------------------------------------------
LEAVES = [
    (fw, path, value)
    for fw in FRAMEWORKS
    for path, value in leaves(base_config(fw))
    if fw == "vllm" or path[0] == "framework"
]
NUMERIC_LEAVES = [leaf for leaf in LEAVES if isinstance(leaf[2], (int, float)) and not isinstance(leaf[2], bool)]

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 0.5, 1e15, 10**16, float("nan"), float("inf"), -float("inf")]),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "type", "value"]), st.integers(-3, 3), max_size=2),
)
WRONG_KIND = st.one_of(
    st.sampled_from(["abc", "", "1.5.2", float("nan"), float("inf"), -float("inf")]),
    st.lists(st.integers(-3, 3), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-3, 3), min_size=1, max_size=2),
)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(leaf=st.sampled_from(LEAVES), value=ANY_VALUE)
def test_any_value_in_any_key_is_accepted_or_one_llmsim_error_line(leaf, value):
    framework, path, _ = leaf
    user_error(with_value(base_config(framework), path, value))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(leaf=st.sampled_from(NUMERIC_LEAVES), value=WRONG_KIND)
def test_a_non_number_or_non_finite_number_in_a_numeric_key_is_an_error_naming_that_key(leaf, value):
    framework, path, _ = leaf
    error = user_error(with_value(base_config(framework), path, value))
    assert error is not None, f"{key_of(path)}={value!r} was accepted"
    assert key_of(path) in str(error)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    container=st.sampled_from(
        [
            (),
            ("framework",),
            ("workload",),
            ("workload", "client_profiles", 0),
            ("hardware",),
            ("hardware", "gpu"),
            ("hardware", "interconnect"),
            ("model",),
            ("metrics",),
            ("simulation",),
        ]
    ),
    framework=st.sampled_from(FRAMEWORKS),
    name=st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True),
)
def test_an_unknown_key_anywhere_is_an_error_naming_it(container, framework, name):
    config = base_config(framework)
    node = config
    for part in container:
        node = node[part]
    if name in node:
        return
    node[name] = 1
    error = user_error(config)
    assert error is not None and name in str(error)
    assert "unknown" in str(error) or "known" in str(error)


# ---- hand-picked mistakes ------------------------------------------------------------------------------
def edit(path: str, value: Any, framework: str = "vllm", **more: Any) -> Callable[[], dict]:
    """A config factory: the base config of ``framework`` with dotted ``path`` (and ``more``) set."""

    def build() -> dict:
        config = base_config(framework)
        for key, val in {path: value, **{k.replace("__", "."): v for k, v in more.items()}}.items():
            parts: list[Any] = []
            for piece in key.split("."):
                name, _, index = piece.partition("[")
                parts.append(name)
                if index:
                    parts.append(int(index.rstrip("]")))
            config = with_value(config, tuple(parts), val)
        return config

    return build


def trace_config(path: Any) -> dict:
    return make_config(workload={"kind": "trace", "path": str(path), "client_profiles": [constant_profile(1, 1)]})


BAD = [
    # framework knobs: types, ranges, enums, contradictions
    ("vllm-block-size", edit("framework.block_size", 17), "framework.block_size", "16"),
    ("vllm-block-size-zero", edit("framework.block_size", 0), "framework.block_size", "16"),
    (
        "vllm-gpu-util-zero",
        edit("framework.gpu_memory_utilization", 0),
        "framework.gpu_memory_utilization",
        "greater than 0",
    ),
    (
        "vllm-gpu-util-nan",
        edit("framework.gpu_memory_utilization", math.nan),
        "framework.gpu_memory_utilization",
        "finite",
    ),
    ("vllm-engine", edit("framework.engine_version", "v3"), "framework.engine_version", "'v1' or 'v0'"),
    ("vllm-seqs-zero", edit("framework.max_num_seqs", 0), "framework.max_num_seqs", "greater than 0"),
    (
        "vllm-seqs-over-tokens",
        edit("framework.max_num_seqs", 512, framework__max_num_batched_tokens=256),
        "framework",
        ">= max_num_seqs",
    ),
    (
        "vllm-batched-below-context-without-chunking",
        edit("framework.enable_chunked_prefill", False, framework__max_num_batched_tokens=4096),
        "framework.max_num_batched_tokens",
        ">= max_model_len",
    ),
    ("vllm-swap-in-v1", edit("framework.preemption_mode", "swap"), "framework", "v0"),
    (
        "vllm-swap-space-negative",
        edit("framework.swap_space", -1),
        "framework.swap_space",
        "greater than or equal to 0",
    ),
    (
        "vllm-blocks-zero",
        edit("framework.num_gpu_blocks_override", 0),
        "framework.num_gpu_blocks_override",
        "greater than 0",
    ),
    (
        "vllm-blocks-huge",
        edit("framework.num_gpu_blocks_override", 10**9),
        "framework.num_gpu_blocks_override",
        "less than",
    ),
    (
        "tp-over-node",
        edit("framework.tensor_parallel_size", 16),
        "framework.tensor_parallel_size",
        "the node has 8 GPUs",
    ),
    ("tp-not-dividing-heads", edit("framework.tensor_parallel_size", 3), "framework.tensor_parallel_size", "divisor"),
    ("tp-zero", edit("framework.tensor_parallel_size", 0), "framework.tensor_parallel_size", "greater than 0"),
    ("gpu-ids-unknown", edit("framework.gpu_ids", ["gpu9"]), "framework.gpu_ids", "gpu0"),
    ("max-model-len-zero", edit("framework.max_model_len", 0), "framework.max_model_len", "greater than 0"),
    ("kv-dtype", edit("framework.kv_cache_dtype", "fp4"), "framework.kv_cache_dtype", "fp8"),
    ("dtype", edit("framework.dtype", "fp12"), "framework.dtype", "bf16"),
    ("framework-type", edit("framework.type", "TGI"), "framework.type", "VLLM"),
    ("framework-typo", edit("framework.typo", 1), "framework.typo", "unknown key"),
    (
        "trt-policy",
        edit("framework.capacity_scheduler_policy", "FAIR", "trtllm"),
        "framework.capacity_scheduler_policy",
        "MAX_UTILIZATION",
    ),
    ("trt-block", edit("framework.tokens_per_block", 12, "trtllm"), "framework.tokens_per_block", "32"),
    (
        "trt-static-chunked",
        edit("framework.capacity_scheduler_policy", "STATIC_BATCH", "trtllm", framework__enable_chunked_prefill=True),
        "framework.enable_chunked_prefill",
        "STATIC_BATCH",
    ),
    (
        "trt-fraction",
        edit("framework.free_gpu_memory_fraction", 1.5, "trtllm"),
        "framework.free_gpu_memory_fraction",
        "less than or equal to 1",
    ),
    ("sglang-policy", edit("framework.schedule_policy", "sjf", "sglang"), "framework.schedule_policy", "lpm"),
    (
        "sglang-mem-fraction",
        edit("framework.mem_fraction_static", -0.5, "sglang"),
        "framework.mem_fraction_static",
        "greater than 0",
    ),
    ("static-batch-zero", edit("framework.max_batch_size", 0, "static"), "framework.max_batch_size", "greater than 0"),
    (
        "static-wait-negative",
        edit("framework.batch_wait_timeout_s", -1, "static"),
        "framework.batch_wait_timeout_s",
        "greater than or equal to 0",
    ),
    ("model-does-not-fit", edit("framework.gpu_memory_utilization", 0.05), "framework.tensor_parallel_size", "GiB"),
    # workload
    ("workload-kind", edit("workload.kind", "burst"), "workload.kind", "open_loop"),
    (
        "rate-zero",
        edit("workload.kind", "open_loop", workload__rate=0, workload__total_duration=5),
        "workload.rate",
        "greater than 0",
    ),
    (
        "rate-inf",
        edit("workload.kind", "open_loop", workload__rate=math.inf, workload__total_duration=5),
        "workload.rate",
        "finite",
    ),
    (
        "rate-huge",
        edit(
            "workload.kind", "open_loop", workload__rate=1e9, workload__total_duration=100, workload__num_requests=None
        ),
        "workload.rate",
        "at most",
    ),
    (
        "duration-negative",
        edit("workload.kind", "open_loop", workload__rate=1, workload__total_duration=-5),
        "workload.total_duration",
        "greater than 0",
    ),
    ("num-requests-negative", edit("workload.num_requests", -1), "workload.num_requests", "greater than or equal to 0"),
    ("num-requests-huge", edit("workload.num_requests", 10**12), "workload.num_requests", "less than"),
    ("offline-without-count", edit("workload.num_requests", None), "workload.num_requests", "offline"),
    ("closed-loop-without-concurrency", edit("workload.kind", "closed_loop"), "workload.concurrency", "closed_loop"),
    ("burstiness-offline", edit("workload.burstiness", 0.5), "workload.burstiness", "open-loop"),
    ("profiles-empty", edit("workload.client_profiles", []), "workload.client_profiles", "at least 1"),
    (
        "profile-weight-zero",
        edit("workload.client_profiles[0].weight", 0),
        "workload.client_profiles[0].weight",
        "greater than 0",
    ),
    (
        "probability-over-one",
        edit("workload.client_profiles[0].streaming_response_probability", 1.5),
        "streaming_response_probability",
        "1",
    ),
    (
        "dist-type",
        edit("workload.client_profiles[0].prompt_tokens_dist_config.type", "Cauchy"),
        "prompt_tokens_dist_config.type",
        "LogNormal",
    ),
    (
        "dist-type-list",
        edit("workload.client_profiles[0].prompt_tokens_dist_config.type", ["Constant"]),
        "prompt_tokens_dist_config.type",
        "Constant",
    ),
    (
        "dist-param-typo",
        edit("workload.client_profiles[0].prompt_tokens_dist_config.valu", 3),
        "prompt_tokens_dist_config.valu",
        "Constant takes",
    ),
    (
        "profile-typo",
        edit("workload.client_profiles[0].wieght", 1),
        "workload.client_profiles[0].wieght",
        "unknown key",
    ),
    ("chunk-zero", edit("workload.stream_chunk_tokens", 0), "workload.stream_chunk_tokens", "greater than 0"),
    # metrics, simulation
    (
        "percentile-over-100",
        edit("metrics.percentiles_to_calculate", [50, 101]),
        "metrics.percentiles_to_calculate",
        "100",
    ),
    (
        "percentile-zero",
        edit("metrics.percentiles_to_calculate", [0]),
        "metrics.percentiles_to_calculate",
        "greater than 0",
    ),
    (
        "warm-up-negative",
        edit("metrics.warm_up_duration_s", -1),
        "metrics.warm_up_duration_s",
        "greater than or equal to 0",
    ),
    ("slo-zero", edit("metrics.slo_ttft_ms", 0), "metrics.slo_ttft_ms", "greater than 0"),
    ("max-time-zero", edit("simulation.max_simulation_time", 0), "simulation.max_simulation_time", "greater than 0"),
    ("max-time-nan", edit("simulation.max_simulation_time", math.nan), "simulation.max_simulation_time", "finite"),
    ("seed-text", edit("simulation.random_seed", "x"), "simulation.random_seed", "integer"),
    ("simulation-typo", edit("simulation.max_time", 5), "simulation.max_time", "unknown key"),
    # hardware and model
    ("num-gpus-zero", edit("hardware.num_gpus", 0), "hardware.num_gpus", "1 to"),
    ("num-gpus-huge", edit("hardware.num_gpus", 10**30), "hardware.num_gpus", "at most"),
    ("num-gpus-text", edit("hardware.num_gpus", "eight"), "hardware.num_gpus", "whole number"),
    ("gpu-not-mapping", edit("hardware.gpu", "A100"), "hardware.gpu", "mapping"),
    ("gpu-memory-text", edit("hardware.gpu.memory_capacity_gib", "abc"), "hardware.gpu.memory_capacity_gib", "GiB"),
    ("gpu-memory-negative", edit("hardware.gpu.memory_capacity_gib", -80), "hardware.gpu.memory_capacity_gib", "> 0"),
    ("gpu-memory-huge", edit("hardware.gpu.memory_capacity_gib", 1e12), "hardware.gpu.memory_capacity_gib", "<="),
    ("gpu-bandwidth-zero", edit("hardware.gpu.memory_gbps", 0), "hardware.gpu.memory_gbps", "greater than 0"),
    ("peak-missing-16bit", edit("hardware.gpu.peak_tflops", {"int8": 624}), "hardware.gpu.peak_tflops", "bf16 or fp16"),
    ("peak-unknown-dtype", edit("hardware.gpu.peak_tflops.fp17", 5), "hardware.gpu.peak_tflops.fp17", "unknown dtype"),
    ("peak-negative", edit("hardware.gpu.peak_tflops.fp16", -312), "hardware.gpu.peak_tflops.fp16", "greater than 0"),
    ("hardware-typo", edit("hardware.gpu.memroy_gbps", 5), "hardware.gpu.memroy_gbps", "unknown key"),
    (
        "link-latency-negative",
        edit("hardware.network_links[0].latency_s", -1),
        "hardware.network_links[0].latency_s",
        "greater than or equal to 0",
    ),
    ("heads-zero", edit("model.num_attention_heads", 0), "model.num_attention_heads", "greater than 0"),
    ("kv-heads-not-dividing", edit("model.num_key_value_heads", 3), "model", "multiple of num_key_value_heads"),
    ("layers-huge", edit("model.num_hidden_layers", 10**9), "model.num_hidden_layers", "1 to"),
    ("model-dtype", edit("model.dtype", "fp2"), "model.dtype", "bf16"),
    ("top-level-typo", edit("hardwre", {}), "hardwre", "known top-level keys"),
]


@pytest.mark.parametrize(("build", "key", "allowed"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_mistake_is_one_line_naming_the_key_and_what_is_allowed_and_nothing_is_written(tmp_path, build, key, allowed):
    run_dir = tmp_path / "run"
    with pytest.raises(LLMSimError) as info:
        ExperimentOrchestrator(build(), output_dir=run_dir).run(show_progress=False, print_table=False)
    message = str(info.value)
    assert "\n" not in message
    assert key in message and allowed in message, message
    if isinstance(info.value, ConfigError):
        assert key in info.value.key or key in message
    assert not run_dir.exists()


def test_the_error_value_is_shortened_not_echoed_whole():
    with pytest.raises(ConfigError) as info:
        load_experiment_config(edit("workload.client_profiles[0].profile_name", ["x" * 10_000])())
    assert len(str(info.value)) < 400 and " ... " in str(info.value)


# ---- seed layout ------------------------------------------------------------------------------------
def seed_config() -> dict:
    config = yaml.safe_load((REPO / "conf" / "experiment" / "seed_example.yaml").read_text())
    return {k: v for k, v in config.items() if k != "defaults"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        pytest.param(
            lambda c: c.update(model_characteristics_db_path=-1), "model_characteristics_db_path", id="db-path-number"
        ),
        pytest.param(lambda c: c.update(frameworks_to_test=[]), "frameworks_to_test", id="no-frameworks"),
        pytest.param(lambda c: c["frameworks_to_test"][0].update(type="FOO"), "Unknown framework type: FOO", id="type"),
        pytest.param(
            lambda c: c["frameworks_to_test"][0]["config"].update(typo=1),
            "frameworks_to_test[0].config.typo",
            id="typo",
        ),
        pytest.param(
            lambda c: c["hardware_profile"].update(compute_devices=[]),
            "hardware_profile.compute_devices",
            id="no-devices",
        ),
        pytest.param(
            lambda c: c["workload"].update(client_profiles="chat"), "workload.client_profiles", id="profiles-text"
        ),
        pytest.param(lambda c: c.update(simulation=[1]), "simulation", id="section-list"),
        pytest.param(lambda c: c.update(extra_section={}), "extra_section", id="unknown-section"),
    ],
)
def test_seed_layout_mistakes_are_one_line_errors(change, key):
    config = seed_config()
    change(config)
    error = user_error(config)
    assert error is not None and key in str(error)


@pytest.mark.parametrize("content", [b"\x00\x01binary\xff", b"[1, 2, 3]", b"llama: {hidden_size: -1}", b"{not json"])
def test_an_unreadable_model_database_is_a_config_error(tmp_path, content):
    path = tmp_path / "models.json"
    path.write_bytes(content)
    config = seed_config()
    config["model_characteristics_db_path"] = str(path)
    error = user_error(config)
    assert error is not None and "model" in str(error)


def test_a_model_database_path_that_is_a_directory_falls_back_to_the_built_in_profiles(tmp_path):
    config = seed_config()
    config["model_characteristics_db_path"] = str(tmp_path)
    assert user_error(config) is None


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        pytest.param(["framework.max_num_seqs=${oops}"], "framework.max_num_seqs", id="unknown-interpolation"),
        pytest.param(["~framework"], "name", id="group-removed"),
    ],
)
def test_an_interpolation_that_does_not_resolve_is_a_config_error_naming_the_key(overrides, key):
    from hydra import compose, initialize_config_dir

    from llmsim.cli import experiment_container
    from llmsim.models import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with pytest.raises(ConfigError) as info:
        experiment_container(cfg)
    assert info.value.key == key and "Interpolation key" in str(info.value) and "\n" not in str(info.value)
