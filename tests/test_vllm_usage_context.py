"""vLLM's usage context: the offline ``LLM`` class gets larger default budgets than ``vllm serve``.

vLLM v1 picks ``max_num_batched_tokens`` from a table keyed by ``UsageContext`` and the GPU
(``vllm/engine/arg_utils.py``): on a >= 70 GiB GPU that is not an A100 the ``LLM`` class (and
``vllm bench throughput``) gets 16384 tokens, the OpenAI API server 8192; on other GPUs 8192 and 2048.
``workload=offline`` runs in the ``LLM`` class unless ``framework.usage_context`` says otherwise.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
from conftest import REPO, constant_profile, make_config

from llmsim import ConfigError, ExperimentOrchestrator

OFFLINE = {"kind": "offline", "num_requests": 8, "client_profiles": [constant_profile(3000, 4)]}
CHAT = {"kind": "open_loop", "rate": 2.0, "total_duration": 2, "client_profiles": [constant_profile(3000, 4)]}


def run(hardware: str, workload: dict, **knobs):
    """Run a tiny experiment; return (the vLLM framework instance, its step series)."""
    orchestrator = ExperimentOrchestrator(make_config(hardware=hardware, framework=knobs, workload=dict(workload)))
    with contextlib.redirect_stdout(io.StringIO()):
        orchestrator.run(show_progress=False)
    return orchestrator.llm_framework_instances[0], orchestrator.metrics_collector.get_step_series_df()


@pytest.mark.parametrize(
    ("hardware", "workload", "knobs", "context", "tokens", "seqs"),
    [
        ("h100", OFFLINE, {}, "llm_class", 16384, 1024),
        ("h100", CHAT, {}, "openai_api_server", 8192, 1024),
        ("a100", OFFLINE, {}, "llm_class", 8192, 256),  # A100 80 GB is excluded from the large defaults
        ("a100", CHAT, {}, "openai_api_server", 2048, 256),
        ("h100", OFFLINE, {"usage_context": "openai_api_server"}, "openai_api_server", 8192, 1024),
        ("h100", CHAT, {"usage_context": "llm_class"}, "llm_class", 16384, 1024),
        ("h100", OFFLINE, {"max_num_batched_tokens": 4096}, "llm_class", 4096, 1024),
    ],
)
def test_default_budget_follows_the_usage_context_of_the_workload_unless_set(
    hardware, workload, knobs, context, tokens, seqs
):
    framework, _ = run(hardware, workload, **knobs)
    assert framework.usage_context == context
    assert (framework.max_num_batched_tokens, framework.max_num_seqs) == (tokens, seqs)
    knobs_in_force = framework.effective_knobs()
    assert knobs_in_force["usage_context"] == context
    assert knobs_in_force["max_num_batched_tokens"] == tokens


def test_offline_batch_on_an_h100_prefills_16384_tokens_in_its_first_step_and_chat_8192():
    """Eight 3000-token prompts queued at once: the LLM class fills 16384 tokens (5 whole prompts and
    1384 of the sixth), the server 8192 (2 whole prompts and 2192 of the third)."""
    _, offline_steps = run("h100", OFFLINE)
    assert offline_steps["num_prefill_tokens"].iloc[0] == 16384
    assert offline_steps["num_tokens"].max() == 16384
    _, served_steps = run("h100", {**OFFLINE, "num_requests": 8}, usage_context="openai_api_server")
    assert served_steps["num_prefill_tokens"].iloc[0] == 8192
    assert served_steps["num_tokens"].max() == 8192


def test_v1_without_chunked_prefill_defaults_the_budget_to_max_model_len():
    """vLLM sets max_num_batched_tokens to max_model_len when chunked prefill is off (any usage context)."""
    framework, _ = run("h100", OFFLINE, enable_chunked_prefill=False, max_model_len=4096)
    assert framework.max_num_batched_tokens == 4096


def test_unknown_usage_context_is_a_config_error():
    with pytest.raises(ConfigError, match=r"framework\.usage_context"):
        run("h100", OFFLINE, usage_context="api")


@pytest.mark.slow
def test_cli_offline_run_reports_the_llm_class_context_and_its_budget(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmsim",
            "hardware=h100",
            "workload=offline",
            "workload.num_requests=20",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "v1 engine, LLM class (offline)" in result.stdout  # the console header says which context ran
    summary = json.loads((tmp_path / "summary.json").read_text())
    deployment = summary["deployments"]["vllm"]
    assert deployment["usage_context"] == "llm_class"
    assert deployment["max_num_batched_tokens"] == 16384
    knobs = summary["run"]["frameworks"]["vllm"]["knobs"]
    assert (knobs["usage_context"], knobs["max_num_batched_tokens"]) == ("llm_class", 16384)


@pytest.mark.slow
def test_cli_rejects_a_bad_usage_context_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", "framework.usage_context=server", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llmsim: error: framework.usage_context='server' is not valid")
    assert "llm_class" in lines[0] and "openai_api_server" in lines[0]
