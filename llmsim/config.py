"""Typed, validated experiment configuration.

``ExperimentConfig`` is what every other part reads. It is built from either

* a composed Hydra config (``hardware``, ``model``, ``workload``, ``framework``, ``metrics``,
  ``simulation`` groups; see ``conf/``), via :func:`from_hydra_layout`, or
* the seed's dict layout (``simulation``, ``model_characteristics_db_path``, ``hardware_profile``,
  ``workload``, ``frameworks_to_test``, ``metrics_config``), via :func:`from_seed_layout`.

Validation errors become a one-line :class:`~llmsim.errors.ConfigError` naming the key as the
user wrote it (``framework.max_num_seqs`` in the Hydra layout, ``frameworks_to_test[0].config...``
in the seed layout), the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmsim.distributions import Distribution, parse_distribution
from llmsim.errors import ConfigError
from llmsim.hardware.spec import HardwareConfig
from llmsim.hf_config import hf_profile_data
from llmsim.models import DTYPE_BYTES, Dtype, ModelProfile
from llmsim.schema import MixedTypeError, Schema

SchemaT = TypeVar("SchemaT", bound=BaseModel)

#: Sanity limits: values beyond them are typos, and would make the simulator allocate without bound.
MAX_NUMBER = 1e15  # any number in a config (seeds excepted)
MAX_GPUS_PER_NODE = 1024
MAX_GPU_MEMORY_GIB = 16384.0
MAX_LAYERS = 10_000
MAX_KV_BLOCKS = 2**23  # num_gpu_blocks_override (blocks, or tokens for SGLang and static)
MAX_SESSIONS = 10_000_000  # sessions one run may send
MAX_REQUESTS = 10_000_000  # requests (all turns of all sessions) one run may send
MAX_PREFIX_GROUPS = 1_000_000  # shared system prompts of one client profile


# ------------------------------------------------------------------------------------------------
# error formatting
# ------------------------------------------------------------------------------------------------
def _join_key(prefix: str, loc: tuple[Any, ...]) -> str:
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key = f"{key}.{part}" if key else str(part)
    return key


def _allowed_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the (nested) schema at ``loc``, for 'unknown key' errors (None if not a schema)."""
    model: Any = schema
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def unknown_key_error(key: str, value: Any, known: Sequence[str] | None, label: str = "known keys") -> ConfigError:
    """``key=value is not valid: unknown key; did you mean <closest>? <label> are ...`` (one line).

    The suggestions are the known names closest to the key's last part (difflib), written as full
    keys (``framework.max_num_seqs``) so they can be pasted back on the command line.
    """
    if not known:
        return ConfigError(key, value, "unknown key; this key is not known")
    parent, dot, name = key.rpartition(".")
    if not dot and "]" in key:
        parent, name = key.rsplit("]", 1)[0] + "]", key.rsplit("]", 1)[1].lstrip(".")
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.75)
    hint = ""
    if close:
        hint = "did you mean " + " or ".join(f"{parent}.{c}" if parent else c for c in close) + "? "
    return ConfigError(key, value, f"unknown key; {hint}{label} are {', '.join(known)}")


def validate_schema(schema: type[SchemaT], data: Any, key: str) -> SchemaT:
    """Validate ``data`` against ``schema``; the first problem becomes a one-line ConfigError."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            raise unknown_key_error(_join_key(key, loc), error.get("input"), _allowed_keys(schema, loc)) from None
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        value = error.get("input")
        inner = (error.get("ctx") or {}).get("error")
        if isinstance(inner, MixedTypeError):  # a boolean inside a list or mapping: name its entry
            loc, value, message = (*loc, *inner.path), inner.value, inner.allowed
        if isinstance(value, Mapping) and error["type"] == "missing":
            value = None
        raise ConfigError(_join_key(key, loc), value, message) from None


# ------------------------------------------------------------------------------------------------
# checks on raw data (before the schemas see it)
# ------------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_magnitudes(data: Any, key: str) -> None:
    """Every number anywhere in ``data`` is at most :data:`MAX_NUMBER` in size (seeds excepted).

    Larger values are typos; left alone they would make the simulator allocate or loop without bound.
    """
    if isinstance(data, Mapping):
        for name, value in data.items():
            if "seed" not in str(name):
                check_magnitudes(value, _join_key(key, (str(name),)))
    elif isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            check_magnitudes(value, _join_key(key, (index,)))
    elif _is_number(data) and math.isfinite(data) and abs(data) > MAX_NUMBER:
        raise ConfigError(key, data, f"a number of at most {MAX_NUMBER:g} in size")


def _check_range(data: Mapping[str, Any], name: str, key: str, low: float, high: float, what: str) -> None:
    value = data.get(name)
    if name in data and not (_is_number(value) and math.isfinite(value) and low < value <= high):
        raise ConfigError(f"{key}.{name}", value, what)


def check_hardware_data(data: Any, key: str) -> None:
    """Shapes the hardware schema's own expansion relies on: ``gpu`` a mapping, sizes within reason."""
    if not isinstance(data, Mapping):
        return
    if "gpu" in data:
        gpu = data["gpu"]
        if not isinstance(gpu, Mapping):
            raise ConfigError(f"{key}.gpu", gpu, "a mapping of GPU facts (name, peak_tflops, memory_capacity_gib, ...)")
        num_gpus = data.get("num_gpus", 1)
        if not (isinstance(num_gpus, int) and not isinstance(num_gpus, bool) and 1 <= num_gpus <= MAX_GPUS_PER_NODE):
            raise ConfigError(f"{key}.num_gpus", num_gpus, f"a whole number of GPUs from 1 to {MAX_GPUS_PER_NODE}")
        devices = [(f"{key}.gpu", gpu)]
    else:
        listed = data.get("compute_devices")
        devices = [(f"{key}.compute_devices[{i}]", d) for i, d in enumerate(listed)] if isinstance(listed, list) else []
    for device_key, device in devices:
        if not isinstance(device, Mapping):
            continue
        _check_range(
            device,
            "memory_capacity_gib",
            device_key,
            0,
            MAX_GPU_MEMORY_GIB,
            f"GiB of memory, > 0 and <= {MAX_GPU_MEMORY_GIB:g}",
        )
        _check_range(
            device,
            "memory_capacity_bytes",
            device_key,
            0,
            MAX_GPU_MEMORY_GIB * 2**30,
            f"bytes of memory, > 0 and <= {MAX_GPU_MEMORY_GIB * 2**30:g}",
        )


PEAK_DTYPES = (*DTYPE_BYTES, "tf32", "fp64")


