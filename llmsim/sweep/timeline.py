"""The run timeline: KV-cache use, running batch and waiting queue over simulated time, one column of
panels per framework (so no framework's line hides another's), from a run's ``steps.parquet``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from llmsim.errors import LLMSimError
from llmsim.metrics.step_buckets import merge_buckets, partial_buckets
from llmsim.metrics.step_series import STEP_COLUMNS
from llmsim.sweep.figures import save_figure

#: a per-step series longer than this is plotted in buckets of simulated time (about this many per
#: framework: a few per pixel of a panel, so alternating prefill and decode steps do not fill it solid)
TIMELINE_POINTS = 800


def timeline_table(steps_file: Path, max_points: int = TIMELINE_POINTS) -> pd.DataFrame:
    """A run's step series as a table to plot: as written if it is bucketed (``metrics.step_series_bucket_s``)
    or short, otherwise read a row group at a time and reduced to about ``max_points`` buckets per
    framework (a 1M-request run writes tens of millions of step rows: never loaded whole).

    Bucketed tables have :data:`~llmsim.metrics.step_buckets.BUCKET_COLUMNS`; short per-step ones, the
    step columns.
    """
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(steps_file)
    names = parquet.schema_arrow.names
    if "steps" in names or parquet.metadata.num_rows <= max_points:
        return parquet.read().to_pandas()
    missing = sorted(set(STEP_COLUMNS) - set(names))
    if missing:
        raise LLMSimError(f"{steps_file}: not a step series (no column {', '.join(missing)})")
    first, last = _step_span(parquet)
    bucket_s = max(last - first, 1e-9) / max_points
    # a row group at a time (iterating record batches holds on to memory as it goes)
    partials = [
        partial_buckets(parquet.read_row_group(group, columns=list(STEP_COLUMNS)).to_pandas(), bucket_s, first)[0]
        for group in range(parquet.num_row_groups)
    ]
    return merge_buckets(partials, bucket_s, first)


def _step_span(parquet: Any) -> tuple[float, float]:
    """The first and last step start of a Parquet step series: from row-group statistics, else read."""
    column = parquet.schema_arrow.get_field_index("time_s")
    first, last = np.inf, -np.inf
    for group in range(parquet.num_row_groups):
        stats = parquet.metadata.row_group(group).column(column).statistics
        if stats is not None and stats.has_min_max:
            low, high = float(stats.min), float(stats.max)
        else:
            times = parquet.read_row_group(group, columns=["time_s"]).column(0).to_numpy()
            low, high = float(times.min(initial=np.inf)), float(times.max(initial=-np.inf))
        first, last = min(first, low), max(last, high)
    return (first, last) if first <= last else (0.0, 0.0)


#: the timeline's rows: column of the step series, y label, scale to apply (None: percent of the KV pool)
PANELS = (
    ("kv_blocks_used", "KV cache used (%)", None),
    ("num_seqs", "requests in the batch", 1.0),
    ("num_waiting", "waiting requests", 1.0),
)


def _read_mapping(path: Path, loader: Any) -> dict[str, Any]:
    """A JSON or YAML file's top-level mapping, or ``{}`` when it is missing, unreadable or not a mapping."""
    try:
        data = loader(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_facts(summary: dict[str, Any], config: dict[str, Any]) -> tuple[Any, Any, Any, Any, str]:
    """(model, hardware, workload, rate, rate unit): from the summary's ``run`` block, else the run's config."""
    meta = summary.get("run") if isinstance(summary.get("run"), dict) else {}
    if meta:
        workload = meta.get("workload") or {}
        hardware = meta.get("hardware") or {}
        gpu = f"{hardware.get('name')} ({hardware.get('gpu')})" if hardware.get("gpu") else hardware.get("name")
        return (
            (meta.get("model") or {}).get("name"),
            gpu,
            workload.get("name"),
            workload.get("request_rate"),
            workload.get("request_rate_unit") or "/s",
        )

    def field(group: str, name: str) -> Any:
        section = config.get(group)
        return section.get(name) if isinstance(section, dict) else None

    return field("model", "name"), field("hardware", "name"), field("workload", "kind"), field("workload", "rate"), "/s"


def run_title(run_dir: Path) -> str:
    """``compare_frameworks`` and ``llama3_8b on a100 (NVIDIA ...), chat workload at 30 sessions/s``, with
    the run directory's name."""
    summary = _read_mapping(run_dir / "summary.json", json.loads)
    config = _read_mapping(run_dir / ".hydra" / "config.yaml", yaml.safe_load)
    name = str(summary.get("experiment") or run_dir.resolve().name)
    model, hardware, workload, rate, unit = _run_facts(summary, config)
    parts = []
    if model and hardware:
        parts.append(f"{model} on {hardware}")
    if workload:
        at = f" at {rate:g} {unit}" if isinstance(rate, int | float) else ""
        parts.append(f"{workload} workload{at}")
    detail = f"{', '.join(parts)}; " if parts else ""
    return f"Engine state over simulated time — {name}\n{detail}run directory {run_dir.resolve().name}"


def plot_run_timeline(run_dir: Path, out: Path) -> Path:
    """KV-cache use, running batch and waiting queue over simulated time for one run.

    One column of panels per framework, rows shared in y so frameworks read against each other.
    Per-step series are drawn step by step; bucketed ones (written bucketed, or long ones reduced
    here) as the duration-weighted mean, with each bucket's maximum as a faint line.
    """
    steps_file = run_dir / "steps.parquet"
    if not steps_file.exists():
        raise LLMSimError(f"{run_dir}: no steps.parquet (was metrics.output_steps_parquet_path disabled?)")
    steps = timeline_table(steps_file)
    if steps.empty:
        raise LLMSimError(f"{steps_file}: no steps to plot")
    bucketed = "steps" in steps.columns
    frameworks = sorted(steps["framework"].astype(str).unique())
    columns = len(frameworks)
    fig, axes = plt.subplots(
        len(PANELS),
        columns,
        figsize=(min(max(4.6 * columns + 1.5, 9.0), 20), 8.5),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, framework in enumerate(frameworks):
        rows = steps[steps["framework"].astype(str) == framework]
        t = rows["time_s"].to_numpy()
        total = rows["kv_blocks_total"].to_numpy(dtype=float)
        color = colors[col % len(colors)]
        for row, (name, _, scale) in enumerate(PANELS):
            ax = axes[row][col]
            factor: Any = 100.0 / np.where(total > 0, total, np.nan) if scale is None else scale
            if bucketed:
                ax.plot(
                    t, rows[f"{name}_max"] * factor, color=color, alpha=0.4, lw=0.7, label=f"{framework} (bucket max)"
                )
                ax.plot(t, rows[f"{name}_mean"] * factor, color=color, lw=1.0, label=f"{framework} (bucket mean)")
            else:
                ax.plot(t, rows[name] * factor, color=color, lw=0.8, label=framework)
            ax.set_ylim(bottom=0, top=None if ax.get_ylim()[1] >= 1 else 1)  # an empty queue: 0 to 1, not 0 to 0.05
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small", loc="upper right")
        axes[0][col].set_title(framework)
        axes[-1][col].set_xlabel("simulated time (s)")
    for row, (_, ylabel, _) in enumerate(PANELS):
        axes[row][0].set_ylabel(ylabel)
    width = steps.attrs.get("bucket_s") or _bucket_width(steps)
    width_text = f" — buckets of {width:.3g} s" if bucketed and np.isfinite(width) else ""
    fig.suptitle(run_title(run_dir) + width_text, fontsize="medium")
    fig.tight_layout()
    path = out / "run_timeline.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def _bucket_width(steps: pd.DataFrame) -> float:
    """The bucket width of a bucketed file: the smallest gap between a framework's bucket starts
    (NaN if no framework has two buckets)."""
    gaps = [np.diff(rows["time_s"].to_numpy()) for _, rows in steps.groupby("framework")]
    positive = np.concatenate([g[g > 0] for g in gaps]) if gaps else np.array([])
    return float(positive.min()) if len(positive) else float("nan")
