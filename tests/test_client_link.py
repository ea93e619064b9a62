"""The client link: a burst reaches the server in send order, and in-process clients cross no link."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, make_config
from scenario import framework_for, run_quietly, step_time

from llmsim.config import load_experiment_config

SLOW_LINK = {"link_id": "slow", "bandwidth_bps": 1e6, "latency_s": 1e-3}  # 16 us a token at 2 bytes a token


def burst(tmp_path: Path, prompts: list[int], *, output: int = 4, times: list[float] | None = None, **workload) -> dict:
    """A config that sends one request per prompt length, in this order, all at t=0 unless ``times``."""
    path = tmp_path / "burst.csv"
    rows = {
        "arrival_time": times or [0.0] * len(prompts),
        "input_tokens": prompts,
        "output_tokens": [output] * len(prompts),
    }
    pd.DataFrame(rows).to_csv(path, index=False)
    trace = {
        "kind": "trace",
        "path": str(path),
        "total_duration": None,
        "num_requests": None,
        "client_profiles": [{"profile_name": "trace", "streaming_response_probability": 1.0}],
    }
    return make_config(workload={**trace, **workload})


def in_send_order(requests: pd.DataFrame) -> pd.DataFrame:
    return requests.sort_values(["send_time_s", "request_id"]).reset_index(drop=True)


def serialisation(tokens: int) -> float:
    return tokens * 2 * 8 / SLOW_LINK["bandwidth_bps"]


def test_a_burst_reaches_the_server_in_send_order_one_upload_after_another(tmp_path):
    prompts = [900, 40, 2048, 5, 300]
    config = burst(tmp_path, prompts)
    config["hardware"]["network_links"] = [SLOW_LINK]
    _, requests, _ = run_quietly(config)
    rows = in_send_order(requests)
    assert list(rows["prompt_tokens"]) == prompts
    # each upload starts when the link has finished the one before, and lands a latency later
    start, expected = 0.0, []
    for tokens in prompts:
        expected.append(start + SLOW_LINK["latency_s"] + serialisation(tokens))
        start += serialisation(tokens)
    assert list(rows["arrival_time_s"]) == pytest.approx(expected, abs=1e-12)
    assert rows["arrival_time_s"].is_monotonic_increasing  # not shortest prompt first
    # the engine starts on the first arrival: the 900-token prompt is scheduled before the 5-token one
    assert rows["first_scheduled_time_s"].is_monotonic_increasing
    assert rows["first_scheduled_time_s"][0] == pytest.approx(expected[0], abs=1e-12)


def test_a_request_sent_while_the_link_is_busy_waits_for_it_and_one_sent_later_does_not(tmp_path):
    prompts = [2000, 10, 10]
    busy_until = serialisation(2000)  # 32 ms
    config = burst(tmp_path, prompts, times=[0.0, busy_until / 2, 1.0])
    config["hardware"]["network_links"] = [SLOW_LINK]
    _, requests, _ = run_quietly(config)
    rows = in_send_order(requests)
    latency = SLOW_LINK["latency_s"]
    assert rows["arrival_time_s"][1] == pytest.approx(busy_until + serialisation(10) + latency, abs=1e-12)
    assert rows["arrival_time_s"][2] == pytest.approx(1.0 + serialisation(10) + latency, abs=1e-12)


def test_in_process_clients_give_the_first_step_the_burst_in_send_order(tmp_path):
    # budget 1000 tokens: the first step takes 300 + 200 + the first 500 of 700; the 100-token
    # prompt, sent last, waits although it is the shortest
    config = burst(tmp_path, [300, 200, 700, 100], client_link=False)
    config["framework"]["max_num_batched_tokens"] = 1000
    _, requests, steps = run_quietly(config)
    rows = in_send_order(requests)
    assert (rows["arrival_time_s"] == 0.0).all() and (rows["send_time_s"] == 0.0).all()
    assert list(rows["first_scheduled_time_s"][:3]) == [0.0, 0.0, 0.0]
    assert rows["first_scheduled_time_s"][3] > 0.0
    first = steps.iloc[0]
    assert first["time_s"] == 0.0
    assert first["num_seqs"] == 3 and first["num_prefill_tokens"] == 1000


def test_in_process_answers_reach_the_client_the_moment_the_engine_emits_them(tmp_path):
    config = make_config(
        workload={
            "kind": "offline",
            "num_requests": 1,
            "client_link": False,
            "client_profiles": [
                {
                    "profile_name": "one",
                    "prompt_tokens_dist_config": {"type": "Constant", "value": 100, "is_int": True},
                    "max_output_tokens_dist_config": {"type": "Constant", "value": 3, "is_int": True},
                    "streaming_response_probability": 1.0,
                }
            ],
        }
    )
    fw = framework_for(config)
    first = step_time(fw, prefill=[(100, 0, True)])
    last = first + step_time(fw, decode=[101]) + step_time(fw, decode=[102])
    _, requests, _ = run_quietly(config)
    row = requests.iloc[0]
    assert row["arrival_time_s"] == 0.0
    assert row["first_token_time_s"] == pytest.approx(first, abs=1e-12)
    assert row["completion_time_s"] == pytest.approx(last, abs=1e-12)


def test_each_framework_has_its_own_client_link():
    # the seed layout compares two deployments; each gets its copy of the burst over its own link
    config = yaml.safe_load((REPO / "conf" / "experiment" / "seed_example.yaml").read_text())
    config["hardware_profile"]["compute_devices"].append(
        {**config["hardware_profile"]["compute_devices"][0], "device_id": "gpu1"}
    )
    config["hardware_profile"]["network_links"] = [SLOW_LINK]
    second = copy.deepcopy(config["frameworks_to_test"][0])
    second["name"], second["config"]["gpu_id"] = "second", "gpu1"
    config["frameworks_to_test"].append(second)
    config["workload"] = {
        "kind": "offline",
        "num_requests": 2,
        "client_link": True,  # a served batch (an offline one is in-process by default)
        "total_duration": None,
        "client_profiles": [
            {
                "profile_name": "burst",
                "prompt_tokens_dist_config": {"type": "Constant", "value": 1000, "is_int": True},
                "max_output_tokens_dist_config": {"type": "Constant", "value": 2, "is_int": True},
            }
        ],
    }
    config["metrics_config"] = {"warm_up_duration_s": 0, "record_step_series": True}
    config["model_characteristics_db_path"] = None
    _, requests, _ = run_quietly(config)
    assert sorted(requests["framework"].unique()) == ["second", "vllm_Llama3_8B_fp16"]
    for _, rows in requests.groupby("framework"):
        expected = [SLOW_LINK["latency_s"] + k * serialisation(1000) for k in (1, 2)]
        assert list(in_send_order(rows)["arrival_time_s"]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_the_offline_workload_runs_its_clients_in_process_and_random_goes_over_the_link(tmp_path):
    def requests_of(*args: str) -> pd.DataFrame:
        run_dir = tmp_path / args[0].split("=")[1]
        result = subprocess.run(
            [sys.executable, "-m", "llmsim", *args, "workload.num_requests=4", f"hydra.run.dir={run_dir}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["frameworks"]["vllm"]["completed"] == 4
        return pd.read_parquet(run_dir / "requests.parquet")

    offline = requests_of("workload=offline")
    assert (offline["arrival_time_s"] == offline["send_time_s"]).all()
    served = requests_of("workload=random", "workload.input_len=64", "workload.output_len=4")
    assert (served["arrival_time_s"] > served["send_time_s"]).all()
    assert in_send_order(served)["arrival_time_s"].is_monotonic_increasing


@pytest.mark.slow
def test_a_client_link_that_is_not_true_or_false_is_refused_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", "workload.client_link=sometimes", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("llmsim: error: workload.client_link='sometimes' is not valid: true or false")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        ({"kind": "offline", "num_requests": 3}, False),
        ({"kind": "offline", "num_requests": 3, "client_link": True}, True),
        ({"rate": 2, "total_duration": 5}, True),
        ({"rate": 2, "total_duration": 5, "client_link": False}, False),
    ],
)
def test_an_offline_batch_runs_in_process_unless_told_and_everything_else_crosses_the_link(workload, expected):
    assert load_experiment_config(make_config(workload=workload)).workload.has_client_link is expected
