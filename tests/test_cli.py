"""End-to-end runs through the real command line, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from llmsim import ConfigError, ExperimentOrchestrator

pytestmark = pytest.mark.slow


def run_cli(*args: str, run_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "llmsim", *args, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_default_run_prints_latency_and_throughput_and_writes_outputs(tmp_path):
    result = run_cli("workload.total_duration=30", run_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    for label in ("TTFT", "TPOT", "ITL", "E2EL", "Output token throughput"):
        assert label in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    metrics = summary["frameworks"]["vllm"]
    assert metrics["completed"] > 200
    assert metrics["output_throughput"] > 0
    assert (tmp_path / "requests.parquet").stat().st_size > 0
    assert (tmp_path / "steps.parquet").stat().st_size > 0
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_h100_llama3_70b_with_tensor_parallel_4_runs(tmp_path):
    result = run_cli(
        "hardware=h100",
        "model=llama3_70b",
        "framework.tensor_parallel_size=4",
        "workload.total_duration=20",
        run_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    deployment = json.loads((tmp_path / "summary.json").read_text())["deployments"]["vllm"]
    assert deployment["tensor_parallel_size"] == 4
    assert deployment["gpus"] == ["gpu0", "gpu1", "gpu2", "gpu3"]


def test_same_command_twice_gives_identical_summary(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_cli("workload.total_duration=20", run_dir=first).returncode == 0
    assert run_cli("workload.total_duration=20", run_dir=second).returncode == 0
    assert (first / "summary.json").read_text() == (second / "summary.json").read_text()


def test_seed_example_yaml_runs_as_written_through_the_cli(tmp_path):
    result = run_cli("experiment=seed_example", run_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["frameworks"]["vllm_Llama3_8B_fp16"]["completed"] > 1000
    assert (tmp_path / "results" / "detailed_requests.csv").exists()


def test_seed_example_runs_through_the_orchestrator_api(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((REPO / "conf" / "experiment" / "seed_example.yaml").read_text())
    summary = ExperimentOrchestrator(config).run()
    assert "vllm_Llama3_8B_fp16" in summary["frameworks"]
    assert "vllm_Llama3_8B_fp16" in capsys.readouterr().out  # the printed table
    saved = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert saved["frameworks"].keys() == summary["frameworks"].keys()
    assert (tmp_path / "results" / "detailed_requests.csv").stat().st_size > 0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("framework=nope", "framework='nope'"),
        ("hardware=tpu9", "one of a100"),
        ("framework.max_num_seqs=abc", "framework.max_num_seqs='abc'"),
        ("workload.rate=-1", "workload.rate=-1"),
        ("workload.rate=0", "greater than 0"),
        ("+framework.typo=1", "framework.typo=1"),
        ("framework.typo=1", "framework.typo"),
        ("model=llama3_70b", "tensor_parallel_size=2 would fit"),
        ("framework.tensor_parallel_size=3", "divisor of the model's 32 attention heads"),
        ("framework.tensor_parallel_size=16", "the node has 8 GPUs"),
        ("framework.gpu_memory_utilization=1.5", "framework.gpu_memory_utilization=1.5"),
        ("framework.block_size=17", "framework.block_size=17"),
    ],
)
def test_user_mistake_is_one_line_with_nonzero_exit_and_nothing_written(tmp_path, override, expected):
    result = run_cli(override, run_dir=tmp_path / "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def _seed_config() -> dict:
    return yaml.safe_load((REPO / "conf" / "experiment" / "seed_example.yaml").read_text())


def test_seed_unknown_framework_type_error():
    config = _seed_config()
    config["frameworks_to_test"][0]["type"] = "FOO"
    with pytest.raises(ValueError, match="Unknown framework type: FOO"):
        ExperimentOrchestrator(config)


def test_seed_unknown_model_profile_error():
    config = _seed_config()
    config["frameworks_to_test"][0]["config"]["model_profile_id"] = "Nope-1B"
    with pytest.raises(
        ConfigError, match="Model profile ID Nope-1B not found in database for framework vllm_Llama3_8B_fp16"
    ):
        ExperimentOrchestrator(config).setup_simulation()
