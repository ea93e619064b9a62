"""Fuzz of ACCEPTED configs (issue 16, "done when"): whatever validation lets through runs cleanly.

Hypothesis draws one option of every config group (hardware, model, framework, workload, metrics,
simulation) and a few knobs of each, with a tiny workload; a config the set-up refuses is discarded
(that side is tests/test_robust_config.py), every accepted one is run through the Python API
(``ExperimentOrchestrator``) in a child process whose address space is limited, from an empty
working directory with an empty ``HOME``. Each run must end without a traceback (an LLMSimError
would be a one-line refusal after validation passed, which is reported too), with no NaN anywhere in
its summary and with every file it wrote inside its run directory.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from llmsim import ExperimentOrchestrator
from llmsim.cli import experiment_container
from llmsim.errors import LLMSimError
from llmsim.overrides import compose_config

pytestmark = pytest.mark.slow

ADDRESS_SPACE = 2 * 2**30  # a tiny run needs well under 1 GiB of address space
OPTIONS = {group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")) for group in ("hardware", "model")}
FRAMEWORKS = ("vllm", "trtllm", "sglang", "static")
WORKLOADS = ("chat", "agentic", "rag", "sharegpt", "diurnal", "closed_loop", "offline", "random", "trace")
BATCH_KEY = {
    "vllm": "max_num_seqs",
    "trtllm": "max_batch_size",
    "sglang": "max_running_requests",
    "static": "max_batch_size",
}

WORKER = """
import json, resource, sys, traceback
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from llmsim import ExperimentOrchestrator
from llmsim.errors import LLMSimError
config = json.loads(open(sys.argv[1]).read())
try:
    ExperimentOrchestrator(config, output_dir=sys.argv[2]).run(show_progress=False, print_table=False)
except LLMSimError as exc:
    print("LLMSIM_ERROR", exc, file=sys.stderr)
    sys.exit(2)
