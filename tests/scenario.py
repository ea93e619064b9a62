"""Helpers for scenario stories: run a config quietly, and price hand-built batches."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pandas as pd

from llmsim import ExperimentOrchestrator
from llmsim.frameworks.base import AbstractLLMFramework


def run_quietly(config: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Run an experiment without printing; returns (summary, requests table, step series)."""
    orchestrator = ExperimentOrchestrator(config)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = orchestrator.run()
    collector = orchestrator.metrics_collector
    assert collector is not None
    return summary, collector.get_all_request_metrics_df(), collector.get_step_series_df()


def framework_for(config: dict[str, Any]) -> AbstractLLMFramework:
    """A set-up (not run) framework instance of the config, to price batches by hand."""
    orchestrator = ExperimentOrchestrator(config)
    orchestrator.setup_simulation()
    return orchestrator.llm_framework_instances[0]


def step_time(
    framework: AbstractLLMFramework, *, prefill: list[tuple[int, int, bool]] = (), decode: list[int] = ()
) -> float:
    """Duration of one step with the given prefill chunks (new, context, samples) and decode contexts."""
    batch = framework.perf_model.new_batch()
    for new, context, samples in prefill:
        batch.add_prefill(new, context, samples)
    for context in decode:
        batch.add_decode(context)
    return framework.step_duration(batch, len(prefill) + len(decode))
