"""``workload=random``: ``vllm bench serve --dataset-name random`` lengths, prefix and arrivals."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, conf_file, make_config

from llmsim.config import load_experiment_config
from llmsim.errors import ConfigError
from llmsim.workload.random_dataset import length_bounds
from llmsim.workload.sessions import SessionSampler


def random_workload(**changes: Any) -> dict[str, Any]:
    workload = conf_file("workload", "random")
    workload.update(changes)
    return workload


def requests_of(**changes: Any) -> list:
    config = make_config(workload={})
    config["workload"] = random_workload(**changes)
    validated = load_experiment_config(config)
    sampler = SessionSampler(validated.workload, validated.distributions(), validated.workload_seed)
    sessions = sampler.open_loop_sessions() if validated.workload.rate else sampler.batch_sessions()
    return [(session.start_time, turn) for session in sessions for turn in session.turns]


def test_the_preset_has_vllm_bench_serves_defaults():
    requests = requests_of()
    assert len(requests) == 1000  # --num-prompts
    assert {turn.prompt_tokens for _, turn in requests} == {1024}
    assert {turn.max_output_tokens for _, turn in requests} == {128}
    assert {start for start, _ in requests} == {0.0}  # --request-rate inf
    assert all(turn.streaming and turn.turn == 0 for _, turn in requests)


def test_range_ratio_draws_every_whole_number_in_vllms_interval_uniformly():
    requests = requests_of(input_len=1000, output_len=100, range_ratio=0.5, num_requests=20_000)
    prompts = np.array([turn.prompt_tokens for _, turn in requests])
    outputs = np.array([turn.max_output_tokens for _, turn in requests])
    assert prompts.min() == 500 and prompts.max() == 1500
    assert outputs.min() == 50 and outputs.max() == 150
    assert abs(prompts.mean() - 1000) < 10
    assert abs(prompts.std() - 1001 / np.sqrt(12)) < 10  # uniform on 1001 whole numbers
    assert abs(outputs.mean() - 100) < 1.5


def test_vllm_interval_bounds_floor_below_ceil_above_and_outputs_at_least_one():
    assert length_bounds(5, 0.5) == (2, 8)
    assert length_bounds(1, 0.9, 1) == (1, 2)
    assert length_bounds(128, 0.0, 1) == (128, 128)


def test_prefix_len_is_one_shared_prefix_counted_in_every_prompt():
    requests = requests_of(input_len=200, prefix_len=300, num_requests=50)
    assert {turn.prompt_tokens for _, turn in requests} == {500}
    prefixes = {turn.prompt_segments[0] for _, turn in requests}
    assert len(prefixes) == 1 and next(iter(prefixes))[1] == 300
    assert len({turn.prompt_segments[1][0] for _, turn in requests}) == 50  # the rest is each prompt's own


def test_a_finite_rate_sends_poisson_arrivals_at_that_many_requests_per_second():
    starts = np.array([start for start, _ in requests_of(rate=20.0, num_requests=4000)])
    assert len(starts) == 4000
    assert abs(len(starts) / starts.max() - 20.0) < 1.0
    gaps = np.diff(np.sort(starts))
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.1  # exponential gaps: coefficient of variation 1


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"range_ratio": 1.0}, "workload.range_ratio"),
        ({"input_len": 0}, "workload.input_len"),
        ({"num_requests": None}, "workload.num_requests"),
        ({"client_profiles": [{"profile_name": "x"}]}, "workload"),
    ],
)
def test_random_workload_mistakes_are_config_errors(changes, key):
    config = make_config(workload={})
    config["workload"] = random_workload(**changes)
    with pytest.raises(ConfigError) as raised:
        load_experiment_config(config)
    assert raised.value.key == key


def test_random_only_keys_are_refused_elsewhere():
    config = make_config(workload={"rate": 1, "total_duration": 5, "input_len": 10})
    with pytest.raises(ConfigError, match="only used by workload=random"):
        load_experiment_config(config)


@pytest.mark.slow
def test_the_command_line_of_a_fixed_length_benchmark_gives_exactly_those_requests(tmp_path):
    run_dir = tmp_path / "run"
    args = ["workload=random", "workload.input_len=512", "workload.output_len=128", "workload.rate=20"]
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", *args, "workload.num_requests=300", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert len(requests) == 300 and (requests["status"] == "completed").all()
    assert set(requests["prompt_tokens"]) == {512}
    assert set(requests["output_tokens"]) == {128}
    assert requests["streaming"].all() and (requests["turn"] == 0).all()
    assert 17 < 300 / requests["send_time_s"].max() < 23


def test_the_shared_random_prefix_is_found_in_the_prefix_cache():
    from scenario import run_quietly

    config = make_config(workload={})
    config["workload"] = random_workload(input_len=256, prefix_len=512, range_ratio=0.5, num_requests=60, rate=10.0)
    summary, requests, _ = run_quietly(config)
    assert (requests["status"] == "completed").all()
    assert requests["prompt_tokens"].between(512 + 128, 512 + 384).all()
    later = requests.sort_values("send_time_s").iloc[1:]
    assert (later["cached_prompt_tokens"] == 512).all()  # 32 full blocks of the shared prefix
    assert summary["frameworks"]["vllm"]["prefix_cache_hit_rate"] > 0
