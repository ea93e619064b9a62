"""`python -m llmsim.workload fit`: a trace's summary, and a workload YAML that reproduces the trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_config
from scenario import run_quietly

from llmsim.config import load_experiment_config
from llmsim.workload.__main__ import main
from llmsim.workload.fit import fit_workload, summarize_trace
from llmsim.workload.sample_trace import SAMPLE_TRACE
from llmsim.workload.sessions import SessionSampler
from llmsim.workload.trace import load_trace


@pytest.fixture(scope="module")
def synthetic_trace(tmp_path_factory):
    """4000 requests: Gamma(0.5) gaps at 10 req/s, LogNormal prompts (mean 600) and outputs (mean 150)."""
    rng = np.random.default_rng(7)
    n = 4000
    times = np.cumsum(rng.gamma(0.5, 1 / (10 * 0.5), n))
    prompts = np.maximum(np.rint(rng.lognormal(np.log(600) - 0.5 * np.log1p(0.25), np.sqrt(np.log1p(0.25)), n)), 1)
    outputs = np.maximum(np.rint(rng.exponential(150, n)), 1)
    path = tmp_path_factory.mktemp("fit") / "trace.csv"
    pd.DataFrame({"arrival_time": times, "input_tokens": prompts, "output_tokens": outputs}).to_csv(path, index=False)
    return path


def sampled(workload: dict, duration: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start times, prompt lengths and output lengths the fitted workload generates."""
    config = load_experiment_config(make_config(workload={**workload, "total_duration": duration}))
    sessions = SessionSampler(config.workload, config.distributions(), config.workload_seed).open_loop_sessions()
    first = [s.turns[0] for s in sessions]
    return (
        np.array([s.start_time for s in sessions]),
        np.array([t.prompt_tokens for t in first]),
        np.array([t.max_output_tokens for t in first]),
    )


def test_the_summary_counts_and_measures_the_trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_time,input_tokens,output_tokens\n0,10,1\n1,20,2\n3,30,3\n4,40,0\n")
    summary = summarize_trace(load_trace(path))
    assert summary["requests"] == 3 and summary["skipped_rows"] == 1
    assert summary["duration_s"] == 3.0
    assert summary["mean_rate"] == pytest.approx(2 / 3)  # two gaps averaging 1.5 s
    assert summary["interarrival_cv"] == pytest.approx(0.5 / 1.5)
    assert summary["input_tokens"]["mean"] == 20 and summary["output_tokens"]["max"] == 3


@pytest.mark.parametrize("dist", ["empirical", "lognormal"])
def test_a_fitted_workload_reproduces_the_traces_rate_burstiness_and_lengths(synthetic_trace, dist):
    trace = load_trace(synthetic_trace)
    summary = summarize_trace(trace)
    workload = fit_workload(trace, dist=dist)
    assert workload["burstiness"] == pytest.approx(0.5, rel=0.15)
    times, prompts, outputs = sampled(workload, 400.0)
    gaps = np.diff(times)
    assert 1 / gaps.mean() == pytest.approx(summary["mean_rate"], rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(summary["interarrival_cv"], rel=0.15)
    assert prompts.mean() == pytest.approx(summary["input_tokens"]["mean"], rel=0.05)
    assert outputs.mean() == pytest.approx(summary["output_tokens"]["mean"], rel=0.08)
    assert np.median(prompts) == pytest.approx(summary["input_tokens"]["p50"], rel=0.08)


def test_fitting_a_trace_with_sessions_and_prefix_groups_keeps_them_and_runs():
    trace = load_trace(SAMPLE_TRACE)
    workload = fit_workload(trace)
    profile = workload["client_profiles"][0]
    assert profile["shared_prefix_groups"] == 4
    assert profile["shared_prefix_tokens_dist_config"]["values"] == [256, 384, 640, 1024]
    assert profile["turns_dist_config"]["values"] == [1, 2, 3, 4]
    summary, requests, _ = run_quietly(make_config(workload={**workload, "total_duration": 30}))
    assert summary["frameworks"]["vllm"]["completed"] > 20
    assert requests["cached_prompt_tokens"].sum() > 0
    assert (requests["turn"] > 0).any()


def test_the_command_prints_the_summary_and_writes_a_loadable_workload_yaml(tmp_path, capsys):
    out = tmp_path / "fitted.yaml"
    assert main(["fit", str(SAMPLE_TRACE), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for fact in ("requests: 283", "sessions: 180", "mean rate", "inter-arrival CV", "input tokens", "output tokens"):
        assert fact in printed
    text = out.read_text()
    assert text.startswith("# Fitted by")
    workload = yaml.safe_load(text)
    config = load_experiment_config(make_config(workload=workload))
    assert config.workload.kind == "open_loop" and config.workload.burstiness is not None


def test_the_command_reports_a_bad_trace_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("arrival_time,input_tokens,output_tokens\n0,5,3\n1,-5,3\n")
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.csv" in err and "line 3" in err


def test_the_sample_trace_command_regenerates_the_shipped_file(tmp_path, capsys):
    out = tmp_path / "sample.csv"
    assert main(["sample-trace", "--out", str(out)]) == 0
    assert out.read_text() == (load_trace(SAMPLE_TRACE).path).read_text()
