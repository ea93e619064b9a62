"""Command-line overrides: unknown keys get a suggestion, nested workload keys can be set as written.

Through the real CLI (``python -m llmsim``): a typo is one line naming the nearest known keys, in a
single run and before any job of a ``--multirun`` sweep starts; a distribution given on the command
line replaces the preset's instead of being merged into it.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from llmsim.cli import normalize_overrides, preflight
from llmsim.errors import ConfigError

pytestmark = pytest.mark.slow

TINY = ["workload.total_duration=2", "simulation.max_simulation_time=20"]


def llmsim_cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmsim", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


#: command line -> (text the one error line must contain, ...)
TYPOS = {
    "framework": (["framework.max_num_seq=64"], ["framework.max_num_seq=64", "did you mean framework.max_num_seqs?"]),
    "framework-plus": (["+framework.max_num_seq=64"], ["did you mean framework.max_num_seqs?"]),
    "metrics": (
        ["metrics.slo_p99_ttft_ms=500"],
        ["metrics.slo_p99_ttft_ms=500", "did you mean metrics.slo_ttft_ms", "slo_e2el_ms"],
    ),
    "workload-profile": (
        ["workload.client_profiles.0.promt_tokens_dist_config={type:Constant,value:5}"],
        [
            "workload.client_profiles.0.promt_tokens_dist_config=",
            "did you mean workload.client_profiles.0.prompt_tokens_dist_config",
        ],
    ),
    "workload-index": (["workload.client_profiles.3.weight=2"], ["workload.client_profiles has 1 entry (index 0)"]),
    "top-level": (["seeed=3"], ["seeed=3", "unknown key", "known top-level keys are"]),
    "sweep": (
        ["--multirun", "framework.max_num_seq=64,128", "workload.rate=5,10"],
        ["framework.max_num_seq=64", "did you mean framework.max_num_seqs?"],
    ),
    "sweep-over-groups": (
        ["--multirun", "framework=vllm,sglang", "framework.max_num_seq=64"],
        ["did you mean framework.max_num_seqs?"],
    ),
}


@pytest.fixture(scope="module")
def typo_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    root = tmp_path_factory.mktemp("typos")

    def one(case: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        where = root / case
        where.mkdir()
        return llmsim_cli(*TYPOS[case][0], *TINY, cwd=where), where

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(TYPOS, pool.map(one, TYPOS), strict=True))


@pytest.mark.parametrize("case", list(TYPOS))
def test_an_unknown_key_is_one_line_naming_the_nearest_known_keys_before_anything_runs(typo_results, case):
    result, where = typo_results[case]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("llmsim: error: "), result.stderr
    for text in TYPOS[case][1]:
        assert text in lines[0]
    assert "To append" not in lines[0] and "Traceback" not in result.stderr
    assert not list(where.iterdir())  # no run or sweep directory was made


def test_an_unknown_key_lists_the_keys_of_its_group():
    with pytest.raises(ConfigError) as raised:
        preflight(["framework.max_num_seq=64", *TINY])
    message = str(raised.value)
    for known in ("max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching", "gpu_memory_utilization"):
        assert known in message


def test_a_distribution_on_the_command_line_replaces_the_presets_instead_of_merging_into_it():
    rewritten, _ = normalize_overrides(["workload.client_profiles.0.prompt_tokens_dist_config={type:Constant,value:5}"])
    assert rewritten == [
        "++workload.client_profiles.0.prompt_tokens_dist_config=null",
        "workload.client_profiles.0.prompt_tokens_dist_config={type:Constant,value:5}",
    ]
    plain, missing = normalize_overrides(["workload.rate=5", "framework.max_num_seqs=64"])
    assert plain == ["workload.rate=5", "framework.max_num_seqs=64"] and missing == []


def test_a_documented_key_missing_from_the_preset_yaml_can_be_set_without_plus():
    rewritten, missing = normalize_overrides(["workload.client_profiles.0.shared_prefix_groups=2"])
    assert rewritten == ["++workload.client_profiles.0.shared_prefix_groups=2"]
    assert missing == ["workload.client_profiles.0.shared_prefix_groups"]
    preflight(["workload.client_profiles.0.shared_prefix_groups=2", *TINY])  # validates


def test_nested_workload_keys_set_on_the_command_line_give_exactly_those_lengths(tmp_path):
    run_dir = tmp_path / "run"
    result = llmsim_cli(
        "workload.client_profiles.0.prompt_tokens_dist_config={type:Constant,value:512}",
        "workload.client_profiles.0.max_output_tokens_dist_config={type:Constant,value:128}",
        "workload.client_profiles.0.conversational_probability=0",
        "workload.client_profiles.0.shared_prefix_groups=1",
        "workload.client_profiles.0.shared_prefix_tokens_dist_config={type:Constant,value:64}",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert len(requests) > 5
    assert set(requests["prompt_tokens"]) == {512 + 64}
    assert set(requests["max_output_tokens"]) == {128}


def test_a_sweep_over_groups_with_a_key_only_one_of_them_knows_fails_that_job_alone(tmp_path):
    result = llmsim_cli(
        "--multirun", "framework=vllm,sglang", "framework.max_num_seqs=64", *TINY, f"hydra.sweep.dir={tmp_path}/s"
    )
    assert result.returncode == 3, result.stderr[-2000:]  # a sweep with a failed job exits 3
    assert "Traceback" not in result.stderr
    failed = [line for line in (result.stdout + result.stderr).splitlines() if "failed:" in line]
    assert len(failed) == 1 and "framework=sglang" in failed[0]
    assert "framework.max_num_seqs=64 is not valid: unknown key" in failed[0]