def validate_hardware(data: Any, key: str) -> HardwareConfig:
    """The hardware section, validated; errors name the keys as written (``hardware.gpu.X``, not the expansion)."""
    try:
        return validate_schema(HardwareConfig, data, key)
    except ConfigError as exc:
        prefix = f"{key}.compute_devices["
        if isinstance(data, Mapping) and "gpu" in data and exc.key.startswith(prefix):
            index, rest = exc.key[len(prefix) :].split("]", 1)
            allowed = exc.allowed.replace(f"{prefix}{index}]", f"{key}.gpu")
            raise ConfigError(f"{key}.gpu{rest}", exc.value, allowed) from None
        raise


def check_hardware(hardware: HardwareConfig, key: str) -> None:
    """Facts the performance model needs: peaks named by dtype, a 16-bit one (bf16 or fp16) on every device."""
    for index, device in enumerate(hardware.compute_devices):
        where = f"{key}.gpu.peak_tflops" if key == "hardware" else f"{key}.compute_devices[{index}].peak_tflops"
        for dtype, value in device.peak_tflops.items():
            if dtype not in PEAK_DTYPES:
                raise ConfigError(
                    f"{where}.{dtype}", value, f"unknown dtype; peaks are given for {', '.join(PEAK_DTYPES)}"
                )
        if not {"bf16", "fp16"} & set(device.peak_tflops):
            raise ConfigError(where, dict(device.peak_tflops), "needs a bf16 or fp16 entry (dense TFLOPS)")


def check_model_data(data: Any, key: str) -> None:
    """Sizes that the performance model iterates over stay within reason."""
    if isinstance(data, Mapping):
        _check_range(data, "num_hidden_layers", key, 0, MAX_LAYERS, f"a whole number of layers from 1 to {MAX_LAYERS}")


def check_distribution_types(spec: Any, key: str) -> None:
    """Every ``type`` of a distribution spec (and of Mixture components) is a name, before parsing."""
    if not isinstance(spec, Mapping):
        return
    kind = spec.get("type")
    if kind is not None and not isinstance(kind, str):
        from llmsim.distributions import DISTRIBUTION_TYPES

        raise ConfigError(f"{key}.type", kind, f"one of {', '.join(DISTRIBUTION_TYPES)}")
    components = spec.get("components")
    if isinstance(components, (list, tuple)):
        for index, component in enumerate(components):
            check_distribution_types(component, f"{key}.components[{index}]")


#: Keys of a client profile whose distributions draw token counts (every one is at least 1 token).
TOKEN_LENGTH_KEYS = (
    "prompt_tokens_dist_config",
    "max_output_tokens_dist_config",
    "followup_prompt_tokens_dist_config",
    "shared_prefix_tokens_dist_config",
)
LENGTH_RULE = "a token count is at least 1 (a prompt, an output or a shared prefix has 1 token or more)"


def check_token_lengths(spec: Any, key: str) -> None:
    """A token-length distribution may not state a bound below 1 token (``min: -1000``, ``low: 0``, ...).

    Families whose support reaches below 1 on their own (Exponential, Gamma, Poisson, Normal) are
    accepted: their rare draws below 1 are raised to 1 token, and :func:`context_warnings` says so
    when that happens often. A bound the user wrote below 1 is refused, since the lengths it asks
    for cannot be sent.
    """
    if not isinstance(spec, Mapping):
        return
    low = spec.get("min")
    if low is not None and _is_number(low) and low < 1:
        raise ConfigError(f"{key}.min", low, f"a number >= 1: {LENGTH_RULE}")
    kind = spec.get("type")
    stated = {"Constant": "value", "Uniform": "low"}.get(str(kind))
    if stated is not None and low is None and _is_number(spec.get(stated)) and spec[stated] < 1:
        raise ConfigError(f"{key}.{stated}", spec[stated], f"a number >= 1: {LENGTH_RULE}")
    if kind == "Empirical" and low is None:
        dist = parse_dist(spec, key)
        if dist.least() < 1:
            where = "path" if "path" in spec else "values"
            raise ConfigError(f"{key}.{where}", spec.get(where), f"values >= 1 (found {dist.least():g}): {LENGTH_RULE}")
    components = spec.get("components")
    if kind == "Mixture" and isinstance(components, (list, tuple)):
        for index, component in enumerate(components):
            if isinstance(component, Mapping):
                check_token_lengths({k: v for k, v in component.items() if k != "weight"}, f"{key}.components[{index}]")


def parse_dist(spec: Any, key: str) -> Distribution:
    """:func:`~llmsim.distributions.parse_distribution` after :func:`check_distribution_types`."""
    check_distribution_types(spec, key)
    return parse_distribution(spec, key)


# ------------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------------
class SimulationConfig(Schema):
    """How long to simulate and the run seed."""

    max_simulation_time: PositiveFloat = Field(default=3600.0, description="Simulated seconds before the run stops.")
    random_seed: int = Field(default=42, description="Seed every random stream is derived from.")
    fast_forward: bool = Field(
        default=True,
        description="Advance decoding requests from one step counter and runs of decode steps in closed form "
        "(identical results, much faster); false: every request is stepped explicitly.",
    )


class ClientProfile(Schema):
    """One population of clients (the seed's ``client_profiles`` entries)."""

    profile_name: str = "default"
    weight: PositiveFloat = 1.0
    inter_arrival_time_dist_config: dict[str, Any] | None = Field(
        default=None, description="Seconds between this profile's new sessions when workload.rate is null."
    )
    prompt_tokens_dist_config: dict[str, Any] = Field(default_factory=lambda: {"type": "Constant", "value": 128})
    max_output_tokens_dist_config: dict[str, Any] = Field(default_factory=lambda: {"type": "Constant", "value": 128})
    followup_prompt_tokens_dist_config: dict[str, Any] | None = Field(
        default=None,
        description="New tokens a follow-up turn adds after the conversation so far (a user's reply, an agent's "
        "tool results); null: drawn from prompt_tokens_dist_config like first turns.",
    )
    conversational_probability: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Chance that an answer gets a follow-up turn (geometric turn count, mean 1 + p/(1-p) requests "
        "per session); follow-ups are requests on top of the workload's session rate.",
    )
    shared_prefix_groups: int = Field(default=0, ge=0, description="Distinct system prompts shared by requests.")
    shared_prefix_fraction: float = Field(default=1.0, ge=0, le=1, description="Share of sessions that use one.")
    shared_prefix_tokens_dist_config: dict[str, Any] | None = Field(
        default=None, description="Length of each shared system prompt (drawn once per group)."
    )
    conversation_think_time_dist_config: dict[str, Any] = Field(
        default_factory=lambda: {"type": "Exponential", "rate": 0.2},
        description="Seconds a user takes to send the next turn after reading the previous answer.",
    )
    max_conversation_turns: PositiveInt = Field(default=8, description="Cap on turns per conversation.")
    turns_dist_config: dict[str, Any] | None = Field(
        default=None,
        description="Turns per session (rounded, clipped to 1..max_conversation_turns); replaces the "
        "geometric turn count of conversational_probability.",
    )
    streaming_response_probability: float = Field(default=1.0, ge=0, le=1)