"""


def hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (``{type:Constant,value:5}``, ``[1,2]``)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


LENGTHS = st.one_of(
    st.builds(lambda v: {"type": "Constant", "value": v, "is_int": True}, st.integers(1, 300)),
    st.builds(
        lambda lo, w: {"type": "Uniform", "low": lo, "high": lo + w, "is_int": True},
        st.integers(1, 50),
        st.integers(0, 200),
    ),
    st.builds(
        lambda m, s: {"type": "LogNormal", "mean": m, "sigma": s, "is_int": True, "max": 2000},
        st.integers(5, 400),
        st.integers(0, 300),
    ),
    st.builds(lambda m: {"type": "Poisson", "mean": m}, st.integers(1, 200)),
    st.builds(lambda s, n: {"type": "Zipf", "s": s, "n": n}, st.sampled_from([0.5, 1.1, 2]), st.integers(1, 500)),
    st.builds(
        lambda m, s: {"type": "Normal", "mean": m, "sigma": s, "is_int": True, "min": 1},
        st.integers(1, 300),
        st.integers(0, 100),
    ),
    st.just({"type": "Empirical", "values": [3, 30, 300], "weights": [1, 2, 1]}),
    st.just(
        {
            "type": "Mixture",
            "components": [{"type": "Constant", "value": 10, "weight": 3}, {"type": "Exponential", "rate": 0.01}],
        }
    ),
)
GAPS = st.one_of(
    st.none(),
    st.builds(lambda r: {"type": "Exponential", "rate": r}, st.sampled_from([0.5, 5])),
    st.builds(lambda k: {"type": "Gamma", "shape": k, "mean": 0.5}, st.sampled_from([0.05, 1, 8])),
    st.builds(lambda s: {"type": "LogNormal", "mean": 0.5, "sigma": s}, st.sampled_from([0.1, 2])),
)


@st.composite
def client_profile(draw: st.DrawFn, needs_gaps: bool) -> dict[str, Any]:
    """One client profile with drawn lengths, conversations and shared prefixes (all accepted values)."""
    profile: dict[str, Any] = {
        "prompt_tokens_dist_config": draw(LENGTHS),
        "max_output_tokens_dist_config": draw(LENGTHS),
        "streaming_response_probability": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "conversational_probability": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "max_conversation_turns": draw(st.integers(1, 4)),
        "shared_prefix_groups": draw(st.sampled_from([0, 1, 3])),
        "shared_prefix_tokens_dist_config": draw(LENGTHS),
    }
    gaps = draw(GAPS)
    if gaps is None and needs_gaps:
        gaps = {"type": "Exponential", "rate": 2}
    if gaps is not None:
        profile["inter_arrival_time_dist_config"] = gaps
    return profile


@st.composite
def accepted_overrides(draw: st.DrawFn) -> list[str]:
    """Hydra overrides of one option per group, a tiny workload and a few knobs."""
    framework = draw(st.sampled_from(FRAMEWORKS))
    workload = draw(st.sampled_from(WORKLOADS))
    overrides = [
        f"hardware={draw(st.sampled_from(OPTIONS['hardware']))}",
        f"model={draw(st.sampled_from(OPTIONS['model']))}",
        f"framework={framework}",
        f"workload={workload}",
        f"framework.tensor_parallel_size={draw(st.sampled_from([1, 2, 4, 8]))}",
        f"framework.{BATCH_KEY[framework]}={draw(st.sampled_from([1, 4, 64]))}",
        f"simulation.random_seed={draw(st.integers(0, 2**31))}",
        f"simulation.fast_forward={draw(st.booleans())}",
        f"simulation.max_simulation_time={draw(st.sampled_from([5, 20, 60]))}",
        f"metrics.warm_up_duration_s={draw(st.sampled_from([0, 0.5]))}",
        f"metrics.step_series_bucket_s={draw(st.sampled_from(['null', 0.25, 5]))}",
        f"metrics.output_requests_csv_path={draw(st.sampled_from(['null', 'requests.csv', 'sub/dir/requests.csv']))}",
        f"metrics.slo_ttft_ms={draw(st.sampled_from(['null', 50, 2000]))}",
        f"workload.stream_chunk_tokens={draw(st.sampled_from([1, 4]))}",
    ]
    if workload in ("chat", "agentic", "rag", "sharegpt", "diurnal"):
        overrides.append(f"workload.total_duration={draw(st.sampled_from([1, 3]))}")
        if workload != "diurnal":
            overrides.append(f"workload.rate={draw(st.sampled_from([1, 4, 20]))}")
            overrides.append(f"workload.burstiness={draw(st.sampled_from(['null', 0.25, 1, 4]))}")
        overrides.append(f"workload.num_requests={draw(st.sampled_from(['null', 1, 8]))}")
        if workload in ("chat", "diurnal") and draw(st.booleans()):
            profiles = draw(st.lists(client_profile(needs_gaps=False), min_size=1, max_size=2))
            overrides.append(f"workload.client_profiles={hydra_value(profiles)}")
    elif workload == "closed_loop":
        overrides += [
            f"workload.num_requests={draw(st.integers(1, 12))}",
            f"workload.concurrency={draw(st.integers(1, 4))}",
        ]
    elif workload == "trace":
        overrides.append(f"workload.num_requests={draw(st.integers(1, 12))}")
        overrides.append(f"workload.loop={draw(st.integers(1, 3))}")
    else:  # offline, random
        overrides.append(f"workload.num_requests={draw(st.integers(0 if workload == 'offline' else 1, 12))}")
    return overrides


def accepted(overrides: list[str]) -> dict[str, Any] | None:
    """The experiment config of ``overrides``, or None when validation or set-up refuses it."""
    try:
        config = experiment_container(compose_config(overrides))
        ExperimentOrchestrator(config, output_dir=None).setup_simulation()
    except LLMSimError:
        return None
    return config


def nan_paths(value: Any, path: str = "") -> list[str]:
    if isinstance(value, float) and math.isnan(value):
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in nan_paths(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in nan_paths(item, f"{path}[{index}]")]
    return []


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(overrides=accepted_overrides())
def test_every_accepted_config_runs_without_traceback_nan_or_files_outside_its_run(overrides, tmp_path_factory):
    config = accepted(overrides)
    event("accepted" if config is not None else "refused by validation")
    assume(config is not None)
    root = tmp_path_factory.mktemp("fuzz")
    cwd, home, run_dir = root / "cwd", root / "home", root / "run"
    cwd.mkdir()
    home.mkdir()
    config_file = root / "config.json"
    config_file.write_text(json.dumps(config))
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(config_file), str(run_dir), str(ADDRESS_SPACE)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    where = " ".join(overrides)
    assert "Traceback" not in result.stderr, f"{where}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{where}: refused after validation passed: {result.stderr[-1000:]}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not nan_paths(summary), f"{where}: NaN at {nan_paths(summary)}"
    assert files_under(root) - files_under(run_dir) == {config_file}, where  # nothing outside the run
    assert not files_under(cwd) and not files_under(home)
