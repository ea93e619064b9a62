"""Fitting a synthetic workload to a trace: ``python -m llmsim.workload fit FILE --out workload.yaml``.

The summary gives what a reader checks first: requests, duration, mean rate, inter-arrival
coefficient of variation (CV), input and output length statistics, sessions and prefix groups.
The fitted workload is an open-loop ``conf/workload``-style file whose sessions arrive at the
trace's session rate with Gamma gaps of ``burstiness = 1 / CV²`` (the ``vllm bench serve``
shape), whose lengths follow the trace's (as ``Empirical`` quantiles, or ``LogNormal`` matched by
mean and standard deviation), and whose turns per session, think times and shared system prompts
follow the trace's sessions and prefix groups. Think times are the gaps between turns in the trace,
so they include the server's response time (an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import yaml

from llmsim.workload.trace import Trace, group_prefix_lengths

DistKind = Literal["empirical", "lognormal"]
#: Burstiness is 1/CV²; keep it in a range Gamma sampling handles well.
BURSTINESS_RANGE = (0.01, 1000.0)


@dataclass(frozen=True)
class Decomposition:
    """A trace split into sessions: first-turn arrivals, new tokens per turn, turns, think gaps."""

    session_starts: np.ndarray
    new_prompt_tokens: np.ndarray  # tokens each turn adds beyond shared prompt / conversation history
    turns: np.ndarray  # turns per session
    think_gaps: np.ndarray  # seconds between consecutive turns of a session
    group_lengths: np.ndarray  # shared-prompt length per prefix group
    sessions_with_group: int


def decompose(trace: Trace) -> Decomposition:
    """Undo the conversation structure of a trace (the inverse of :func:`llmsim.workload.trace.trace_sessions`)."""
    shortest = group_prefix_lengths(trace)  # a group's shared prompt when prefix_tokens is not given
    last: dict[int, tuple[int, float]] = {}  # session -> (tokens so far, last arrival)
    turns: dict[int, int] = {}
    starts, new_tokens, gaps = [], [], []
    group_lengths: dict[int, int] = {}
    with_group = 0
    for i in range(len(trace)):
        prompt, code, time = int(trace.input_tokens[i]), int(trace.session[i]), float(trace.time[i])
        key = code if code >= 0 else -(i + 1)
        if key in last:
            history, previous_time = last[key]
            new_tokens.append(max(prompt - history, 1))
            gaps.append(time - previous_time)
            turns[key] += 1
        else:
            starts.append(time)
            turns[key] = 1
            shared, group = 0, int(trace.prefix_group[i])
            if group >= 0:
                with_group += 1
                given = int(trace.prefix_tokens[i])
                shared = min(given if given >= 0 else int(shortest[group]), prompt)
                group_lengths.setdefault(group, shared)
            new_tokens.append(max(prompt - shared, 1))
        last[key] = (prompt + int(trace.output_tokens[i]), time)
    return Decomposition(
        np.asarray(starts),
        np.asarray(new_tokens, dtype=np.float64),
        np.asarray(list(turns.values()), dtype=np.float64),
        np.asarray(gaps, dtype=np.float64),
        np.asarray([v for v in group_lengths.values() if v > 0], dtype=np.float64),
        with_group,
    )


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


def _rate_and_cv(times: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(times)
    if len(gaps) == 0 or gaps.sum() <= 0:
        return 0.0, 0.0
    return float(1.0 / gaps.mean()), float(gaps.std() / gaps.mean())


def summarize_trace(trace: Trace) -> dict[str, Any]:
    """Counts, duration, mean rate, inter-arrival CV and length statistics of a trace."""
    parts = decompose(trace)
    rate, cv = _rate_and_cv(trace.time)
    return {
        "file": str(trace.path),
        "layout": trace.layout,
        "requests": len(trace),
        "skipped_rows": trace.skipped,
        "duration_s": float(trace.time[-1] - trace.time[0]),
        "mean_rate": rate,
        "interarrival_cv": cv,
        "sessions": len(parts.turns),
        "multi_turn_sessions": int((parts.turns > 1).sum()),
        "prefix_groups": len(parts.group_lengths),
        "input_tokens": _stats(trace.input_tokens.astype(np.float64)),
        "output_tokens": _stats(trace.output_tokens.astype(np.float64)),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few human-readable lines."""

    def lengths(name: str) -> str:
        s = summary[name]
        return (
            f"{name.replace('_', ' ')}: mean {s['mean']:.1f}, std {s['std']:.1f}, min {s['min']:g}, "
            f"p50 {s['p50']:g}, p90 {s['p90']:g}, p99 {s['p99']:g}, max {s['max']:g}"
        )

    cv = summary["interarrival_cv"]
    burstiness = f" (burstiness 1/CV^2 = {1 / cv**2:.3g})" if cv > 0 else ""
    return "\n".join(
        [
            f"trace {summary['file']} ({summary['layout']} layout)",
            f"requests: {summary['requests']} ({summary['skipped_rows']} rows with zero tokens skipped)",
            f"sessions: {summary['sessions']} ({summary['multi_turn_sessions']} multi-turn); "
            f"prefix groups: {summary['prefix_groups']}",
            f"duration: {summary['duration_s']:.3f} s; mean rate: {summary['mean_rate']:.4g} req/s; "
            f"inter-arrival CV: {cv:.3f}{burstiness}",
            lengths("input_tokens"),
            lengths("output_tokens"),
        ]
    )


