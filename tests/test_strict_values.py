"""Strict values: booleans are not numbers, lengths below one token, links, sizes that cannot run.

Issue 16, items 7, 8, 11 and 15. In process, every numeric key of every group (and every framework)
is given ``true`` and every boolean key ``1``; both must be refused naming the key. Through the real
command line, the reported cases (``model.head_dim=true``, ``resume=0.5``, ``true`` among the
percentiles, ``hardware.network_links=[]``, ``min: -1000`` on prompt lengths, sizes that would exhaust
memory) end in one line on stderr, exit code 2 and no run directory.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_robust_config import LEAVES, base_config, key_of, user_error, with_value

from llmsim import ExperimentOrchestrator
from llmsim.errors import ConfigError

NUMBER_LEAVES = [leaf for leaf in LEAVES if isinstance(leaf[2], (int, float)) and not isinstance(leaf[2], bool)]
BOOL_LEAVES = [leaf for leaf in LEAVES if isinstance(leaf[2], bool)]


def test_every_numeric_key_of_every_group_refuses_true_naming_the_key():
    assert len(NUMBER_LEAVES) > 50  # hardware, model, workload, framework, metrics, simulation
    wrong = []
    for framework, path, _ in NUMBER_LEAVES:
        error = user_error(with_value(base_config(framework), path, True))
        if error is None or f"{key_of(path)}=True is not valid" not in str(error):
            wrong.append(f"{framework}: {key_of(path)}=true -> {error}")
    assert not wrong, "\n".join(wrong)


def test_every_boolean_key_of_every_group_refuses_a_number_naming_the_key():
    assert len(BOOL_LEAVES) > 5
    wrong = []
    for framework, path, _ in BOOL_LEAVES:
        for value in (1, 0, 0.5):
            error = user_error(with_value(base_config(framework), path, value))
            if error is None or f"{key_of(path)}={value} is not valid: true or false" not in str(error):
                wrong.append(f"{framework}: {key_of(path)}={value} -> {error}")
    assert not wrong, "\n".join(wrong)


def test_true_inside_a_list_of_numbers_is_refused_and_real_numbers_still_pass():
    config = base_config()
    error = user_error(with_value(config, ("metrics", "percentiles_to_calculate"), [50, True]))
    assert error is not None and "metrics.percentiles_to_calculate[1]=True is not valid" in str(error)
    # ints for floats and whole floats for ints (Hydra reads 1e3 as a float) are what YAML gives: accepted
    config = with_value(config, ("metrics", "percentiles_to_calculate"), [50, 99.9])
    config = with_value(config, ("framework", "max_num_seqs"), 1e3)
    config = with_value(config, ("simulation", "max_simulation_time"), 60)
    assert user_error(config) is None


def test_a_hardware_profile_without_network_links_is_refused_before_the_run_in_either_layout():
    seed = yaml.safe_load((REPO / "conf" / "experiment" / "seed_example.yaml").read_text())
    seed["hardware_profile"]["network_links"] = []
    with pytest.raises(ConfigError, match=r"hardware_profile\.network_links=\[\] is not valid: at least one link"):
        ExperimentOrchestrator(seed, output_dir=None).setup_simulation()
    error = user_error(with_value(base_config(), ("hardware", "network_links"), []))
    assert error is not None and str(error).startswith("hardware.network_links=[] is not valid")


LENGTH_SPECS = {
    "min": ({"type": "Normal", "mean": 50, "sigma": 10, "min": -1000}, "min=-1000"),
    "min-zero": ({"type": "LogNormal", "mean": 50, "sigma": 10, "min": 0, "is_int": True}, "min=0"),
    "constant": ({"type": "Constant", "value": 0}, "value=0"),
    "uniform": ({"type": "Uniform", "low": 0, "high": 9, "is_int": True}, "low=0"),
    "empirical": ({"type": "Empirical", "values": [0, 5, 9]}, "values=[0, 5, 9]"),
    "mixture": (
        {
            "type": "Mixture",
            "components": [{"type": "Constant", "value": 4}, {"type": "Uniform", "low": 0.2, "high": 3}],
        },
        "components[1].low=0.2",
    ),
}


@pytest.mark.parametrize("name", ["prompt", "max_output", "followup_prompt", "shared_prefix"])
@pytest.mark.parametrize("case", list(LENGTH_SPECS))
def test_a_token_length_distribution_with_a_bound_below_one_token_is_refused_naming_it(name, case):
    spec, shown = LENGTH_SPECS[case]
    config = base_config()
    profile = config["workload"]["client_profiles"][0]
    profile[f"{name}_tokens_dist_config"] = spec
    if name == "shared_prefix":
        profile["shared_prefix_groups"] = 2
    error = user_error(config)
    key = f"workload.client_profiles[0].{name}_tokens_dist_config.{shown}"
    assert error is not None and str(error).startswith(f"{key} is not valid:"), error
    assert "at least 1" in str(error)


def test_a_length_distribution_that_often_draws_below_one_token_is_accepted_with_a_warning():
    from llmsim.config import context_warnings, load_experiment_config

    config = base_config()
    profile = config["workload"]["client_profiles"][0]
    profile["max_output_tokens_dist_config"] = {"type": "Poisson", "mean": 1.0}
    assert user_error(config) is None
    lines = context_warnings(load_experiment_config(config))
    assert any("max_output_tokens_dist_config are below 1 token; they are sent as 1" in line for line in lines)
    profile["max_output_tokens_dist_config"] = {"type": "Poisson", "mean": 1.0, "min": 1}
    assert not [line for line in context_warnings(load_experiment_config(config)) if "below 1 token" in line]


def llmsim_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmsim", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


TINY = ["workload.total_duration=5", "simulation.max_simulation_time=10"]
CASES = {
    "head-dim-true": (["model.head_dim=true"], "model.head_dim=True is not valid: a number, not true/false"),
    "resume-half": (["resume=0.5"], "resume=0.5 is not valid: true or false"),
    "resume-one": (["resume=1"], "resume=1 is not valid: true or false"),
    "percentile-true": (["metrics.percentiles_to_calculate=[50,true]"], "metrics.percentiles_to_calculate[1]=True"),
    "prefix-caching-one": (["framework.enable_prefix_caching=1"], "framework.enable_prefix_caching=1"),
    "no-client-link": (["hardware.network_links=[]"], "hardware.network_links=[] is not valid: at least one link"),
    "prompt-min-below-one": (
        [
            "workload.client_profiles=[{prompt_tokens_dist_config: {type: Normal, mean: 5, sigma: 100, is_int: true, "
            "min: -1000}, inter_arrival_time_dist_config: {type: Exponential, rate: 1}}]"
        ],
        "workload.client_profiles[0].prompt_tokens_dist_config.min=-1000 is not valid: a number >= 1",
    ),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every bad command line, run concurrently once."""
    root = tmp_path_factory.mktemp("strict")

    def one(case: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        run_dir = root / case
        return llmsim_cli(*TINY, *CASES[case][0], f"hydra.run.dir={run_dir}"), run_dir

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(CASES, pool.map(one, CASES), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_value_of_the_wrong_kind_on_the_command_line_is_one_line_exit_2_nothing_written(cli_results, case):
    result, run_dir = cli_results[case]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("llmsim: error: "), result.stderr
    assert CASES[case][1] in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()
