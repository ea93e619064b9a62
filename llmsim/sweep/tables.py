"""Loading result tables from what users point at: a run dir, a sweep dir or a Parquet file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from llmsim.errors import LLMSimError
from llmsim.sweep.aggregate import RUNS_TABLE, aggregate, read_override_keys, swept_keys


@dataclass
class ResultTable:
    """Rows of metrics (one per run and framework) and the columns that identify a configuration."""

    frame: pd.DataFrame
    keys: list[str]
    source: Path


def load_results(path: str | Path) -> ResultTable:
    """A run directory (summary.json), a sweep directory (runs.parquet, built if missing) or a Parquet table."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        if "request_id" in frame or ("run" not in frame and "framework" not in frame):
            raise LLMSimError(
                f"{path}: not a table of run results (one row per run and framework): give a runs.parquet, "
                "a sweep directory or a run directory"
            )
        return ResultTable(frame, _keys(path, frame), path)
    if not path.exists():
        raise LLMSimError(f"{path} does not exist")
    if path.is_dir() and (path / "summary.json").exists():
        return _single_run(path)
    if path.is_dir() and ((path / RUNS_TABLE).exists() or (path / "multirun.yaml").exists()):
        if (path / RUNS_TABLE).exists():
            frame = pd.read_parquet(path / RUNS_TABLE)
            return ResultTable(frame, _keys(path / RUNS_TABLE, frame), path)
        tables = aggregate(path)
        return ResultTable(tables.runs, tables.override_keys, path)
    raise LLMSimError(f"{path}: not a run directory (summary.json), a sweep directory or a .parquet table")


def _keys(path: Path, frame: pd.DataFrame) -> list[str]:
    """Swept keys of a runs table: from its metadata, else the columns in front of ``run``."""
    keys = read_override_keys(path)
    if keys is None and "run" in frame.columns:
        keys = list(frame.columns[: list(frame.columns).index("run")])
    return keys or []


def _single_run(path: Path) -> ResultTable:
    summary = json.loads((path / "summary.json").read_text())
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) or [] if overrides_file.exists() else []
    keys = swept_keys(overrides)
    rows = [{**keys, "run": path.name, "framework": name, **metrics} for name, metrics in summary["frameworks"].items()]
    return ResultTable(pd.DataFrame(rows), list(keys), path)