def _dist(values: np.ndarray, kind: DistKind, quantiles: int, *, is_int: bool = True) -> dict[str, Any]:
    """A distribution spec that reproduces ``values``."""
    low, high = float(values.min()), float(values.max())
    if kind == "lognormal" and values.mean() > 0:
        mean, std = float(values.mean()), float(values.std())
        spec: dict[str, Any] = {"type": "LogNormal", "mean": _round(mean), "sigma": _round(std)}
        spec.update(is_int=is_int, min=_round(low), max=_round(high))
        return spec
    if len(np.unique(values)) <= quantiles:
        points, counts = np.unique(values, return_counts=True)
    else:  # mid-quantiles: equally likely points that follow the trace's distribution
        points = np.quantile(values, (np.arange(quantiles) + 0.5) / quantiles)
        points, counts = np.unique(np.rint(points) if is_int else points, return_counts=True)
    spec = {"type": "Empirical", "values": [_round(v) for v in points.tolist()]}
    if len(set(counts.tolist())) > 1:
        spec["weights"] = [int(c) for c in counts.tolist()]
    spec["is_int"] = is_int
    return spec


def _round(value: float) -> float | int:
    if float(value).is_integer():
        return int(value)
    return float(f"{value:.6g}")


def fit_workload(trace: Trace, *, dist: DistKind = "empirical", quantiles: int = 64) -> dict[str, Any]:
    """A ``workload`` config (conf/workload layout) whose distributions reproduce the trace."""
    parts = decompose(trace)
    rate, cv = _rate_and_cv(parts.session_starts)
    if rate <= 0:  # one session, or all at once: fall back to the request rate over the trace
        rate = len(parts.session_starts) / max(float(trace.time[-1]), 1.0)
        cv = 1.0
    burstiness = float(np.clip(1.0 / cv**2, *BURSTINESS_RANGE)) if cv > 0 else BURSTINESS_RANGE[1]
    sessions = len(parts.session_starts)
    profile: dict[str, Any] = {
        "profile_name": "fitted",
        "weight": 1.0,
        "inter_arrival_time_dist_config": None,
        "prompt_tokens_dist_config": _dist(parts.new_prompt_tokens, dist, quantiles),
        "max_output_tokens_dist_config": _dist(trace.output_tokens.astype(np.float64), dist, quantiles),
        "conversational_probability": 0.0,
        "streaming_response_probability": 1.0,
    }
    if (parts.turns > 1).any():
        profile["turns_dist_config"] = _dist(parts.turns, "empirical", quantiles)
        profile["max_conversation_turns"] = int(parts.turns.max())
        profile["conversation_think_time_dist_config"] = _dist(
            np.maximum(parts.think_gaps, 0.0), dist, quantiles, is_int=False
        )
    if len(parts.group_lengths):
        profile["shared_prefix_groups"] = len(parts.group_lengths)
        profile["shared_prefix_fraction"] = _round(round(parts.sessions_with_group / sessions, 4))
        profile["shared_prefix_tokens_dist_config"] = _dist(parts.group_lengths, "empirical", quantiles)
    return {
        "kind": "open_loop",
        "rate": _round(rate),
        "burstiness": _round(burstiness),
        "rate_schedule": None,
        "total_duration": _round(sessions / rate),
        "num_requests": None,
        "concurrency": None,
        "think_time_dist_config": None,
        "stream_chunk_tokens": 1,
        "bytes_per_token_estimate_for_network": 2,
        "random_seed": None,
        "client_profiles": [profile],
    }


def render_workload_yaml(workload: dict[str, Any], summary: dict[str, Any]) -> str:
    """The fitted workload as YAML, headed by the trace summary as comments."""
    header = [f"# {line}" for line in format_summary(summary).splitlines()]
    header.insert(0, "# Fitted by `python -m llmsim.workload fit` from:")
    header.append("# Session starts arrive at `rate` with Gamma(burstiness) gaps; turns carry their history.")
    body = yaml.safe_dump(workload, sort_keys=False, default_flow_style=None, width=120)
    return "\n".join(header) + "\n" + body
