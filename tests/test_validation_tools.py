"""llmsim.validate, llmsim.calibrate and llmsim.inspect through their command lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from llmsim.errors import LLMSimError
from llmsim.validate import case_overrides, case_profile, parallel_overrides, predict

CASE_COLUMNS = [
    "case_id", "hardware", "num_gpus", "tp", "model", "dtype", "framework", "kind", "input_len", "output_len",
    "batch_size", "concurrency", "request_rate", "num_requests", "metric", "value", "source",
]  # fmt: skip


def case(case_id: str, **fields) -> dict:
    row = dict.fromkeys(CASE_COLUMNS, "")
    row.update(
        case_id=case_id, hardware="a100", num_gpus=1, tp=1, model="llama3_8b", dtype="bf16", framework="vllm",
        kind="batch", input_len=32, output_len=16, batch_size=8, metric="e2e_ms_mean", value=100.0, source="test",
    )  # fmt: skip
    row.update(fields)
    return row


def write_cases(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows, columns=CASE_COLUMNS).to_csv(path, index=False)
    return path


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_validate_prints_a_row_per_case_and_ends_with_the_summary_line(tmp_path):
    cases = write_cases(
        tmp_path / "cases.csv",
        [
            case("batch-e2e"),
            case("poisson-ttft", kind="poisson", request_rate=2, num_requests=20, metric="ttft_ms_mean", value=30.0),
            case("closed-tpot", kind="concurrency", concurrency=4, num_requests=20, metric="tpot_ms_mean", value=12.0),
            case(
                "dp-throughput", kind="offline", num_gpus=2, num_requests=40, metric="output_tokens_per_s", value=5000
            ),
            case("unknown-model", model="gpt9_1t"),
        ],
    )
    out = tmp_path / "pred.csv"
    result = run_module("llmsim.validate", str(cases), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"median_abs_err_pct=\d+\.\d\d p90_abs_err_pct=\d+\.\d\d cases_run=4/5", lines[-1])
    assert "unknown-model" in result.stdout and "NOT RUN" in result.stdout and "gpt9_1t" in result.stdout
    table = pd.read_csv(out)
    assert list(table["status"]) == ["ok", "ok", "ok", "ok", "not run"]
    assert (table["predicted"].dropna() > 0).all()


def test_data_parallel_replicas_multiply_system_throughput():
    row = pd.Series(case("dp", kind="offline", num_requests=64, metric="output_tokens_per_s"))
    one = predict(row)
    two = predict(pd.Series({**row.to_dict(), "num_gpus": 2}))
    assert two == pytest.approx(2 * predict(pd.Series({**row.to_dict(), "num_requests": 32})), rel=1e-9)
    assert two > one  # two GPUs beat one, though each replica batches fewer requests


def test_a_case_runs_the_release_it_measured_and_its_kv_dtype():
    overrides, _ = case_overrides(pd.Series(case("v", framework="trtllm", framework_version="0.17", kv_dtype="fp8")))
    assert "framework.version='0.17'" in overrides  # quoted, so Hydra keeps the string
    assert "framework.kv_cache_dtype=fp8" in overrides
    unversioned, _ = case_overrides(pd.Series(case("u", dtype="fp8")))
    assert not any(o.startswith("framework.version") for o in unversioned)
    assert "framework.kv_cache_dtype=fp8" in unversioned  # no kv_dtype column: follows the weights


def test_length_dist_draws_each_length_uniformly_as_the_benchmark_did():
    fixed = case_profile(pd.Series(case("f", input_len=1000, output_len=200)))
    assert fixed["prompt_tokens_dist_config"] == {"type": "Constant", "value": 1000, "is_int": True}
    wide = case_profile(pd.Series(case("w", input_len=1000, output_len=200, length_dist="uniform_1_to_len")))
    assert (wide["prompt_tokens_dist_config"]["low"], wide["prompt_tokens_dist_config"]["high"]) == (1, 1000)
    assert (wide["max_output_tokens_dist_config"]["low"], wide["max_output_tokens_dist_config"]["high"]) == (1, 200)
    near = case_profile(pd.Series(case("n", input_len=1000, output_len=200, length_dist="uniform_pm15pct")))
    assert (near["prompt_tokens_dist_config"]["low"], near["prompt_tokens_dist_config"]["high"]) == (850, 1150)
    with pytest.raises(LLMSimError, match="length_dist='zipf' is not one of fixed"):
        case_profile(pd.Series(case("z", length_dist="zipf")))


def test_total_tokens_and_per_sequence_rate_follow_their_definitions():
    row = case("t", kind="offline", num_requests=16, input_len=64, output_len=32)
    output = predict(pd.Series({**row, "metric": "output_tokens_per_s"}))
    total = predict(pd.Series({**row, "metric": "total_tokens_per_s"}))
    assert total == pytest.approx(output * (64 + 32) / 32, rel=1e-9)  # same makespan, input counted too
    single = case("s", batch_size=1, input_len=64, output_len=32)
    tpot = predict(pd.Series({**single, "metric": "tpot_ms_median"}))
    assert predict(pd.Series({**single, "metric": "output_tokens_per_s_per_seq"})) == pytest.approx(1000 / tpot)


def test_expert_and_attention_data_parallel_cases_use_each_frameworks_own_knobs():
    def knobs(framework, **row):
        return parallel_overrides(pd.Series(case("d", framework=framework, tp=8, num_gpus=8, **row)))

    assert knobs("trtllm", attention_dp=True, ep=8) == [
        "framework.enable_attention_dp=true",
        "framework.moe_expert_parallel_size=8",
    ]
    assert knobs("sglang", attention_dp=True) == ["framework.enable_dp_attention=true", "framework.dp_size=8"]
    assert knobs("vllm", ep=8) == ["framework.enable_expert_parallel=true"]
    assert parallel_overrides(pd.Series(case("plain"))) == []


@pytest.mark.slow
def test_calibrate_recovers_a_known_bandwidth_factor_and_writes_usable_overrides(tmp_path):
    # "measurements" made by llmsim itself with HBM efficiency 0.75: the fit must find it again
    rows = [case("bs8", batch_size=8), case("bs2", batch_size=2, output_len=32)]
    truth = ["hardware.efficiency.hbm_bandwidth=0.75"]
    for row in rows:
        row["value"] = predict(pd.Series(row), truth)
    cases = write_cases(tmp_path / "cases.csv", rows)
    out = tmp_path / "calibrated"
    result = run_module(
        "llmsim.calibrate", str(cases), "--out", str(out), "--factors", "hbm", "--sweeps", "1", "--steps", "14"
    )
    assert result.returncode == 0, result.stderr
    fitted = yaml.safe_load((out / "hardware" / "a100_calibrated.yaml").read_text())
    assert fitted["efficiency"]["hbm_bandwidth"] == pytest.approx(0.75, abs=0.02)
    assert "after: median_abs_err_pct=" in result.stdout
    run = subprocess.run(
        [sys.executable, "-m", "llmsim", "--config-dir", str(out), "hardware=a100_calibrated", "workload.total_duration=5",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


def test_inspect_prints_the_memory_plan_and_which_phase_is_compute_or_memory_bound():
    result = run_module("llmsim.inspect", "hardware=h100", "model=llama3_70b", "framework.tensor_parallel_size=4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "memory per GPU" in out and "KV tokens" in out
    assert re.search(r"prefill\s+│\s+1 x 8192 tokens.*compute", out)
    assert re.search(r"decode\s+│\s+1 seqs @ 1024 ctx.*memory", out)
    bad = run_module("llmsim.inspect", "model=llama3_70b")
    assert bad.returncode == 2 and "tensor_parallel_size=2 would fit" in bad.stderr


def test_inspect_takes_the_nested_workload_overrides_the_main_cli_takes():
    result = run_module(
        "llmsim.inspect", "workload.client_profiles.0.prompt_tokens_dist_config={type:Constant,value:512}"
    )
    assert result.returncode == 0, result.stderr
    assert "peak:" in result.stdout


def test_inspect_takes_config_groups_from_config_dir_as_the_main_cli_does(tmp_path):
    # a hardware file at half the HBM efficiency (as llmsim.calibrate writes them): decode, memory-bound, slows
    data = yaml.safe_load((REPO / "conf" / "hardware" / "a100.yaml").read_text())
    data["efficiency"]["hbm_bandwidth"] /= 2
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "a100_slow.yaml").write_text(yaml.safe_dump(data))

    def decode_ms(*args: str) -> float:
        result = run_module("llmsim.inspect", *args)
        assert result.returncode == 0, result.stderr
        return float(re.search(r"decode\s+│\s+1 seqs @ 1024 ctx\s+│\s+([\d.]+)", result.stdout).group(1))

    slow, normal = decode_ms("--config-dir", str(tmp_path), "hardware=a100_slow"), decode_ms("hardware=a100")
    assert slow == pytest.approx(2 * normal, rel=0.1)


def test_the_error_report_groups_cases_by_model_family_framework_and_gpu():
    from llmsim.validate import CaseResult, family_table, model_family

    assert (model_family("llama3_8b"), model_family("mixtral_8x7b"), model_family("deepseek_v3")) == (
        "dense",
        "MoE",
        "MLA",
    )
    results = [
        CaseResult("a", "m", 100.0, 110.0, 10.0, family="dense", framework="vllm", hardware="h100"),
        CaseResult("b", "m", 100.0, 70.0, -30.0, family="dense", framework="vllm", hardware="h100"),
        CaseResult("c", "m", 100.0, reason="unknown model", family="unknown", framework="vllm", hardware="h100"),
    ]
    table = family_table(results).set_index("family")
    assert table.loc["dense", ["cases", "run"]].tolist() == [2, 2]
    assert table.loc["dense", "median_abs_err_pct"] == pytest.approx(20.0)
    assert table.loc["dense", "max_abs_err_pct"] == pytest.approx(30.0)
    assert table.loc["dense", "mean_err_pct"] == pytest.approx(-10.0)
    assert table.loc["unknown", "run"] == 0
