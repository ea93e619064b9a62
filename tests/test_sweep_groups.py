"""Sweeps over config groups (framework=, hardware=, model=, workload=, experiment=) through the real CLI:
the tables, compare and plot work on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

TINY = ["workload.total_duration=10", "simulation.max_simulation_time=30", "hydra.launcher.n_jobs=2"]


def llmsim(*args: str, module: str = "llmsim") -> subprocess.CompletedProcess[str]:
    """``python -m <module> ARGS`` from the checkout."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def sweep(sweep_dir: Path, *overrides: str) -> pd.DataFrame:
    """Run a tiny multirun into ``sweep_dir`` and return its runs table."""
    result = llmsim("--multirun", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "could not aggregate" not in result.stderr + result.stdout
    return pd.read_parquet(sweep_dir / "runs.parquet")


def assert_compare_and_plot_work(sweep_dir: Path, plots: set[str]) -> None:
    """aggregate, compare (the sweep with itself) and plot end without an error."""
    again = llmsim(str(sweep_dir), module="llmsim.aggregate")
    assert again.returncode == 0 and "failed" in again.stdout and "Traceback" not in again.stderr
    same = llmsim(str(sweep_dir), str(sweep_dir), module="llmsim.compare")
    assert same.returncode == 0, same.stderr
    assert "identical" in same.stdout
    drawn = llmsim(str(sweep_dir), "--out", str(sweep_dir / "plots"), module="llmsim.plot")
    assert drawn.returncode == 0, drawn.stderr
    assert {Path(line).name for line in drawn.stdout.split()} == plots
    for name in plots:
        assert (sweep_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def framework_sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("groups") / "framework"
    sweep(sweep_dir, "framework=vllm,trtllm,sglang", "workload.rate=5,10")
    return sweep_dir


def test_sweep_over_framework_aggregates_one_row_per_job_with_the_choice_beside_the_result(framework_sweep):
    runs = pd.read_parquet(framework_sweep / "runs.parquet")
    assert len(runs) == 6 and (runs["status"] == "ok").all()
    assert runs["framework_choice"].tolist() == runs["framework"].tolist()
    assert sorted(set(runs["framework"])) == ["sglang", "trtllm", "vllm"]
    assert sorted(runs["workload.rate"].unique()) == [5, 10]
    assert runs.groupby("framework")["output_throughput"].apply(lambda s: s.is_monotonic_increasing).all()
    requests = pd.read_parquet(framework_sweep / "requests.parquet")
    assert {"run", "framework_choice", "workload.rate", "framework"} <= set(requests.columns)
    assert (requests["framework_choice"] == requests["framework"]).all()
    assert requests.groupby("run").size().size == 6
    assert_compare_and_plot_work(framework_sweep, {"latency_vs_throughput.png", "goodput_vs_load.png"})


def test_a_sweep_of_one_framework_choice_aggregates(tmp_path):
    runs = sweep(tmp_path / "one", "framework=trtllm")
    assert runs[["framework_choice", "framework", "status"]].values.tolist() == [["trtllm", "trtllm", "ok"]]


def test_sweep_over_hardware_and_model_gives_a_column_each(tmp_path):
    sweep_dir = tmp_path / "hw_model"
    runs = sweep(sweep_dir, "hardware=a100,h100", "model=llama3_8b,qwen2_5_7b")
    assert len(runs) == 4 and (runs["status"] == "ok").all()
    assert sorted(zip(runs["hardware"], runs["model"], strict=True)) == [
        ("a100", "llama3_8b"),
        ("a100", "qwen2_5_7b"),
        ("h100", "llama3_8b"),
        ("h100", "qwen2_5_7b"),
    ]
    by_gpu = runs.groupby("hardware")["median_tpot_ms"].mean()
    assert by_gpu["h100"] < by_gpu["a100"]  # more memory bandwidth: faster decode
    assert_compare_and_plot_work(sweep_dir, {"latency_vs_throughput.png"})


def test_sweep_over_workload_and_experiment_gives_one_row_per_framework_of_each_run(tmp_path):
    sweep_dir = tmp_path / "workload_experiment"
    runs = sweep(sweep_dir, "experiment=compare_frameworks", "workload=chat,offline", "workload.num_requests=40")
    assert len(runs) == 6 and (runs["status"] == "ok").all()
    assert set(runs["experiment"]) == {"compare_frameworks"}
    assert runs.groupby("workload")["framework"].apply(sorted).tolist() == [["sglang", "trtllm", "vllm"]] * 2
    offline = runs[runs["workload"] == "offline"]
    assert (offline["completed"] == 40).all()
    assert_compare_and_plot_work(sweep_dir, {"latency_vs_throughput.png"})
