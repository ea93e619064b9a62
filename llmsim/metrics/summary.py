"""Summary metrics per framework, named and defined as ``vllm bench serve`` reports them.

Per request (client side): TTFT = first token received - sent; E2EL = last token received - sent;
TPOT = (E2EL - TTFT) / (output tokens - 1) for requests with more than one output token; ITL =
every gap between consecutive streamed tokens, pooled over requests. Latencies are in ms, as
``mean_*``, ``median_*``, ``std_*`` (population) and ``p{P}_*`` (numpy linear interpolation).

Populations: TTFT, TPOT and ITL are what a streaming client measures, so they are taken over the
completed *streamed* requests (``vllm bench serve`` always streams); a non-streamed answer arrives
whole, its first token is its last, and counting it would put its E2EL into the TTFT tail. E2EL
is over every completed request. ``num_streamed`` / ``num_non_streamed`` count the two groups.

Throughputs divide by the benchmark duration (``duration``): first send to last completion of the
measured requests, as vLLM does, so they include the tail after the last arrival. The *arrival
window* (:func:`arrival_window`) is the span in which new sessions are sent; ``offered_*_rate`` and
``request_throughput_steady`` are counted over it, so a rate sweep's throughput reads against its
offered load. Requests sent before ``warm_up_duration_s`` are left out of every statistic.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmsim.metrics.stats import weighted_mean_std, weighted_percentiles

if TYPE_CHECKING:
    from llmsim.metrics.collector import MetricsCollector

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


def percentile_label(p: float) -> str:
    """``99`` -> ``p99``, ``99.9`` -> ``p99.9`` (vLLM's naming)."""
    return f"p{int(p)}" if float(p).is_integer() else f"p{p:g}"


def _latency_stats(
    name: str, values: np.ndarray, counts: np.ndarray | None, percents: tuple[float, ...]
) -> dict[str, float]:
    out: dict[str, float] = {}
    if counts is None:
        counts = np.ones(len(values), dtype=np.int64)
    if len(values) == 0 or counts.sum() == 0:
        out[f"mean_{name}_ms"] = out[f"median_{name}_ms"] = out[f"std_{name}_ms"] = 0.0
        for p in percents:
            out[f"{percentile_label(p)}_{name}_ms"] = 0.0
        return out
    mean, std = weighted_mean_std(values, counts)
    median, *pcts = weighted_percentiles(values, counts, [50.0, *percents])
    out[f"mean_{name}_ms"] = mean
    out[f"median_{name}_ms"] = median
    out[f"std_{name}_ms"] = std
    for p, value in zip(percents, pcts, strict=True):
        out[f"{percentile_label(p)}_{name}_ms"] = value
    return out


#: the latencies a streaming client measures: their SLOs apply to streamed requests only
STREAMED_ONLY = ("ttft", "tpot", "itl")


def meets_slos(done: pd.DataFrame, slos: dict[str, float]) -> np.ndarray:
    """Which completed requests meet every SLO (``{"ttft": 500, ...}`` in ms) that applies to them.

    Each SLO covers the population its statistic covers: TTFT and TPOT SLOs the streamed requests
    (a non-streamed answer has no first-token time of its own, and a single token no TPOT), an
    E2EL SLO every request.
    """
    good = np.ones(len(done), dtype=bool)
    streamed = done["streaming"].to_numpy(dtype=bool)
    for metric, limit in slos.items():
        values = done[f"{metric}_ms"].to_numpy(dtype=float)
        applies = ~np.isnan(values)
        if metric in STREAMED_ONLY:
            applies &= streamed
        good &= ~applies | (values <= limit)
    return good


def arrival_window(measured: pd.DataFrame, configured: tuple[float, float] | None) -> tuple[float, float, bool] | None:
    """The span (start, end, measured) in seconds in which new sessions were sent; None without width.

    ``configured`` is the workload's own window where it has one (open loop: warm-up end to
    ``total_duration``); otherwise it is measured (``measured`` True): first to last send of a
    session's first turn. An offline batch (everything at t=0) has none.
    """
    if configured is not None:
        start, end = configured
        if end > start:
            return float(start), float(end), False
    first_turns = measured["send_time_s"].to_numpy()[measured["turn"].to_numpy() == 0]
    if len(first_turns) < 2:
        return None
    start, end = float(first_turns.min()), float(first_turns.max())
    return (start, end, True) if end > start else None


def _load_metrics(
    measured: pd.DataFrame, requests: pd.DataFrame, window: tuple[float, float, bool] | None
) -> dict[str, Any]:
    """Offered session and request rates and completions per second, all over the arrival window.

    A measured window opens with its first send, so n sends span n - 1 gaps: the first is not
    counted (the rate estimate has no bias). Completions count every request that finished inside
    the window, warm-up ones included: with ``warm_up_duration_s`` the window starts on a loaded
    system. None (``null`` in JSON) where the window has no width (an offline batch).
    """
    if window is None:
        return dict.fromkeys(("offered_session_rate", "offered_request_rate", "request_throughput_steady"))
    start, end, measured_window = window
    width = end - start
    opening = 1 if measured_window else 0
    send = measured["send_time_s"].to_numpy()
    inside = (send >= start) & (send <= end)
    completions = requests["completion_time_s"].to_numpy()[requests["status"].to_numpy() == "completed"]
    return {
        "offered_session_rate": (int((inside & (measured["turn"].to_numpy() == 0)).sum()) - opening) / width,
        "offered_request_rate": (int(inside.sum()) - opening) / width,
        "request_throughput_steady": int(((completions >= start) & (completions <= end)).sum()) / width,
    }


def summarize_framework(
    collector: MetricsCollector,
    framework: str,
    requests: pd.DataFrame,
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Every summary metric of one framework (``window``: the workload's configured arrival window)."""
    cfg = collector.config
    percents = cfg.percentiles_to_calculate
    measured = requests[requests["send_time_s"] >= cfg.warm_up_duration_s]
    done = measured[measured["status"] == "completed"]
    streamed = done[done["streaming"].to_numpy(dtype=bool)]
    out: dict[str, Any] = {}
    duration = float(done["completion_time_s"].max() - done["send_time_s"].min()) if len(done) else 0.0
    out["completed"] = len(done)
    out["failed"] = int((measured["status"] == "rejected").sum())
    out["incomplete"] = int((measured["status"] == "incomplete").sum())
    out["num_streamed"] = len(streamed)
    out["num_non_streamed"] = len(done) - len(streamed)
    out["duration"] = duration
    out["total_input_tokens"] = int(done["prompt_tokens"].sum())
    out["total_output_tokens"] = int(done["output_tokens"].sum())
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    out["request_throughput"] = rate(len(done))
    out["output_throughput"] = rate(out["total_output_tokens"])
    out["total_token_throughput"] = rate(out["total_input_tokens"] + out["total_output_tokens"])
    out.update(_load_metrics(measured, requests, arrival_window(measured, window)))
    slos = cfg.slos_ms
    if slos:
        good = meets_slos(done, slos)
        out["request_goodput"] = rate(int(good.sum()))
        out["slo_attainment"] = float(good.mean()) if len(done) else 0.0
    for name, population in (("ttft", streamed), ("tpot", streamed), ("e2el", done)):
        column = population[f"{name}_ms"].to_numpy()
        out.update(_latency_stats(name, column[~np.isnan(column)], None, percents))
    gaps, counts = collector.itl_samples(framework)
    out.update(_latency_stats("itl", gaps * 1e3, counts, percents))
    prompt = int(measured["prompt_tokens"][measured["status"] == "completed"].sum())
    cached = int(measured["cached_prompt_tokens"][measured["status"] == "completed"].sum())
    out["prefix_cache_hit_rate"] = cached / prompt if prompt else 0.0
    out["preemptions"] = int(requests["preemptions"].sum())
    for kind, count in collector.events[framework].items():
        out[f"num_{kind}"] = int(count)
    stats = collector.step_stats.get(framework)
    out["num_steps"] = stats.count if stats else 0
    if stats and stats.count and stats.duration > 0:
        out["mean_kv_cache_usage"] = stats.kv_weighted / stats.duration
        out["max_kv_cache_usage"] = float(stats.kv_max)
        out["mean_batch_size"] = stats.batch_weighted / stats.duration
        out["max_batch_size"] = int(stats.batch_max)
        out["mean_waiting_requests"] = stats.waiting_weighted / stats.duration
    else:
        out["mean_kv_cache_usage"] = out["max_kv_cache_usage"] = out["mean_batch_size"] = 0.0
        out["max_batch_size"] = 0
        out["mean_waiting_requests"] = 0.0
    return {k: (float(v) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}


def summarize(collector: MetricsCollector, simulation_actual_duration: float) -> dict[str, Any]:
    """The run's summary: ``{"frameworks": {name: metrics}, "deployments": ..., "simulated_time_s": ...}``."""
    requests = collector.get_all_request_metrics_df()
    frameworks = {}
    for framework in collector.frameworks:
        frameworks[framework] = summarize_framework(
            collector,
            framework,
            requests[requests["framework"] == framework],
            collector.arrival_window_s,
        )
    return {
        "frameworks": frameworks,
        "deployments": dict(collector.framework_info),
        "simulated_time_s": float(simulation_actual_duration),
        "warm_up_duration_s": collector.config.warm_up_duration_s,
        "percentiles": list(collector.config.percentiles_to_calculate),
    }
