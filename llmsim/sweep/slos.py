"""The SLOs a sweep or run was configured with, and goodput against other SLOs after the fact.

A job's SLOs are its ``metrics.slo_ttft_ms``, ``metrics.slo_tpot_ms`` and ``metrics.slo_e2el_ms``
(``vllm bench serve --goodput ttft:MS tpot:MS e2el:MS``), read from its ``.hydra/config.yaml`` (a
sweep's ``multirun.yaml`` when no job has one). Goodput against other limits is recomputed from the
requests tables with the rule ``summary.json`` uses: a completed request is good when every limit
holds (a request with one output token has no TPOT and passes that limit), goodput = good requests /
benchmark duration (first send to last completion), attainment = good / completed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from llmsim.errors import LLMSimError
from llmsim.metrics.summary import meets_slos
from llmsim.sweep.aggregate import REQUESTS_TABLE
from llmsim.sweep.tables import ResultTable

SLO_METRICS = ("ttft", "tpot", "e2el")


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping file ({} when missing, unreadable or not a mapping)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader)
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_dir_of(results: ResultTable, run: str) -> Path:
    """The directory of one run of ``results`` (a run dir, a sweep dir, or a table inside a sweep dir)."""
    source = results.source
    if source.is_dir() and (source / "summary.json").exists():
        return source
    return (source if source.is_dir() else source.parent) / run


def run_config(results: ResultTable) -> dict[str, Any]:
    """The composed config of the first run that has one (else the sweep's ``multirun.yaml``)."""
    for run in dict.fromkeys(results.frame.get("run", pd.Series(dtype=str)).astype(str)):
        config = load_yaml(run_dir_of(results, run) / ".hydra" / "config.yaml")
        if config:
            return config
    source = results.source if results.source.is_dir() else results.source.parent
    return load_yaml(source / "multirun.yaml")


def run_choices(results: ResultTable) -> dict[str, str]:
    """The config-group options of the first run (``{"workload": "chat", ...}``, from ``.hydra/hydra.yaml``)."""
    for run in list(dict.fromkeys(results.frame.get("run", pd.Series(dtype=str)).astype(str)))[:1]:
        hydra = load_yaml(run_dir_of(results, run) / ".hydra" / "hydra.yaml").get("hydra") or {}
        choices = (hydra.get("runtime") or {}).get("choices") if isinstance(hydra, dict) else None
        if isinstance(choices, dict):
            return {str(k): str(v) for k, v in choices.items() if v is not None}
    return {}


def configured_slos(results: ResultTable) -> dict[str, float]:
    """``{"ttft": 500.0, "tpot": 50.0}``: the SLOs every run of ``results`` was configured with.

    A limit swept across the runs (a ``metrics.slo_ttft_ms`` column taking several values) is left
    out: there is no single line to draw for it.
    """
    metrics = run_config(results).get("metrics") or {}
    slos: dict[str, float] = {}
    for name in SLO_METRICS:
        column = f"metrics.slo_{name}_ms"
        if column in results.frame:
            values = results.frame[column].dropna().unique()
            value = values[0] if len(values) == 1 else None
        else:
            value = metrics.get(f"slo_{name}_ms")
        if value is not None:
            slos[name] = float(value)
    return slos


def slo_text(slos: dict[str, float]) -> str:
    """``TTFT <= 500 ms, TPOT <= 50 ms``."""
    return ", ".join(f"{name.upper()} <= {limit:g} ms" for name, limit in slos.items())


def _column(frame: pd.DataFrame, *names: str) -> pd.Series:
    for name in names:
        if name in frame:
            return frame[name]
    raise LLMSimError(f"{REQUESTS_TABLE} has none of the columns {', '.join(names)}")


def recompute_goodput(results: ResultTable, slos: dict[str, float]) -> pd.DataFrame:
    """``results.frame`` with ``request_goodput`` and ``slo_attainment`` recomputed for ``slos`` from the
    sweep's requests table (requests sent before ``metrics.warm_up_duration_s`` left out, as in summaries)."""
    source = results.source if results.source.is_dir() else results.source.parent
    requests_file = source / REQUESTS_TABLE
    if not requests_file.exists():
        raise LLMSimError(f"{source}: no {REQUESTS_TABLE} to compute goodput from (run python -m llmsim.aggregate)")
    requests = pd.read_parquet(requests_file)
    warm_up = float((run_config(results).get("metrics") or {}).get("warm_up_duration_s") or 0.0)
    rows = []
    for (run, framework), group in requests.groupby(["run", "framework"], sort=True):
        # older sweeps' tables name the times without their unit
        send = _column(group, "send_time_s", "send_time")
        measured = group[send >= warm_up]
        done = measured[measured["status"] == "completed"]
        good = meets_slos(done, slos)
        span = 0.0
        if len(done):
            span = float(_column(done, "completion_time_s", "completion_time").max())
            span -= float(_column(done, "send_time_s", "send_time").min())
        rows.append(
            {
                "run": run,
                "framework": framework,
                "request_goodput": float(good.sum() / span) if span > 0 else 0.0,
                "slo_attainment": float(good.mean()) if len(done) else 0.0,
            }
        )
    frame = results.frame.drop(columns=["request_goodput", "slo_attainment"], errors="ignore")
    return frame.merge(pd.DataFrame(rows), on=["run", "framework"], how="inner")
