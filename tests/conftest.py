"""Shared factories: small experiment configs in the Hydra layout, built from the real conf files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def conf_file(group: str, option: str) -> dict[str, Any]:
    """A conf/<group>/<option>.yaml file as a dict."""
    return yaml.safe_load((CONF / group / f"{option}.yaml").read_text())


def constant_profile(prompt: int, output: int, *, streaming: float = 1.0, **extra: Any) -> dict[str, Any]:
    """A client profile with fixed prompt and output lengths."""
    return {
        "profile_name": "fixed",
        "weight": 1.0,
        "prompt_tokens_dist_config": {"type": "Constant", "value": prompt, "is_int": True},
        "max_output_tokens_dist_config": {"type": "Constant", "value": output, "is_int": True},
        "conversational_probability": 0.0,
        "streaming_response_probability": streaming,
        **extra,
    }


def make_config(
    *,
    hardware: str = "a100",
    model: str = "llama3_8b",
    framework: dict[str, Any] | None = None,
    workload: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    simulation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Hydra-layout config dict: the real conf files with overrides merged on top (no file outputs)."""
    fw = conf_file("framework", "vllm")
    fw.update(framework or {})
    workload = dict(workload or {})
    open_loop = "rate" in workload or "total_duration" in workload
    wl = {
        "kind": "open_loop" if open_loop else "offline",
        "rate": None,
        "total_duration": None,
        "num_requests": None if open_loop else 1,
        "client_profiles": [constant_profile(100, 10)],
    }
    wl.update(workload)
    mt = conf_file("metrics", "default")
    mt.update(
        {
            "output_summary_json_path": None,
            "output_requests_parquet_path": None,
            "output_steps_parquet_path": None,
            "record_step_series": True,  # tests read the series back
            "output_requests_csv_path": None,
        }
    )
    mt.update(metrics or {})
    sim = conf_file("simulation", "default")
    sim.update(simulation or {})
    return {
        "name": "test",
        "hardware": conf_file("hardware", hardware),
        "model": conf_file("model", model),
        "framework": fw,
        "workload": wl,
        "metrics": mt,
        "simulation": sim,
    }


@pytest.fixture
def config_factory():
    """The :func:`make_config` factory (deep-copied inputs)."""
    return lambda **kw: make_config(**copy.deepcopy(kw))


def trace_workload(path: Path | str, **extra: Any) -> dict[str, Any]:
    """A trace-replay workload of ``path`` (every request streamed), with ``extra`` keys on top."""
    return {
        "kind": "trace",
        "path": str(path),
        "total_duration": None,
        "num_requests": None,
        "client_profiles": [{"profile_name": "trace", "streaming_response_probability": 1.0}],
        **extra,
    }
