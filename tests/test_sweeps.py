"""Sweeps through the real CLI: parallel jobs, tables, failure isolation, resume, compare, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from llmsim.rerun import rerun
from llmsim.sweep.aggregate import aggregate
from llmsim.sweep.compare import compare_tables
from llmsim.sweep.compare import main as compare_main
from llmsim.sweep.naming import job_dirname
from llmsim.sweep.plots import make_plots
from llmsim.sweep.tables import load_results

QUICK = ["workload.total_duration=15", "hydra.launcher.n_jobs=2"]


def multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmsim", "--multirun", *overrides, *QUICK, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def rate_sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "rate"
    result = multirun(sweep_dir, "workload.rate=5,10,20", "framework.max_num_seqs=64,256")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


# ---- job directory names -------------------------------------------------------------------------
def test_job_dirname_is_flat_bounded_and_unique():
    assert job_dirname("") == "default"
    assert job_dirname("workload.rate=5,framework.max_num_seqs=64") == "workload.rate=5,framework.max_num_seqs=64"
    slashed = job_dirname("workload.path=/data/trace.csv")
    assert "/" not in slashed and slashed.startswith("workload.path=_data_trace.csv-")
    assert job_dirname("a=x/y") != job_dirname("a=x_y")
    long = job_dirname("x=" + "9" * 400)
    assert len(long) <= 160 and long != job_dirname("x=" + "9" * 401)


def test_a_shortened_job_dirname_keeps_every_swept_key_and_value_readable():
    trace = "workload.path=/data/traces/" + "production_chat_" * 8 + "2026_12_04.csv"
    names = {
        rate: job_dirname(f"framework.max_num_seqs=64,framework.tensor_parallel_size=2,{trace},workload.rate={rate}")
        for rate in (5, 10, 20)
    }
    for rate, name in names.items():
        assert len(name) <= 160 and "/" not in name
        assert name.startswith("max_num_seqs=64,tensor_parallel_size=2,path=_data_traces_production_chat")
        assert f",rate={rate}-" in name and "2026_12_04.csv" in name  # the value's end survives the cut
    assert len(set(names.values())) == 3
    many = ",".join(f"metrics.option_number_{i}=value_{i}" for i in range(9)) + ",workload.rate=20"
    name = job_dirname(many)
    assert len(name) <= 160 and ",rate=20-" in name
    assert len(name.split(",")) == 10 and all(item.count("=") == 1 for item in name.split(","))  # no key dropped
    bracketed = job_dirname(
        "metrics.percentiles_to_calculate=[50,90,99],metrics.warm_up_duration_s=10,"
        "simulation.max_simulation_time=30,workload.rate=5,workload.total_duration=10"
    )
    assert bracketed.startswith("percentiles_to_calculate=_50,90,99_,warm_up_duration_s=10,max_simulation_time=30,")
    short = "framework.max_num_seqs=64,workload.rate=5"
    assert job_dirname(short) == short  # short names are left as they are


def test_a_shortened_job_dirname_cuts_long_values_and_keys_before_short_values():
    name = job_dirname(
        "framework.max_num_batched_tokens=8192,framework.max_num_seqs=256,hardware=h100,model=llama3_70b,"
        "framework.tensor_parallel_size=4,workload.rate=20,"
        "workload.client_profiles.0.prompt_tokens_dist_config={type:Constant,value:512}"
    )
    assert len(name) <= 160
    for item in (
        "max_num_batched_tokens=8192",
        "hardware=h100",
        "model=llama3_70b",
        "tensor_parallel_size=4",
        "rate=20",
    ):
        assert item in name  # short values (numbers, options) stay whole while a long one is cut
    assert "prompt_tokens_dist_config=_type_C.." in name


def test_job_dirname_leaves_out_the_plus_of_added_keys():
    assert job_dirname("++framework.max_num_seqs=64,framework=sglang") == "framework.max_num_seqs=64,framework=sglang"
    assert job_dirname("+metrics.slo_ttft_ms=500") == "metrics.slo_ttft_ms=500"


# ---- the sweep itself ----------------------------------------------------------------------------
@pytest.mark.slow
def test_multirun_writes_one_row_per_job_with_typed_override_columns(rate_sweep):
    runs = pd.read_parquet(rate_sweep / "runs.parquet")
    assert len(runs) == 6
    assert (runs["status"] == "ok").all()
    assert runs["workload.rate"].dtype.kind in "if" and runs["framework.max_num_seqs"].dtype.kind == "i"
    for column in ("seed", "config_hash", "wall_time_s", "output_throughput", "p99_ttft_ms"):
        assert column in runs
    by_rate = runs[runs["framework.max_num_seqs"] == 256].sort_values("workload.rate")
    assert by_rate["output_throughput"].is_monotonic_increasing
    assert by_rate["output_throughput"].iloc[-1] > 3 * by_rate["output_throughput"].iloc[0]


@pytest.mark.slow
def test_job_dirs_are_named_from_overrides_and_hold_what_reproduces_them(rate_sweep, tmp_path):
    job = rate_sweep / "framework.max_num_seqs=64,workload.rate=10,workload.total_duration=15"
    assert job.is_dir()
    info = json.loads((job / "run.json").read_text())
    assert info["status"] == "ok" and info["seed"] == 42 and len(info["config_hash"]) == 64
    assert {"llmsim_version", "python", "packages", "wall_time_s", "overrides"} <= info.keys()
    assert (job / ".hydra" / "config.yaml").exists() and (job / ".hydra" / "overrides.yaml").exists()
    assert rerun(job, tmp_path / "rerun-check") == []


@pytest.mark.slow
def test_sweep_requests_table_carries_the_run_keys(rate_sweep):
    requests = pd.read_parquet(rate_sweep / "requests.parquet")
    assert {"run", "workload.rate", "framework.max_num_seqs", "ttft_ms"} <= set(requests.columns)
    per_run = requests.groupby("run").size()
    assert len(per_run) == 6 and (per_run > 0).all()


@pytest.mark.slow
def test_workload_is_identical_across_knob_variants_common_random_numbers(rate_sweep):
    requests = pd.read_parquet(rate_sweep / "requests.parquet")
    at_rate = requests[requests["workload.rate"] == 10]
    columns = ["request_id", "send_time_s", "prompt_tokens", "max_output_tokens", "streaming"]
    small = at_rate[at_rate["framework.max_num_seqs"] == 64][columns].sort_values("request_id")
    large = at_rate[at_rate["framework.max_num_seqs"] == 256][columns].sort_values("request_id")
    first_turns = small["request_id"].isin(large["request_id"])
    assert first_turns.all()
    # a later turn is sent when its answer is in, which depends on the engine (max_num_seqs changes
    # vLLM's CUDA-graph sizes, so step times): the drawn stream is the same, and so are first sends
    drawn = ["request_id", "prompt_tokens", "max_output_tokens", "streaming"]
    pd.testing.assert_frame_equal(small[drawn].reset_index(drop=True), large[drawn].reset_index(drop=True))
    opening = at_rate["turn"] == 0
    first_small = at_rate[opening & (at_rate["framework.max_num_seqs"] == 64)][columns].sort_values("request_id")
    first_large = at_rate[opening & (at_rate["framework.max_num_seqs"] == 256)][columns].sort_values("request_id")
    assert len(first_small) > 0
    pd.testing.assert_frame_equal(first_small.reset_index(drop=True), first_large.reset_index(drop=True))


@pytest.mark.slow
def test_two_sweeps_with_the_same_overrides_give_identical_metrics(rate_sweep, tmp_path):
    again = tmp_path / "again"
    assert multirun(again, "workload.rate=5,10,20", "framework.max_num_seqs=64,256").returncode == 0
    first = pd.read_parquet(rate_sweep / "runs.parquet").drop(columns=["wall_time_s"])
    second = pd.read_parquet(again / "runs.parquet").drop(columns=["wall_time_s"])
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.slow
def test_a_combination_that_cannot_fit_fails_alone_with_its_reason(tmp_path):
    sweep_dir = tmp_path / "fit"
    result = multirun(sweep_dir, "model=llama3_8b,llama3_70b")
    assert result.returncode == 3  # the tables are written; a failed job makes the exit status non-zero
    runs = pd.read_parquet(sweep_dir / "runs.parquet").set_index("model")
    assert runs.loc["llama3_8b", "status"] == "ok" and runs.loc["llama3_8b", "completed"] > 0
    assert runs.loc["llama3_70b", "status"] == "failed"
    assert "tensor_parallel_size=2 would fit" in runs.loc["llama3_70b", "error"]
    assert "FAILED model=llama3_70b" in result.stdout


@pytest.mark.slow
def test_rerunning_a_sweep_into_its_directory_skips_finished_runs_unless_forced(tmp_path):
    sweep_dir = tmp_path / "resume"
    assert multirun(sweep_dir, "workload.rate=5,10").returncode == 0
    job = sweep_dir / "workload.rate=5,workload.total_duration=15"
    stamp = (job / "summary.json").stat().st_mtime_ns
    second = multirun(sweep_dir, "workload.rate=5,10")
    assert second.returncode == 0 and "skipping" in second.stderr + second.stdout
    assert (job / "summary.json").stat().st_mtime_ns == stamp
    assert multirun(sweep_dir, "workload.rate=5,10", "resume=false").returncode == 0
    assert (job / "summary.json").stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_aggregate_reads_only_this_sweeps_jobs_and_skips_corrupt_ones(tmp_path):
    sweep_dir = tmp_path / "shrink"
    assert multirun(sweep_dir, "workload.rate=5,10,20").returncode == 0
    assert multirun(sweep_dir, "workload.rate=5,10").returncode == 0  # smaller sweep, same dir
    assert len(aggregate(sweep_dir).runs) == 2
    (sweep_dir / "workload.rate=10,workload.total_duration=15" / "run.json").write_text("{not json")
    tables = aggregate(sweep_dir)
    assert len(tables.runs) == 1
    assert [p.name for p, _ in tables.skipped] == ["workload.rate=10,workload.total_duration=15"]
    result = subprocess.run(
        [sys.executable, "-m", "llmsim.aggregate", str(sweep_dir)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0 and "skipped workload.rate=10" in result.stdout


@pytest.mark.slow
def test_named_sweep_runs_from_the_sweeps_folder(tmp_path):
    sweep_dir = tmp_path / "named"
    result = multirun(sweep_dir, "+sweeps=rate_scan", "workload.rate=4,8")  # the command line wins
    assert result.returncode == 0, result.stderr[-2000:]
    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    assert sorted(runs["workload.rate"]) == [4, 8]


# ---- compare and plot --------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_reports_correct_deltas_joined_on_swept_parameters(rate_sweep, tmp_path):
    candidate = tmp_path / "nocache"
    assert (
        multirun(
            candidate, "workload.rate=5,10,20", "framework.max_num_seqs=64,256", "framework.enable_prefix_caching=false"
        ).returncode
        == 0
    )
    a, b = load_results(rate_sweep), load_results(candidate)
    result = compare_tables(a, b, ["mean_ttft_ms", "output_throughput"])
    assert len(result) == 6 * 2
    row = result[
        (result["workload.rate"] == 20)
        & (result["framework.max_num_seqs"] == 64)
        & (result["metric"] == "mean_ttft_ms")
    ].iloc[0]
    expected_a = a.frame.set_index(["workload.rate", "framework.max_num_seqs"]).loc[(20, 64), "mean_ttft_ms"]
    expected_b = b.frame.set_index(["workload.rate", "framework.max_num_seqs"]).loc[(20, 64), "mean_ttft_ms"]
    assert row["A"] == pytest.approx(expected_a) and row["B"] == pytest.approx(expected_b)
    assert row["delta"] == pytest.approx(expected_b - expected_a)
    assert row["delta_pct"] == pytest.approx((expected_b - expected_a) / expected_a * 100)
    out = tmp_path / "cmp.csv"
    assert (
        compare_main(
            [str(rate_sweep), str(candidate), "--metrics", "mean_ttft_ms", "--format", "csv", "--out", str(out)]
        )
        == 0
    )
    csv = pd.read_csv(out)
    assert list(csv["metric"].unique()) == ["mean_ttft_ms"] and len(csv) == 6


@pytest.mark.slow
def test_compare_of_two_run_directories(rate_sweep):
    a = rate_sweep / "framework.max_num_seqs=64,workload.rate=5,workload.total_duration=15"
    b = rate_sweep / "framework.max_num_seqs=64,workload.rate=20,workload.total_duration=15"
    result = subprocess.run(
        [sys.executable, "-m", "llmsim.compare", str(a), str(b), "--format", "markdown"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "| metric | A | B | delta | delta_pct |" in result.stdout.replace("framework | ", "")


@pytest.mark.slow
def test_plots_of_a_sweep_and_of_a_run_are_real_pngs(rate_sweep, tmp_path):
    paths = make_plots(rate_sweep, tmp_path / "sweep_plots", {"ttft": 500.0, "tpot": 50.0})
    assert {p.name for p in paths} == {"latency_vs_throughput.png", "goodput_vs_load.png"}
    run = rate_sweep / "framework.max_num_seqs=256,workload.rate=20,workload.total_duration=15"
    paths += make_plots(run, tmp_path / "run_plots")
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_run_timeline_of_a_long_step_series_is_plotted_from_buckets_without_loading_it(tmp_path):
    from llmsim.metrics.step_series import STEP_COLUMNS
    from llmsim.sweep.plots import timeline_table

    steps = 50_000
    time = np.arange(steps) * 0.01
    table = {name: np.full(steps, 7, dtype=np.int64) for name in STEP_COLUMNS}
    table.update(framework=np.array(["vllm", "sglang"] * (steps // 2)), time_s=time, duration_s=np.full(steps, 0.01))
    table["kv_blocks_used"] = np.arange(steps) % 100
    path = tmp_path / "steps.parquet"
    pd.DataFrame(table).to_parquet(path, index=False, row_group_size=7_000)
    no_statistics = tmp_path / "no_statistics.parquet"
    pd.DataFrame(table).to_parquet(no_statistics, index=False, row_group_size=7_000, write_statistics=False)

    reduced = timeline_table(path, max_points=250)
    assert reduced.equals(timeline_table(no_statistics, max_points=250))
    assert set(reduced["framework"]) == {"vllm", "sglang"}
    assert len(reduced) <= 2 * 250 + 2
    assert reduced["steps"].sum() == steps
    assert reduced["kv_blocks_used_max"].max() == 99
    assert timeline_table(path, max_points=steps).equals(pd.read_parquet(path))  # short enough: as written

    run = tmp_path / "run"
    run.mkdir()
    reduced.to_parquet(run / "steps.parquet", index=False)  # as a run with metrics.step_series_bucket_s writes it
    (run / "summary.json").write_text("{}")
    (png,) = make_plots(run, tmp_path / "plots")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_steps_on_a_bucket_boundary_start_that_bucket_and_tiny_buckets_are_refused():
    from llmsim.metrics.step_buckets import bucket_index

    starts = np.arange(100) * 0.1  # 0.3 / 0.1 < 3 in floats: a plain floor puts 0.3 in bucket 2
    assert bucket_index(starts, 0.1).tolist() == list(range(100))
    assert bucket_index(np.array([1000.0, 1000.05, 1000.1]), 0.1, origin=1000.0).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="too small"):
        bucket_index(np.array([1e12]), 1e-9)


def test_timeline_buckets_span_the_steps_not_the_time_before_them(tmp_path):
    from llmsim.metrics.step_series import STEP_COLUMNS
    from llmsim.sweep.plots import timeline_table

    steps = 10_000
    table = {name: np.full(steps, 3, dtype=np.int64) for name in STEP_COLUMNS}
    table.update(framework=["vllm"] * steps, time_s=1000.0 + np.arange(steps) * 0.01, duration_s=np.full(steps, 0.01))
    path = tmp_path / "steps.parquet"
    pd.DataFrame(table).to_parquet(path, index=False)
    reduced = timeline_table(path, max_points=100)
    assert 95 <= len(reduced) <= 101 and reduced["time_s"].iloc[0] == 1000.0
    assert reduced.attrs["bucket_s"] == pytest.approx(0.9999)
