"""Sizes a config implies are estimated before anything is drawn (issue 16, item 15).

A value that validation accepts must be one the run can hold: the reported cases
(``workload.burstiness=1e-9``, ``max_conversation_turns=1e9``, an inter-arrival LogNormal with
``sigma_log=50``, ``shared_prefix_groups=1e9``) and the rest of their class (degenerate gap shapes
under a rate schedule or without a rate, turn counts from ``turns_dist_config`` or a
``conversational_probability`` near 1, parameters whose mean or variance overflows, drawn lengths
beyond int64) end in one line naming the key, within a bounded address space and a few seconds.
"""

from __future__ import annotations

import math
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st
from test_robust_config import base_config, user_error

from llmsim.distributions import parse_distribution
from llmsim.workload.sessions import MAX_DRAWN_TOKENS, _tokens

ADDRESS_SPACE = 1536 * 2**20  # a tiny run needs well under 1 GiB; the reported cases wanted 8 GB to 820 GiB
PROFILE = "workload.client_profiles=[{inter_arrival_time_dist_config: {type: Exponential, rate: 5}, %s}]"
TINY = ["workload.total_duration=20", "simulation.max_simulation_time=30"]
CASES = {
    "burstiness": (["workload.rate=10", "workload.burstiness=1e-9"], "workload.burstiness=1e-09 is not valid"),
    "turns": (
        ["workload.rate=10", PROFILE % "conversational_probability: 1.0, max_conversation_turns: 1000000000"],
        "workload.client_profiles[0].max_conversation_turns=1000000000 is not valid: about 2e+11 requests",
    ),
    "sigma-log": (
        [
            "workload.rate=10",
            "workload.client_profiles=[{inter_arrival_time_dist_config: {type: LogNormal, mu: 0, sigma_log: 50}}]",
        ],
        "workload.client_profiles[0].inter_arrival_time_dist_config={'type': 'LogNormal', 'mu': 0, 'sigma_log': 50} "
        "is not valid: a distribution with a finite mean > 0",
    ),
    "one-endless-conversation": (
        [
            "workload=offline",
            "workload.num_requests=1",
            "workload.client_profiles=[{conversational_probability: 1.0, max_conversation_turns: 1000000}]",
        ],
        "workload.client_profiles[0].max_conversation_turns=1000000 is not valid: the run would need about "
        "1.49e+04 GiB of memory",
    ),
    "prefix-groups": (
        [PROFILE % "shared_prefix_groups: 1000000000, shared_prefix_tokens_dist_config: {type: Constant, value: 64}"],
        "workload.client_profiles[0].shared_prefix_groups=1000000000 is not valid: at most 1,000,000",
    ),
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path, float]]:
    root = tmp_path_factory.mktemp("sizes")

    def one(case: str) -> tuple[subprocess.CompletedProcess[str], Path, float]:
        run_dir = root / case
        command = [sys.executable, "-m", "llmsim", *TINY, *CASES[case][0], f"hydra.run.dir={run_dir}"]
        started = time.monotonic()
        result = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory
        )
        return result, run_dir, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(one, CASES), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_size_that_cannot_run_is_refused_before_allocating_in_one_line_naming_the_key(cli_results, case):
    result, run_dir, seconds = cli_results[case]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("llmsim: error: "), result.stderr[-2000:]
    assert CASES[case][1] in lines[0]
    assert "Traceback" not in result.stderr + result.stdout and "MemoryError" not in result.stderr
    assert not run_dir.exists()
    assert seconds < 60


def workload_with(**profile: object) -> dict:
    config = base_config()
    config["workload"].update({"kind": "open_loop", "rate": 10.0, "total_duration": 20.0, "num_requests": None})
    config["workload"]["client_profiles"][0].update(profile)
    return config


