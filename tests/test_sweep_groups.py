"""Sweeps over config groups (framework=, hardware=, model=, workload=, experiment=) through the real CLI:
the tables, compare and plot work on them."""

from __future__ import annotations

import re
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
    sweep(sweep_dir, "framework=vllm,trtllm,sglang", "workload.rate=5,10", "metrics.slo_ttft_ms=1000")
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


def test_plot_of_a_sweep_with_slos_writes_every_chart_with_the_sweeps_own_slos(tmp_path):
    sweep_dir = tmp_path / "slo"
    runs = sweep(sweep_dir, "workload.rate=5,20", "metrics.slo_ttft_ms=500", "metrics.slo_tpot_ms=50")
    assert {"request_goodput", "slo_attainment"} <= set(runs.columns)
    # each job directory names its rate
    assert sorted(re.search(r"(?:^|[,.])rate=(\d+)", name).group(1) for name in runs["run"]) == ["20", "5"]
    drawn = llmsim(str(sweep_dir), module="llmsim.plot")
    assert drawn.returncode == 0, drawn.stderr
    names = {Path(line).name for line in drawn.stdout.split()}
    assert names == {"latency_vs_throughput.png", "goodput_vs_load.png"}

    from llmsim.sweep.plots import goodput_table
    from llmsim.sweep.slos import configured_slos
    from llmsim.sweep.tables import load_results

    results = load_results(sweep_dir)
    assert configured_slos(results) == {"ttft": 500.0, "tpot": 50.0}
    # recomputed from the requests with the same SLOs: what the runs computed
    again = goodput_table(results, {"ttft": 500.0, "tpot": 50.0}, recompute=True).set_index("run")
    summary = runs.set_index("run")
    assert again["request_goodput"].to_dict() == pytest.approx(summary["request_goodput"].to_dict())
    assert again["slo_attainment"].to_dict() == pytest.approx(summary["slo_attainment"].to_dict())
    # a stricter SLO on the command line replaces the sweep's: fewer good requests
    strict = goodput_table(results, {"ttft": 500.0, "tpot": 1.0}, recompute=True)
    assert (strict["slo_attainment"] < summary["slo_attainment"].min()).all()
    override = llmsim(str(sweep_dir), "--slo-tpot-ms", "1", "--out", str(tmp_path / "strict"), module="llmsim.plot")
    assert override.returncode == 0, override.stderr
    assert (tmp_path / "strict" / "goodput_vs_load.png").exists()


def test_plot_without_slos_says_why_goodput_is_not_drawn(tmp_path):
    sweep_dir = tmp_path / "no_slo"
    sweep(sweep_dir, "workload.rate=5,10")
    drawn = llmsim(str(sweep_dir), module="llmsim.plot")
    assert drawn.returncode == 0, drawn.stderr
    assert [Path(line).name for line in drawn.stdout.split()] == ["latency_vs_throughput.png"]
    assert "goodput_vs_load.png not drawn: no SLO set" in drawn.stderr