class WorkloadConfig(Schema):
    """Where requests come from: open-loop client profiles, an offline batch, a closed loop or a trace."""

    kind: Literal["open_loop", "offline", "closed_loop", "trace", "random"] = "open_loop"
    rate: PositiveFloat | None = Field(
        default=None,
        description="Open loop: arrival rate of new sessions (first turns) per second, spread over profiles by "
        "weight; follow-up turns of conversations come on top, so requests/s exceed it when profiles have "
        "conversations. null keeps each profile's own inter_arrival_time_dist_config. Trace: rescale its time "
        "to this mean request rate. Random: requests/s (no conversations); inf or null sends all at t=0.",
    )
    burstiness: PositiveFloat | None = Field(
        default=None,
        description="Gamma inter-arrivals of shape burstiness and mean 1/rate, as vllm bench serve draws them "
        "(1 = Poisson, < 1 burstier); null keeps each profile's inter-arrival distribution shape.",
    )
    rate_schedule: list[Any] | dict[str, Any] | None = Field(
        default=None,
        description="Time-varying total rate of new sessions (first turns) per second instead of rate: "
        "[[time_s, rate], ...] steps (piecewise constant) or {type: diurnal, period_s, min_rate, max_rate, phase_s}.",
    )
    total_duration: PositiveFloat | None = Field(default=300.0, description="Seconds during which requests arrive.")
    num_requests: NonNegativeInt | None = Field(
        default=None,
        le=10_000_000,
        description="Stop after this many sessions (trace: requests); 0 sends none (a run that only reports "
        "the deployments).",
    )
    concurrency: PositiveInt | None = Field(default=None, description="Closed loop: clients in flight.")
    think_time_dist_config: dict[str, Any] | None = Field(
        default=None, description="Closed loop: pause between a response and the client's next request."
    )
    stream_chunk_tokens: PositiveInt = Field(
        default=1, description="Streamed responses reach the client in chunks of this many tokens."
    )
    bytes_per_token_estimate_for_network: PositiveFloat = 2.0
    client_link: bool | None = Field(
        default=None,
        description="true: clients reach the server over hardware.network_links[0] (vllm bench serve; one "
        "link per framework that serialises uploads in send order); false: clients in the engine's own process "
        "(vLLM's LLM class, vllm bench throughput, trtllm-bench) - no upload, no download, no latency. "
        "null: false for kind offline, true otherwise.",
    )
    random_seed: int | None = Field(default=None, description="Workload seed; null uses simulation.random_seed.")
    path: str | None = Field(
        default=None,
        description="Trace: CSV, Parquet or JSONL file (relative to the current directory, then the repo).",
    )
    time_unit: Literal["s", "ms", "us"] = Field(default="s", description="Trace: unit of numeric timestamps.")
    time_scale: PositiveFloat | None = Field(
        default=None, description="Trace: multiply inter-arrival times by this (2 = half the rate); or use rate."
    )
    start_s: NonNegativeFloat = Field(default=0.0, description="Trace: window start, seconds after its first request.")
    end_s: PositiveFloat | None = Field(default=None, description="Trace: window end (exclusive); null = the end.")
    loop: PositiveInt = Field(default=1, description="Trace: replay the window this many times back to back.")
    input_len: PositiveInt | None = Field(
        default=None,
        description="Random: tokens drawn per prompt after the shared prefix (vllm bench serve --random-input-len); "
        "null: 1024.",
    )
    output_len: PositiveInt | None = Field(
        default=None, description="Random: output tokens per request, enforced (--random-output-len); null: 128."
    )
    range_ratio: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="Random: lengths uniform on the whole numbers in [len*(1-r), len*(1+r)] (floor, ceil) "
        "(--random-range-ratio); null: 0, exact lengths.",
    )
    prefix_len: NonNegativeInt | None = Field(
        default=None,
        description="Random: one fixed prefix of this many tokens before every prompt, counted in its length "
        "(--random-prefix-len); null: 0.",
    )
    client_profiles: tuple[ClientProfile, ...] = Field(default=(ClientProfile(),), min_length=1)

    @property
    def has_client_link(self) -> bool:
        """Whether requests and answers cross the client link (``client_link``; null: all but offline batches)."""
        return self.client_link if self.client_link is not None else self.kind != "offline"

    @field_validator("rate", mode="before")
    @classmethod
    def _finite_rate(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("kind") == "random" and isinstance(value, str) and value.strip().lower() in ("inf", ".inf"):
            value = math.inf  # a plain YAML reader's 'inf'
        if isinstance(value, float) and not math.isfinite(value):
            if info.data.get("kind") == "random" and value > 0:
                return None  # vllm bench serve's --request-rate inf: every request at t=0
            raise ValueError("must be a finite number of requests/s > 0 (use workload=offline for all-at-once)")
        return value

    @model_validator(mode="after")
    def _random_dataset(self) -> WorkloadConfig:
        """``kind: random`` gets the one client profile of vLLM's random dataset, from the flat keys."""
        if self.kind != "random":
            return self
        from llmsim.workload import random_dataset as rd

        profile = ClientProfile.model_validate(
            rd.random_client_profile(
                self.input_len if self.input_len is not None else rd.DEFAULT_INPUT_LEN,
                self.output_len if self.output_len is not None else rd.DEFAULT_OUTPUT_LEN,
                self.range_ratio if self.range_ratio is not None else rd.DEFAULT_RANGE_RATIO,
                self.prefix_len if self.prefix_len is not None else rd.DEFAULT_PREFIX_LEN,
            )
        )
        if self.client_profiles == (profile,):
            return self
        if "client_profiles" in self.model_fields_set:
            raise ValueError(
                "kind random makes its own client profile: give input_len, output_len, range_ratio and "
                "prefix_len instead of client_profiles"
            )
        return self.model_copy(update={"client_profiles": (profile,)})


class MetricsConfig(Schema):
    """What to compute and where to write it (the seed's ``metrics_config``)."""

    percentiles_to_calculate: tuple[PositiveFloat, ...] = (50.0, 90.0, 95.0, 99.0)
    warm_up_duration_s: NonNegativeFloat = 0.0
    output_summary_json_path: str | None = "summary.json"
    output_requests_csv_path: str | None = None
    output_requests_parquet_path: str | None = "requests.parquet"
    output_steps_parquet_path: str | None = "steps.parquet"
    allow_outside_run_dir: bool = Field(
        default=False,
        description="Let an absolute output path point outside the run directory (never in a --multirun sweep).",
    )
    record_step_series: bool | None = Field(
        default=None,
        description="Keep the per-step series (null: only when output_steps_parquet_path is set).",
    )
    step_series_bucket_s: PositiveFloat | None = Field(
        default=None,
        description="Aggregate the step series into buckets of this many simulated seconds "
        "(one row per framework and bucket: sums, duration-weighted means, maxima); null: one row per step.",
    )
    slo_ttft_ms: PositiveFloat | None = Field(default=None, description="Goodput SLO on TTFT.")
    slo_tpot_ms: PositiveFloat | None = Field(default=None, description="Goodput SLO on TPOT.")
    slo_e2el_ms: PositiveFloat | None = Field(default=None, description="Goodput SLO on E2EL.")

    @field_validator("percentiles_to_calculate")
    @classmethod
    def _as_percents(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        """A list entirely within (0, 1] is read as fractions (the seed's 0.99); otherwise percents."""
        if values and all(v <= 1.0 for v in values):
            values = tuple(round(v * 100.0, 10) for v in values)
        for v in values:
            if v > 100.0:
                raise ValueError(f"percentiles are fractions in (0, 1] or percents in (0, 100], got {v}")
        return tuple(sorted(set(values)))

    @property
    def slos_ms(self) -> dict[str, float]:
        """The SLOs given, by metric name (ttft, tpot, e2el)."""
        slos = {"ttft": self.slo_ttft_ms, "tpot": self.slo_tpot_ms, "e2el": self.slo_e2el_ms}
        return {k: v for k, v in slos.items() if v is not None}


class FrameworkConfig(Schema):
    """Knobs every framework has; each framework's schema adds its own with the real names."""

    #: the framework's :class:`~llmsim.frameworks.versions.ReleaseTable` (set by each framework's schema)
    release_table: ClassVar[Any] = None

    model_profile_id: str
    version: str | None = Field(
        default=None,
        description="The framework release to model (its defaults and behaviour), e.g. '0.11.0'; "
        "null: the newest release modelled.",
    )
    gpu_id: str | None = Field(default=None, description="Seed layout: the device the framework runs on.")
    gpu_ids: tuple[str, ...] | None = Field(default=None, description="Devices to use; default the first tp ones.")
    tensor_parallel_size: PositiveInt = 1
    dtype: Dtype | None = Field(default=None, description="Weight/compute dtype; null uses the model's.")
    kv_cache_dtype: Literal["auto", "fp16", "bf16", "fp8"] = "auto"
    max_model_len: PositiveInt | None = Field(default=None, description="null: the model's context length.")
    scheduler_iteration_delay_s: NonNegativeFloat = Field(
        default=0.0, description="Extra delay added to every engine iteration (the seed's knob)."
    )
    bytes_per_token_estimate_for_network: PositiveFloat = 2.0
    num_gpu_blocks_override: PositiveInt | None = Field(
        default=None,
        le=MAX_KV_BLOCKS,
        description="Use exactly this many KV blocks (tokens for SGLang and static) instead of what memory allows.",
    )
    step_overhead_s: NonNegativeFloat | None = Field(
        default=None, description="CPU time per engine step not hidden behind the GPU; null: framework default."
    )
    per_seq_overhead_s: NonNegativeFloat | None = Field(
        default=None, description="Extra CPU time per scheduled sequence per step; null: framework default."
    )
    moe_gemm_relative: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Grouped expert GEMMs reach this fraction of a dense GEMM's efficiency in this engine. null: "
        "the release's value for the GPU family where the framework has one (its MoE-kernel table), else the "
        "hardware's efficiency.moe_gemm_relative.",
    )

    def parallel_layout(self) -> tuple[int, int, int]:
        """(GPUs of the engine, attention data-parallel ranks, expert-parallel ranks) from this
        framework's knobs; plain tensor parallelism here, frameworks with DP attention or EP override it."""
        return self.tensor_parallel_size, 1, 1

    def check_parallel_sizes(self, key: str) -> None:
        """Raise a ConfigError naming ``key.<knob>`` when the parallel sizes do not fit together."""

    def check_divides_gpus(self, key: str, knob: str, size: int | None) -> None:
        """``key.knob`` (a rank count) must divide ``tensor_parallel_size``; None passes."""
        tp = self.tensor_parallel_size
        if size is not None and tp % size:
            raise ConfigError(f"{key}.{knob}", size, f"a divisor of tensor_parallel_size ({tp})")

    @field_validator("version", mode="before")
    @classmethod
    def _modelled_release(cls, value: Any) -> Any:
        """A release the framework's table covers (None: the newest)."""
        return value if cls.release_table is None else cls.release_table.check(value)

    @model_validator(mode="before")
    @classmethod
    def _release_defaults(cls, data: Any) -> Any:
        """Knobs left null whose default depends on the release take the modelled release's default."""
        table = cls.release_table
        if table is None or not isinstance(data, Mapping):
            return data
        try:
            version = table.check(data.get("version"))
        except ValueError:
            return data  # the version field's own check names the problem
        row = table.row(version)
        filled = dict(data)
        for knob, default in row.defaults.items():
            if filled.get(knob) is None:
                filled[knob] = default
        return filled


class FrameworkEntry(Schema):
    """One framework instance of an experiment (the seed's ``frameworks_to_test`` entries)."""

    name: str
    type: str
    is_target_for_workload: bool = True
    config: dict[str, Any]
    key: str | None = Field(default=None, description="Config path of this entry's knobs, for error messages.")


class ExperimentConfig(Schema):
    """The whole configuration of one experiment, validated."""

    name: str = "experiment"
    layout: Literal["hydra", "seed"] = "hydra"
    simulation: SimulationConfig = SimulationConfig()
    model_characteristics_db_path: str | None = None
    models: dict[str, ModelProfile] = Field(
        default_factory=dict, description="Profiles given inline (Hydra model group)."
    )
    hardware_profile: HardwareConfig
    workload: WorkloadConfig
    frameworks_to_test: tuple[FrameworkEntry, ...] = Field(min_length=1)
    metrics_config: MetricsConfig = MetricsConfig()

    # ---- helpers for error keys ----------------------------------------------------------------
    def framework_key(self, index: int) -> str:
        """Config path of a framework's knobs, as the user wrote them."""
        key = self.frameworks_to_test[index].key
        return key or ("framework" if self.layout == "hydra" else f"frameworks_to_test[{index}].config")

    @property
    def workload_key(self) -> str:
        """Config path of the workload section."""
        return "workload"

    @property
    def workload_seed(self) -> int:
        """Seed of the workload's random streams (common random numbers across frameworks)."""
        return self.workload.random_seed if self.workload.random_seed is not None else self.simulation.random_seed

    def framework_config(self, index: int) -> FrameworkConfig:
        """The typed knobs of framework ``index`` (validated against its type's schema)."""
        from llmsim.frameworks.registry import framework_spec

        entry = self.frameworks_to_test[index]
        type_key = (
            f"{self.framework_key(index)}.type" if self.layout == "hydra" else f"frameworks_to_test[{index}].type"
        )
        spec = framework_spec(entry.type, type_key)
        return validate_schema(spec.config_schema, entry.config, self.framework_key(index))

    def distributions(self) -> list[dict[str, Distribution | None]]:
        """Parsed distributions of every client profile (validates them)."""
        parsed = []
        for i, profile in enumerate(self.workload.client_profiles):
            key = f"workload.client_profiles[{i}]"
            iat = profile.inter_arrival_time_dist_config
            for name in TOKEN_LENGTH_KEYS:
                spec = getattr(profile, name)
                if spec is not None:
                    parse_dist(spec, f"{key}.{name}")  # the spec's own mistakes first
                    check_token_lengths(spec, f"{key}.{name}")
            parsed.append(
                {
                    "inter_arrival": parse_dist(iat, f"{key}.inter_arrival_time_dist_config") if iat else None,
                    "prompt": parse_dist(profile.prompt_tokens_dist_config, f"{key}.prompt_tokens_dist_config"),
                    "output": parse_dist(profile.max_output_tokens_dist_config, f"{key}.max_output_tokens_dist_config"),
                    "think": parse_dist(
                        profile.conversation_think_time_dist_config, f"{key}.conversation_think_time_dist_config"
                    ),
                    "shared_prefix": parse_dist(
                        profile.shared_prefix_tokens_dist_config, f"{key}.shared_prefix_tokens_dist_config"
                    )
                    if profile.shared_prefix_tokens_dist_config
                    else None,
                    "turns": parse_dist(profile.turns_dist_config, f"{key}.turns_dist_config")
                    if profile.turns_dist_config
                    else None,
                    "followup_prompt": parse_dist(
                        profile.followup_prompt_tokens_dist_config, f"{key}.followup_prompt_tokens_dist_config"
                    )
                    if profile.followup_prompt_tokens_dist_config
                    else None,
                }
            )
        return parsed


# ------------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------------
SEED_KEYS = {
    "simulation",
    "model_characteristics_db_path",
    "hardware_profile",
    "workload",
    "frameworks_to_test",
    "metrics_config",
    "name",
}
HYDRA_KEYS = {
    "hardware",
    "model",
    "workload",
    "framework",
    "frameworks",
    "metrics",
    "simulation",
    "name",
    "experiment",
    "resume",
    "overwrite",
}


#: Top-level switches of a Hydra run that are not part of the experiment, and their type.
RUN_CONTROL_TYPES: dict[str, type] = {"resume": bool, "overwrite": bool}


def check_run_control(data: Mapping[str, Any]) -> None:
    """Top-level run switches (``resume``, ``overwrite``) have their own type: ``resume=0.5`` or
    ``overwrite=1`` is an error (null keeps the default)."""
    for name, kind in RUN_CONTROL_TYPES.items():
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise ConfigError(name, value, "true or false" if kind is bool else f"a {kind.__name__}")


def is_seed_layout(data: Mapping[str, Any]) -> bool:
    """Whether a plain dict uses the seed's section names."""
    return "frameworks_to_test" in data or "hardware_profile" in data


def _mapping(data: Any, key: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(key, data, "a mapping of keys to values")
    return dict(data)


def _check_workload(workload: WorkloadConfig, key: str = "workload") -> None:
    """Checks across workload keys (each kind's needs, schedules, traces), before any simulation."""
    if workload.kind != "random":
        for name in ("input_len", "output_len", "range_ratio", "prefix_len"):
            if getattr(workload, name) is not None:
                raise ConfigError(
                    f"{key}.{name}", getattr(workload, name), "only used by workload=random (kind: random)"
                )
    if workload.kind == "open_loop":
        _check_open_loop(workload, key)
    elif workload.kind == "random":
        if workload.num_requests is None:
            raise ConfigError(f"{key}.num_requests", None, "a random workload needs num_requests (as --num-prompts)")
        if workload.rate_schedule is not None:
            raise ConfigError(f"{key}.rate_schedule", workload.rate_schedule, "not used by workload=random; give rate")
    else:
        for name in ("burstiness", "rate_schedule"):
            if getattr(workload, name) is not None:
                raise ConfigError(f"{key}.{name}", getattr(workload, name), "only used by open-loop workloads")
    if workload.kind == "offline":
        if workload.num_requests is None:
            raise ConfigError(f"{key}.num_requests", None, "an offline workload needs num_requests (0 or more)")
    elif workload.kind == "closed_loop" and (workload.concurrency is None or workload.num_requests is None):
        missing = "concurrency" if workload.concurrency is None else "num_requests"
        raise ConfigError(f"{key}.{missing}", None, "a closed_loop workload needs concurrency > 0 and num_requests")
    elif workload.kind == "trace":
        from llmsim.workload.trace import check_trace

        check_trace(workload, key)
    if workload.think_time_dist_config is not None:
        parse_dist(workload.think_time_dist_config, f"{key}.think_time_dist_config")
    for i, profile in enumerate(workload.client_profiles):
        if profile.turns_dist_config is not None and profile.conversational_probability > 0:
            raise ConfigError(
                f"{key}.client_profiles[{i}].turns_dist_config",
                profile.turns_dist_config,
                "give either turns_dist_config or conversational_probability > 0, not both",
            )


def expected_sessions(workload: WorkloadConfig, horizon_s: float) -> float:
    """About how many sessions a workload sends before ``horizon_s`` (for the size limit; inf if unknown)."""
    if workload.kind in ("offline", "closed_loop", "trace", "random"):
        return float(workload.num_requests) if workload.num_requests is not None else 0.0
    duration = min(workload.total_duration or math.inf, horizon_s)
    if workload.rate is not None:
        rate = workload.rate
    elif workload.rate_schedule is not None:
        from llmsim.workload.arrivals import parse_rate_schedule

        schedule = parse_rate_schedule(workload.rate_schedule, "workload.rate_schedule")
        total = float(schedule.cumulative(np.asarray(duration))) if math.isfinite(duration) else schedule.total()
        return min(total, float(workload.num_requests if workload.num_requests is not None else math.inf))
    else:
        rate = 0.0
        for profile in workload.client_profiles:
            gap = parse_dist(profile.inter_arrival_time_dist_config, "workload").mean()
            rate += 1.0 / gap if gap > 0 else math.inf
    count = rate * duration if rate > 0 else 0.0
    return min(count, float(workload.num_requests)) if workload.num_requests is not None else count


OUTPUT_KEYS = (
    "output_summary_json_path",
    "output_requests_parquet_path",
    "output_requests_csv_path",
    "output_steps_parquet_path",
)


def _check_output_paths(config: ExperimentConfig) -> None:
    """Every result file has a path of its own (two outputs in one file would overwrite each other)."""
    metrics_key = "metrics" if config.layout == "hydra" else "metrics_config"
    seen: dict[str, str] = {}
    for name in OUTPUT_KEYS:
        value = getattr(config.metrics_config, name)
        if not value:
            continue
        normal = os.path.normpath(value)
        if not os.path.isabs(normal) and (normal == ".." or normal.startswith(f"..{os.sep}")):
            raise ConfigError(
                f"{metrics_key}.{name}",
                value,
                "a path inside the run directory (it may not climb out with ..); an absolute path "
                f"outside it needs {metrics_key}.allow_outside_run_dir=true",
            )
        first = normal.split(os.sep, 1)[0]
        if not os.path.isabs(normal) and (normal in (".", "run.json") or first == ".hydra"):
            raise ConfigError(
                f"{metrics_key}.{name}", value, "a file of its own (run.json and .hydra/ are the run's own records)"
            )
        if normal in seen:
            raise ConfigError(
                f"{metrics_key}.{name}", value, f"a file of its own; {metrics_key}.{seen[normal]} writes there too"
            )
        seen[normal] = name


#: Most step-series buckets a run may span: bucket numbers stay exact in float64 arithmetic.
MAX_BUCKETS = 2**52


def _check_bucket_size(config: ExperimentConfig) -> None:
    """A step-series bucket so short that the run's time limit spans more buckets than floats count exactly."""
    bucket_s = config.metrics_config.step_series_bucket_s
    horizon = config.simulation.max_simulation_time
    if bucket_s is not None and horizon / bucket_s > MAX_BUCKETS:
        metrics_key = "metrics" if config.layout == "hydra" else "metrics_config"
        raise ConfigError(
            f"{metrics_key}.step_series_bucket_s",
            bucket_s,
            f"at least simulation.max_simulation_time / 2^52 = {horizon / MAX_BUCKETS:.3g} s (buckets are numbered "
            "exactly only up to 2^52)",
        )


def _check_workload_size(config: ExperimentConfig) -> None:
    """Refuse a workload too large to hold in memory (a typo such as rate=1e9) before sampling it."""
    workload = config.workload
    count = expected_sessions(workload, config.simulation.max_simulation_time)
    if count > MAX_SESSIONS:
        name = "num_requests" if workload.num_requests is not None else ("rate" if workload.rate else "total_duration")
        raise ConfigError(
            f"workload.{name}",
            getattr(workload, name),
            f"about {count:.3g} sessions would be sent before the run stops; at most {MAX_SESSIONS:,} per run "
            "(lower the rate, total_duration or simulation.max_simulation_time)",
        )


def mean_turns(profile: ClientProfile, turns: Distribution | None) -> float:
    """Expected requests per session of a profile: its first turn and the follow-ups (capped as drawn)."""
    cap = profile.max_conversation_turns
    if turns is not None:
        return min(max(turns.mean(), 1.0), float(cap))
    p = profile.conversational_probability
    if p >= 1.0:
        return float(cap)
    # E[min(geometric turns, cap)] = 1 + p + ... + p^(cap - 1)
    return (1.0 - p**cap) / (1.0 - p) if p > 0 else 1.0


def mean_square_turns(profile: ClientProfile, turns: Distribution | None) -> float:
    """E[turns^2] per session: a conversation of T turns holds about T^2 / 2 prompt segments."""
    cap = float(profile.max_conversation_turns)
    if turns is not None:
        mean = min(max(turns.mean(), 1.0), cap)
        return min(mean * mean + turns.variance(), cap * cap)
    p = profile.conversational_probability
    if p >= 1.0:
        return cap * cap
    if p <= 0.0:
        return 1.0
    # E[min(G, M)^2] = sum_{k<M} (2k + 1) p^k for a geometric G with P(G > k) = p^k
    tail = p**cap
    ones = (1.0 - tail) / (1.0 - p)
    ks = p * (1.0 - cap * p ** (cap - 1.0) + (cap - 1.0) * tail) / (1.0 - p) ** 2
    return 2.0 * ks + ones


#: Rough memory of one request over a run: its drawn lengths, its description while in flight and
#: its row of per-request metrics (measured: about 1.8 KB per request on a 20,000-request run).
BYTES_PER_REQUEST = 2048
#: Memory per prompt segment a conversation's requests refer to (turn t of a session lists 2t of them).
BYTES_PER_SEGMENT = 16


def memory_budget() -> float:
    """Bytes of physical memory of this machine (inf when the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - every POSIX system answers
        return math.inf


def _profile_shares(config: ExperimentConfig) -> list[float]:
    """The share of a workload's sessions each client profile sends."""
    workload = config.workload
    profiles = workload.client_profiles
    if workload.kind == "open_loop" and workload.rate is None and workload.rate_schedule is None:
        rates = []
        for dists in config.distributions():
            gap = dists["inter_arrival"].mean() if dists["inter_arrival"] is not None else math.inf
            rates.append(1.0 / gap if 0 < gap < math.inf else 0.0)
    else:
        rates = [profile.weight for profile in profiles]
    total = sum(rates)
    return [rate / total if total > 0 else 1.0 / len(rates) for rate in rates]


def _check_sizes(config: ExperimentConfig) -> None:
    """Refuse, naming the key, a config whose sizes would exhaust memory once the run draws its workload.

    Estimated before anything is drawn: requests of all turns (sessions x expected turns per session),
    shared system prompts per profile, and the inter-arrival distributions whose mean rescales the rate.
    The arrival times themselves are bounded as they are drawn (see :class:`~llmsim.workload.arrivals.ArrivalProcess`).
    """
    workload = config.workload
    if workload.kind == "trace":
        return  # a trace's requests are its rows (bounded on read)
    key = "workload.client_profiles"
    dists = config.distributions()
    for index, (profile, parsed) in enumerate(zip(workload.client_profiles, dists, strict=True)):
        if profile.shared_prefix_groups > MAX_PREFIX_GROUPS:
            raise ConfigError(
                f"{key}[{index}].shared_prefix_groups",
                profile.shared_prefix_groups,
                f"at most {MAX_PREFIX_GROUPS:,} shared system prompts per profile (each one's length is drawn and "
                "kept for the whole run)",
            )
        inter_arrival = parsed["inter_arrival"]
        rescaled = workload.kind == "open_loop" and (workload.rate is not None or workload.rate_schedule is not None)
        if inter_arrival is not None and rescaled and workload.burstiness is None:
            mean = inter_arrival.mean()
            if not 0 < mean < math.inf:
                raise ConfigError(
                    f"{key}[{index}].inter_arrival_time_dist_config",
                    profile.inter_arrival_time_dist_config,
                    f"a distribution with a finite mean > 0 (its mean, {mean:g} s, is rescaled to workload.rate); "
                    "a LogNormal's mean exp(mu + sigma_log^2/2) overflows for a wide sigma_log",
                )
    sessions = expected_sessions(workload, config.simulation.max_simulation_time)
    shares = _profile_shares(config)
    per_profile = [
        sessions * share * mean_turns(profile, parsed["turns"])
        for profile, parsed, share in zip(workload.client_profiles, dists, shares, strict=True)
    ]
    requests = sum(per_profile)
    needed = [
        sessions * share * BYTES_PER_SEGMENT * mean_square_turns(profile, parsed["turns"]) + count * BYTES_PER_REQUEST
        for profile, parsed, share, count in zip(workload.client_profiles, dists, shares, per_profile, strict=True)
    ]
    budget = memory_budget()
    if requests <= MAX_REQUESTS and sum(needed) > budget:
        index = max(range(len(needed)), key=needed.__getitem__)
        profile = workload.client_profiles[index]
        name = "turns_dist_config" if dists[index]["turns"] is not None else "max_conversation_turns"
        raise ConfigError(
            f"{key}[{index}].{name}",
            getattr(profile, name),
            f"the run would need about {sum(needed) / 2**30:.3g} GiB of memory for its requests and their "
            f"conversations (turn t of a session refers to 2t prompt segments); this machine has "
            f"{budget / 2**30:.3g} GiB (fewer or shorter conversations, or fewer sessions)",
        )
    if requests > MAX_REQUESTS:
        index = max(range(len(per_profile)), key=per_profile.__getitem__)
        profile = workload.client_profiles[index]
        turns = mean_turns(profile, dists[index]["turns"])
        if dists[index]["turns"] is not None:
            name = "turns_dist_config" if turns < profile.max_conversation_turns else "max_conversation_turns"
        elif turns >= 0.5 * profile.max_conversation_turns:
            name = "max_conversation_turns"
        else:
            name = "conversational_probability"
        raise ConfigError(
            f"{key}[{index}].{name}",
            getattr(profile, name),
            f"about {requests:.3g} requests would be sent before the run stops ({sessions:.3g} sessions, "
            f"{turns:.3g} turns each in profile {profile.profile_name!r}); at most {MAX_REQUESTS:,} requests per run "
            "(lower max_conversation_turns, conversational_probability or the number of sessions)",
        )


def _check_open_loop(workload: WorkloadConfig, key: str) -> None:
    from llmsim.workload.arrivals import parse_rate_schedule

    schedule = None
    if workload.rate_schedule is not None:
        if workload.rate is not None:
            raise ConfigError(
                f"{key}.rate", workload.rate, "set workload.rate=null when workload.rate_schedule gives the rate"
            )
        schedule = parse_rate_schedule(workload.rate_schedule, f"{key}.rate_schedule")
    if workload.burstiness is not None and workload.rate is None and schedule is None:
        raise ConfigError(f"{key}.burstiness", workload.burstiness, "needs workload.rate or workload.rate_schedule")
    if workload.total_duration is None and workload.num_requests is None:
        raise ConfigError(f"{key}.total_duration", None, "an open-loop workload needs total_duration or num_requests")
    for i, profile in enumerate(workload.client_profiles):
        if workload.rate is None and schedule is None and profile.inter_arrival_time_dist_config is None:
            raise ConfigError(
                f"{key}.client_profiles[{i}].inter_arrival_time_dist_config",
                None,
                "needed when workload.rate is null",
            )


def length_warnings(config: ExperimentConfig, draws: int = 2000) -> list[str]:
    """One line per token-length distribution that often draws below 1 token (such draws are sent as 1)."""
    from llmsim.rng import stream_rng

    lines = []
    for index, dists in enumerate(config.distributions()):
        for name, label in (
            ("prompt", "prompt_tokens"),
            ("output", "max_output_tokens"),
            ("shared_prefix", "shared_prefix_tokens"),
            ("followup_prompt", "followup_prompt_tokens"),
        ):
            dist = dists.get(name)
            if dist is None or dist.least() >= 1:
                continue
            share = float(np.mean(dist.sample(stream_rng(0, "length_check"), draws) < 1))
            if share >= 0.01:
                lines.append(
                    f"about {share:.0%} of the draws of workload.client_profiles[{index}].{label}_dist_config are "
                    "below 1 token; they are sent as 1 token (set min: 1 or choose a distribution that stays above 1)"
                )
    return lines


def context_warnings(config: ExperimentConfig, draws: int = 2000) -> list[str]:
    """One line per client profile whose first-turn prompts often do not fit a framework's context.

    Also the lines of :func:`length_warnings` (token lengths often drawn below 1).

    Such requests are refused (as vLLM refuses a prompt longer than ``max_model_len``), which a run
    reports as rejections; workloads such as ``rag`` and ``agentic`` need a long-context model.
    """
    from llmsim.rng import stream_rng

    lines = length_warnings(config, draws)
    models = config.models
    for index, entry in enumerate(config.frameworks_to_test):
        knobs = config.framework_config(index)
        model = models.get(knobs.model_profile_id)
        if model is None or not entry.is_target_for_workload:
            continue
        limit = knobs.max_model_len or model.max_position_embeddings
        for profile, dists in zip(config.workload.client_profiles, config.distributions(), strict=True):
            rng = stream_rng(0, "context_check")
            lengths = dists["prompt"].sample(rng, draws) + dists["output"].sample(rng, draws)
            if dists.get("shared_prefix") is not None and profile.shared_prefix_groups:
                lengths = lengths + profile.shared_prefix_fraction * dists["shared_prefix"].mean()
            share = float(np.mean(lengths > limit))
            if share >= 0.05:
                lines.append(
                    f"about {share:.0%} of the first turns of workload profile {profile.profile_name!r} need more than "
                    f"the {limit:,} tokens of {entry.name}'s context (model {model.name}); they will be refused. "
                    "Use a longer-context model (model=qwen2_5_7b: 131,072) or shorter prompts."
                )
    return lines


def finish_validation(config: ExperimentConfig) -> ExperimentConfig:
    """Checks that span sections: distributions, framework schemas, model ids, names."""
    check_hardware(config.hardware_profile, "hardware" if config.layout == "hydra" else "hardware_profile")
    for name, profile in config.models.items():
        check_model_data(profile.model_dump(), f"model[{name}]" if config.layout == "seed" else "model")
    _check_workload(config.workload)
    _check_workload_size(config)
    _check_sizes(config)
    _check_bucket_size(config)
    _check_output_paths(config)
    config.distributions()
    names = [entry.name for entry in config.frameworks_to_test]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("frameworks_to_test.name", name, "framework names must be unique")
    if not any(entry.is_target_for_workload for entry in config.frameworks_to_test):
        raise ConfigError(
            "frameworks_to_test.is_target_for_workload", False, "at least one framework must receive the workload"
        )
    for index in range(len(config.frameworks_to_test)):
        config.framework_config(index)
    return config


def _seed_metrics(data: Any) -> dict[str, Any]:
    """The seed's metrics_config writes only the files it names (no Parquet unless asked)."""
    metrics = _mapping(data, "metrics_config")
    metrics.setdefault("output_summary_json_path", None)
    metrics.setdefault("output_requests_parquet_path", None)
    metrics.setdefault("output_steps_parquet_path", None)
    return metrics


def from_seed_layout(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a config in the seed's layout."""
    data = dict(data)
    unknown = sorted(set(data) - SEED_KEYS)
    if unknown:
        raise ConfigError(
            unknown[0], data[unknown[0]], "unknown section; known sections are " + ", ".join(sorted(SEED_KEYS))
        )
    frameworks = data.get("frameworks_to_test")
    if not isinstance(frameworks, (list, tuple)) or not frameworks:
        raise ConfigError("frameworks_to_test", frameworks, "a non-empty list of frameworks")
    check_magnitudes(data, "")
    check_hardware_data(data.get("hardware_profile"), "hardware_profile")
    db_path = data.get("model_characteristics_db_path")
    if db_path is not None and not isinstance(db_path, str):
        raise ConfigError("model_characteristics_db_path", db_path, "a path to a model database file, or null")
    config = ExperimentConfig(
        name=str(data.get("name", "experiment")),
        layout="seed",
        simulation=validate_schema(SimulationConfig, _mapping(data.get("simulation"), "simulation"), "simulation"),
        model_characteristics_db_path=data.get("model_characteristics_db_path"),
        hardware_profile=validate_hardware(data.get("hardware_profile"), "hardware_profile"),
        workload=validate_schema(WorkloadConfig, _mapping(data.get("workload"), "workload"), "workload"),
        frameworks_to_test=tuple(
            validate_schema(FrameworkEntry, entry, f"frameworks_to_test[{i}]") for i, entry in enumerate(frameworks)
        ),
        metrics_config=validate_schema(MetricsConfig, _seed_metrics(data.get("metrics_config")), "metrics_config"),
    )
    return finish_validation(config)


def _hydra_framework_entry(framework: dict[str, Any], key: str, model_id: str, label: str | None) -> dict[str, Any]:
    """One ``frameworks_to_test`` entry from a framework group file (``name`` and ``type`` lifted out)."""
    name = framework.pop("name", None)
    fw_type = framework.pop("type", None)
    if not isinstance(fw_type, str):
        raise ConfigError(f"{key}.type", fw_type, "a framework type such as VLLM")
    return {
        "name": str(label or name or fw_type.lower()),
        "type": fw_type,
        "is_target_for_workload": True,
        "config": {**framework, "model_profile_id": model_id},
        "key": key,
    }


def from_hydra_layout(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a composed Hydra config (already converted to plain containers)."""
    data = dict(data)
    check_run_control(data)
    unknown = sorted(set(data) - HYDRA_KEYS)
    if unknown:
        raise unknown_key_error(unknown[0], data[unknown[0]], sorted(HYDRA_KEYS), "known top-level keys")
    check_magnitudes({k: v for k, v in data.items() if k != "hydra"}, "")
    check_hardware_data(data.get("hardware"), "hardware")
    model_data = _mapping(data.get("model"), "model")
    if "config_path" in model_data:  # model=hf: the profile comes from a Hugging Face config.json
        model_data = hf_profile_data(model_data)
    check_model_data(model_data, "model")
    model = validate_schema(ModelProfile, model_data, "model")
    several = _mapping(data.get("frameworks"), "frameworks")
    if several:
        entries = [
            _hydra_framework_entry(_mapping(fw, f"frameworks.{label}"), f"frameworks.{label}", model.name, str(label))
            for label, fw in several.items()
        ]
    else:
        entries = [_hydra_framework_entry(_mapping(data.get("framework"), "framework"), "framework", model.name, None)]
    config = ExperimentConfig(
        name=str(data.get("name") or "experiment"),
        layout="hydra",
        simulation=validate_schema(SimulationConfig, _mapping(data.get("simulation"), "simulation"), "simulation"),
        models={model.name: model},
        hardware_profile=validate_hardware(_mapping(data.get("hardware"), "hardware"), "hardware"),
        workload=validate_schema(WorkloadConfig, _mapping(data.get("workload"), "workload"), "workload"),
        frameworks_to_test=tuple(FrameworkEntry.model_validate(entry) for entry in entries),
        metrics_config=validate_schema(MetricsConfig, _mapping(data.get("metrics"), "metrics"), "metrics"),
    )
    return finish_validation(config)


def load_experiment_config(data: Any) -> ExperimentConfig:
    """Validate a config in either layout (an ExperimentConfig passes through)."""
    if isinstance(data, ExperimentConfig):
        return data
    if not isinstance(data, Mapping):
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(data, DictConfig):
                data = OmegaConf.to_container(data, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a core dependency
            pass
    if not isinstance(data, Mapping):
        raise ConfigError("config", type(data).__name__, "a mapping (dict, DictConfig or ExperimentConfig)")
    experiment = data.get("experiment")
    if isinstance(experiment, Mapping) and is_seed_layout(experiment):
        # A seed-layout experiment file (conf/experiment/seed_example.yaml) is taken as written.
        return from_seed_layout(experiment)
    return from_seed_layout(data) if is_seed_layout(data) else from_hydra_layout(data)
