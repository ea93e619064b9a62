"""The sweep tools through the real CLI: ``compare --by``, what A/B headers name, and user mistakes in
``aggregate``, ``compare`` and ``plot`` (one ``llmsim: error:`` line, exit 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

TINY = ["workload.total_duration=10", "simulation.max_simulation_time=30", "hydra.launcher.n_jobs=2"]


def tool(module: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m llmsim.<module> ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", f"llmsim.{module}", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_llmsim(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """A framework x rate sweep, the same sweep with a smaller batch limit, and a compare_frameworks run."""
    root = tmp_path_factory.mktemp("tools")
    made = {"sweep": root / "sweep", "small_batch": root / "small_batch", "run": root / "run"}
    run_llmsim("--multirun", "framework=vllm,trtllm", "workload.rate=5,10", *TINY, f"hydra.sweep.dir={made['sweep']}")
    run_llmsim(
        "--multirun",
        "framework=vllm,trtllm",
        "workload.rate=5,10",
        "framework.scheduler_iteration_delay_s=0.002",
        *TINY,
        f"hydra.sweep.dir={made['small_batch']}",
    )
    run_llmsim("experiment=compare_frameworks", *TINY[:2], f"hydra.run.dir={made['run']}")
    return made


def test_compare_by_framework_puts_the_frameworks_of_one_run_side_by_side(dirs):
    out = dirs["run"].parent / "by_framework.csv"
    result = tool("compare", dirs["run"], "--by", "framework", "--baseline", "vllm", "--format", "csv", "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out).set_index("metric")
    assert list(table.columns) == ["vllm", "sglang", "trtllm", "sglang vs vllm (%)", "trtllm vs vllm (%)"]
    summary = json.loads((dirs["run"] / "summary.json").read_text())["frameworks"]
    for framework in ("vllm", "sglang", "trtllm"):
        assert table.loc["p99_tpot_ms", framework] == pytest.approx(summary[framework]["p99_tpot_ms"])
    expected = (summary["trtllm"]["mean_ttft_ms"] / summary["vllm"]["mean_ttft_ms"] - 1) * 100
    assert table.loc["mean_ttft_ms", "trtllm vs vllm (%)"] == pytest.approx(expected)
    shown = tool("compare", dirs["run"], "--by", "framework")
    assert shown.returncode == 0 and "trtllm vs sglang (%)" in shown.stdout


def test_compare_by_framework_of_a_sweep_lines_up_each_rate(dirs):
    out = dirs["sweep"] / "by.csv"
    result = tool("compare", dirs["sweep"], "--by", "framework", "--metrics", "output_throughput", "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == ["workload.rate", "metric", "trtllm", "vllm", "vllm vs trtllm (%)"]
    runs = pd.read_parquet(dirs["sweep"] / "runs.parquet").set_index(["workload.rate", "framework"])
    for _, row in table.iterrows():
        assert row["vllm"] == pytest.approx(runs.loc[(row["workload.rate"], "vllm"), "output_throughput"])
    by_rate = tool("compare", dirs["sweep"], "--by", "rate", "--metrics", "output_throughput", "--format", "csv")
    assert by_rate.returncode == 0 and "rate=10 vs rate=5 (%)" in by_rate.stdout


def test_compare_headers_name_what_differs_between_a_and_b(dirs):
    result = tool("compare", dirs["sweep"], dirs["small_batch"], "--metrics", "p99_ttft_ms")
    assert result.returncode == 0, result.stderr
    assert "A: scheduler_iteration_delay_s=0" in result.stdout
    assert "B: scheduler_iteration_delay_s=0.002" in result.stdout
    run_a = dirs["run"]
    run_b = (
        dirs["sweep"] / "framework=trtllm,simulation.max_simulation_time=30,workload.rate=5,workload.total_duration=10"
    )
    two_runs = tool("compare", run_a, run_b, "--metrics", "mean_ttft_ms")
    assert two_runs.returncode == 0, two_runs.stderr
    assert "sglang,trtllm,vllm" in two_runs.stdout and "rate=5" in two_runs.stdout
    same_requests = (
        dirs["sweep"] / "framework=trtllm,simulation.max_simulation_time=30,workload.rate=10,workload.total_duration=10"
    )
    identical = tool("compare", run_a, same_requests)  # trtllm alone on its GPU: the same numbers
    assert identical.returncode == 0
    assert identical.stdout.startswith("identical: A and B agree on all 8 metrics of 1 configuration(s) matched on ")
    assert "framework: sglang,trtllm,vllm vs trtllm" in identical.stdout


def test_compare_of_a_result_with_itself_says_identical(dirs):
    result = tool("compare", dirs["sweep"], dirs["sweep"])
    assert result.returncode == 0
    assert result.stdout.strip() == "identical: A and B agree on all 8 metrics of 4 configuration(s)"


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("aggregate", ["{tmp}/missing"], "does not exist"),
        ("aggregate", ["{tmp}/empty"], "is not a sweep directory"),
        ("aggregate", ["{run}"], "is a single run's directory, not a sweep"),
        ("aggregate", ["{sweep}", "--bogus"], "unrecognized arguments: --bogus"),
        ("compare", ["{tmp}/missing", "{sweep}"], "does not exist"),
        ("compare", ["{tmp}/empty", "{sweep}"], "not a run directory"),
        ("compare", ["{sweep}", "{sweep}", "--metrics", "p99_ttf_ms"], "did you mean p99_ttft_ms"),
        ("compare", ["{sweep}", "--by", "hardware"], "--by=hardware is not valid"),
        ("compare", ["{sweep}", "--by", "framework", "--baseline", "tgi"], "--baseline=tgi is not valid"),
        ("compare", ["{sweep}", "{sweep}", "--format", "xml"], "invalid choice: 'xml'"),
        ("compare", ["{sweep}"], "give two results to compare"),
        ("compare", ["{sweep}/requests.parquet", "{sweep}"], "not a table of run results"),
        ("compare", ["{tmp}/junk.parquet", "{sweep}"], "cannot read"),
        ("plot", ["{tmp}/missing"], "does not exist"),
        ("plot", ["{tmp}/empty"], "not a run directory"),
        ("plot", ["{sweep}", "--slo-ttft-ms", "-5"], "--slo-ttft-ms=-5 is not valid"),
        ("plot", ["{sweep}", "--slo-tpot-ms", "fast"], "invalid float value"),
        ("plot", ["{sweep}", "--out", "{tmp}/junk.parquet"], "--out="),
    ],
)
def test_a_mistake_with_the_sweep_tools_is_one_line_and_exit_2(dirs, tmp_path, module, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.parquet").write_text("not parquet")
    filled = [a.format(tmp=tmp_path, sweep=dirs["sweep"], run=dirs["run"]) for a in args]
    result = tool(module, *filled)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmsim: error: "), result.stderr
    assert message in lines[0] and "Traceback" not in result.stderr


def test_compare_headers_show_the_default_in_force_for_a_knob_left_null(tmp_path):
    default, small = tmp_path / "default", tmp_path / "small"
    run_llmsim(*TINY, "workload.rate=40", f"hydra.run.dir={default}")
    run_llmsim(*TINY, "workload.rate=40", "framework.max_num_seqs=32", f"hydra.run.dir={small}")
    result = tool("compare", default, small, "--metrics", "p99_ttft_ms")
    assert result.returncode == 0, result.stderr
    assert "A = " in result.stdout and "(max_num_seqs=256 (default))" in result.stdout  # vLLM v1's A100 default
    assert "(max_num_seqs=32)" in result.stdout
