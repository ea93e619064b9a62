"""Realistic workload presets: their sampled lengths match the published statistics cited in them.

``conf/workload/sharegpt.yaml``, ``rag.yaml`` and ``agentic.yaml`` cite their sources; these tests
draw many sessions from each and compare the statistics with the cited targets, then run each
preset end to end through the CLI (prefix sharing shows in the agentic run's cache hit rate).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from conftest import REPO, conf_file, make_config

from llmsim.config import load_experiment_config
from llmsim.workload.sessions import Session, SessionSampler


def sessions_of(preset: str, **changes: Any) -> list[Session]:
    """Sessions of a preset (its YAML as written, with ``changes``), drawn by the real sampler."""
    config = make_config(workload={})
    config["workload"] = {**conf_file("workload", preset), **changes}
    validated = load_experiment_config(config)
    sampler = SessionSampler(validated.workload, validated.distributions(), validated.workload_seed)
    return sampler.open_loop_sessions()


def close(value: float, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance * target


def test_sharegpt_lengths_and_turns_match_the_published_sharegpt_statistics():
    sessions = sessions_of("sharegpt", rate=200.0, total_duration=100)
    assert len(sessions) > 15_000
    first = [s.turns[0] for s in sessions]
    prompts = np.array([t.prompt_tokens for t in first])
    outputs = np.array([t.max_output_tokens for s in sessions for t in s.turns])
    turns = np.array([len(s.turns) for s in sessions])
    assert close(prompts.mean(), 161.31, 0.05)  # vLLM paper, Fig. 11(a)
    assert close(outputs.mean(), 337.99, 0.05)
    assert close(turns.mean(), 3.51, 0.05)  # ShareChat, Table 1
    assert np.median(prompts) < prompts.mean() and np.median(outputs) < outputs.mean()  # long right tails
    assert prompts.min() >= 4 and outputs.min() >= 4
    followup = [t for s in sessions for t in s.turns[1:]]
    previous = {(s.session_id, t.turn): t for s in sessions for t in s.turns}
    # a follow-up's prompt is the whole conversation so far plus its own new text
    for turn in followup[:200]:
        before = previous[(turn.session_id, turn.turn - 1)]
        assert turn.prompt_tokens > before.prompt_tokens + before.max_output_tokens


def test_rag_lengths_match_arxiv_summarisation_and_longbench():
    sessions = sessions_of("rag", rate=100.0, total_duration=100)
    by_profile: dict[str, list] = {}
    for session in sessions:
        assert len(session.turns) == 1
        by_profile.setdefault(session.turns[0].profile, []).append(session.turns[0])
    assert set(by_profile) == {"summarisation", "long_document_qa"}
    assert close(len(by_profile["summarisation"]) / len(sessions), 0.5, 0.05)
    summaries = by_profile["summarisation"]
    qa = by_profile["long_document_qa"]
    assert close(np.mean([t.prompt_tokens for t in summaries]), 4938 * 1.3, 0.05)  # Cohan et al. 2018
    assert close(np.mean([t.max_output_tokens for t in summaries]), 220 * 1.3, 0.05)
    assert close(np.mean([t.prompt_tokens for t in qa]), 6711 * 1.3, 0.05)  # LongBench
    assert max(t.max_output_tokens for t in qa) <= 128 and close(np.mean([t.max_output_tokens for t in qa]), 64, 0.1)


def test_agentic_sessions_match_the_codex_swe_bench_trace_statistics():
    sessions = sessions_of("agentic", rate=2.0, total_duration=1000)
    assert len(sessions) > 1500
    turns = np.array([len(s.turns) for s in sessions])
    assert abs(np.median(turns) - 33) <= 2 and turns.max() <= 50
    first_context = np.array([s.turns[0].prompt_tokens for s in sessions])
    assert close(np.median(first_context), 12_000, 0.05)
    growth = np.concatenate([np.diff([t.prompt_tokens for t in s.turns]) for s in sessions if len(s.turns) > 1])
    assert close(growth.mean(), 2242, 0.05)
    think = np.array([t.think_time_s for s in sessions for t in s.turns[1:]])
    assert close(np.median(think), 5.2, 0.05) and close(np.percentile(think, 99), 81.4, 0.15)
    prompt_tokens = sum(t.prompt_tokens for s in sessions for t in s.turns)
    output_tokens = sum(t.max_output_tokens for s in sessions for t in s.turns)
    assert close(prompt_tokens / output_tokens, 131, 0.1)
    # every session starts with the same 8,000-token system prompt and tool definitions
    assert len({s.turns[0].prompt_segments[0] for s in sessions}) == 1
    assert sessions[0].turns[0].prompt_segments[0][1] == 8000


def llmsim_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmsim", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "load"),
    [
        ("sharegpt", ["workload.rate=5", "workload.total_duration=10"]),
        ("rag", ["workload.rate=1", "workload.total_duration=10"]),
        ("agentic", ["workload.rate=0.5", "workload.total_duration=6"]),
    ],
)
def test_each_preset_runs_end_to_end_through_the_cli(tmp_path, preset, load):
    run_dir = tmp_path / preset
    result = llmsim_cli(
        f"workload={preset}", "model=qwen2_5_7b", *load, "simulation.max_simulation_time=60", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "summary.json").read_text())["frameworks"]["vllm"]
    assert metrics["completed"] > 3
    if preset == "agentic":
        assert metrics["prefix_cache_hit_rate"] > 0.5  # the shared system prompt and each session's history
    if preset == "sharegpt":
        assert metrics["prefix_cache_hit_rate"] > 0  # follow-up turns reuse their conversation


@pytest.mark.slow
def test_a_preset_too_long_for_the_models_context_is_warned_about_before_the_run(tmp_path):
    result = llmsim_cli(
        "workload=agentic",
        "workload.total_duration=2",
        "simulation.max_simulation_time=10",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("llmsim: warning:")]
    assert len(warnings) == 1
    assert "'agent'" in warnings[0] and "8,192 tokens" in warnings[0] and "model=qwen2_5_7b" in warnings[0]
    quiet = llmsim_cli(
        "workload=sharegpt",
        "workload.total_duration=2",
        "simulation.max_simulation_time=10",
        f"hydra.run.dir={tmp_path / 'sharegpt'}",
    )
    assert "llmsim: warning:" not in quiet.stderr