SAME_CLASS = {
    "gamma-gaps-without-rate": (
        dict(inter_arrival_time_dist_config={"type": "Gamma", "shape": 1e-9, "mean": 1.0}),
        {"rate": None},
        "workload.client_profiles[0].inter_arrival_time_dist_config",
        "more than 10,000,000 sessions would arrive",
    ),
    "wide-lognormal-gaps-rescaled": (
        dict(inter_arrival_time_dist_config={"type": "LogNormal", "mu": 0, "sigma_log": 20}),
        {},
        "workload.client_profiles[0].inter_arrival_time_dist_config",
        "more than 10,000,000 sessions would arrive",
    ),
    "bursty-schedule": (
        {},
        {"rate": None, "rate_schedule": [[0, 10]], "burstiness": 1e-9},
        "workload.burstiness",
        "more than 10,000,000 sessions would arrive",
    ),
    "turn-distribution": (
        dict(turns_dist_config={"type": "Constant", "value": 1e9}, max_conversation_turns=10**9),
        {},
        "workload.client_profiles[0].max_conversation_turns",
        "requests would be sent",
    ),
    "near-certain-follow-ups": (
        dict(conversational_probability=0.9999999, max_conversation_turns=10**9),
        {},
        "workload.client_profiles[0].conversational_probability",
        "requests would be sent",
    ),
    "overflowing-gap-mean": (
        dict(inter_arrival_time_dist_config={"type": "Exponential", "rate": 1e-320}),
        {},
        "workload.client_profiles[0].inter_arrival_time_dist_config",
        "a distribution with a finite mean",
    ),
}


@pytest.mark.parametrize("case", list(SAME_CLASS))
def test_other_sizes_of_the_same_class_are_refused_at_set_up_naming_the_key(case):
    profile, workload, key, allowed = SAME_CLASS[case]
    config = workload_with(**profile)
    config["workload"].update(workload)
    started = time.monotonic()
    error = user_error(config)
    assert error is not None and str(error).startswith(key), error
    assert allowed in str(error)
    assert time.monotonic() - started < 20


def test_a_step_bucket_too_short_for_the_time_limit_is_refused_before_the_run():
    config = base_config()
    config["metrics"]["step_series_bucket_s"] = 1e-15
    config["simulation"]["max_simulation_time"] = 1e6
    error = user_error(config)
    assert error is not None and str(error).startswith("metrics.step_series_bucket_s=1e-15 is not valid: at least")
    config["metrics"]["step_series_bucket_s"] = 1e-6
    assert user_error(config) is None


def test_a_long_conversation_within_the_request_limit_still_runs():
    config = workload_with(conversational_probability=1.0, max_conversation_turns=50)
    config["workload"].update({"total_duration": 2.0})
    assert user_error(config) is None


SPECS = st.one_of(
    st.builds(
        lambda mu, s, is_int: {"type": "LogNormal", "mu": mu, "sigma_log": s, "is_int": is_int},
        st.floats(-1e3, 1e3),
        st.floats(0, 1e3),
        st.booleans(),
    ),
    st.builds(
        lambda rate, is_int: {"type": "Exponential", "rate": rate, "is_int": is_int},
        st.floats(1e-320, 1e15),
        st.booleans(),
    ),
    st.builds(
        lambda k, scale: {"type": "Gamma", "shape": k, "scale": scale, "is_int": True},
        st.floats(1e-300, 1e15),
        st.floats(1e-300, 1e15),
    ),
    st.builds(
        lambda m, s: {"type": "Normal", "mean": m, "sigma": s, "is_int": True},
        st.floats(-1e15, 1e15),
        st.floats(0, 1e15),
    ),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(spec=SPECS)
def test_extreme_parameters_never_overflow_mean_variance_or_whole_number_draws(spec):
    dist = parse_distribution(spec, "k")
    for value in (dist.mean(), dist.variance()):
        assert isinstance(value, float) and not math.isnan(value)
    with np.errstate(all="ignore"):
        draws = dist.sample(np.random.default_rng(0), 64)
    if dist.is_int:
        assert draws.dtype == np.int64 and draws.min() >= dist.least()  # no wrap-around to negative counts
    tokens = _tokens(draws)
    assert tokens.min() >= 1 and tokens.max() <= MAX_DRAWN_TOKENS


@pytest.mark.parametrize(("p", "cap"), [(0.0, 8), (0.3, 8), (0.715, 32), (0.9, 3), (1.0, 5)])
def test_the_turn_estimates_match_the_capped_geometric_turns_the_sampler_draws(p, cap):
    from llmsim.config import ClientProfile, mean_square_turns, mean_turns

    profile = ClientProfile(conversational_probability=p, max_conversation_turns=cap)
    rng = np.random.default_rng(7)
    turns = np.minimum(rng.geometric(1.0 - p, 200_000) if p < 1 else np.full(200_000, cap), cap).astype(float)
    assert mean_turns(profile, None) == pytest.approx(turns.mean(), rel=0.01)
    assert mean_square_turns(profile, None) == pytest.approx((turns * turns).mean(), rel=0.02)
