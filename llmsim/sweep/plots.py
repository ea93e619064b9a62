"""PNG charts of sweeps and single runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from llmsim.errors import LLMSimError
from llmsim.metrics.step_buckets import merge_buckets, partial_buckets
from llmsim.metrics.step_series import STEP_COLUMNS
from llmsim.sweep.aggregate import REQUESTS_TABLE
from llmsim.sweep.tables import ResultTable, load_results

LOAD_KEYS = ("workload.rate", "workload.concurrency", "workload.num_requests")


def save_figure(fig: Any, path: Path) -> None:
    """A PNG written atomically (an interrupted plot never leaves a truncated image)."""
    from llmsim.outputs import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _load_key(frame: pd.DataFrame, keys: list[str]) -> str | None:
    """The swept load axis (offered rate, concurrency or request count): the first that takes several values."""
    return next((k for k in LOAD_KEYS if k in keys and k in frame and frame[k].nunique() > 1), None)


def _configurations(frame: pd.DataFrame, keys: list[str], load_key: str | None) -> dict[str, pd.DataFrame]:
    """Rows grouped by everything swept except the load axis (one line per configuration)."""
    group_keys = [k for k in keys if k != load_key and frame[k].nunique() > 1]
    if "framework" in frame and frame["framework"].nunique() > 1:
        group_keys.append("framework")
    if not group_keys:
        return {"all runs": frame}
    groups = {}
    for values, rows in frame.groupby(group_keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        groups[" ".join(f"{k}={v}" for k, v in zip(group_keys, values, strict=True))] = rows
    return groups


def plot_latency_vs_throughput(results: ResultTable, out: Path) -> Path:
    """p50/p99 TTFT and TPOT against achieved output throughput, one line per configuration."""
    frame = results.frame[results.frame.get("status", "ok") == "ok"]
    load_key = _load_key(results.frame, results.keys)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for label, rows in _configurations(frame, results.keys, load_key).items():
        rows = rows.sort_values(load_key) if load_key else rows.sort_values("output_throughput")
        for ax, column in zip(
            axes.flat, ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms"), strict=True
        ):
            if column in rows:
                ax.plot(rows["output_throughput"], rows[column], marker="o", label=label)
    for ax, title in zip(axes.flat, ("TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99"), strict=True):
        ax.set_title(title)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("achieved output throughput (tokens/s)")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"Latency against throughput — {results.source}")
    fig.tight_layout()
    path = out / "latency_vs_throughput.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def slo_table(results: ResultTable, ttft_ms: float, tpot_ms: float) -> pd.DataFrame:
    """Per run and framework: SLO attainment and goodput, from the sweep's requests table."""
    requests_file = results.source / REQUESTS_TABLE if results.source.is_dir() else None
    if requests_file is None or not requests_file.exists():
        raise LLMSimError(f"{results.source}: no {REQUESTS_TABLE} to compute SLO attainment from")
    requests = pd.read_parquet(requests_file)
    rows = []
    for (run, framework), group in requests.groupby(["run", "framework"], sort=True):
        done = group[group["status"] == "completed"]
        good = (done["ttft_ms"] <= ttft_ms) & (done["tpot_ms"].isna() | (done["tpot_ms"] <= tpot_ms))
        span = done["completion_time"].max() - done["send_time"].min() if len(done) else 0.0
        rows.append(
            {
                "run": run,
                "framework": framework,
                "slo_attainment": float(good.mean()) if len(done) else 0.0,
                "goodput": float(good.sum() / span) if span > 0 else 0.0,
            }
        )
    return results.frame.merge(pd.DataFrame(rows), on=["run", "framework"], how="inner")


def plot_goodput(results: ResultTable, out: Path, ttft_ms: float, tpot_ms: float) -> Path | None:
    """Goodput and SLO attainment against offered load (skipped when no load axis was swept)."""
    load_key = _load_key(results.frame, results.keys)
    if load_key is None:
        return None
    frame = slo_table(results, ttft_ms, tpot_ms)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, rows in _configurations(frame, results.keys, load_key).items():
        rows = rows.sort_values(load_key)
        left.plot(rows[load_key], rows["goodput"], marker="o", label=label)
        right.plot(rows[load_key], rows["slo_attainment"] * 100, marker="o", label=label)
    left.set_title(f"Goodput (TTFT <= {ttft_ms:g} ms, TPOT <= {tpot_ms:g} ms)")
    left.set_ylabel("good requests/s")
    right.set_title("SLO attainment")
    right.set_ylabel("% of completed requests")
    right.set_ylim(0, 105)
    for ax in (left, right):
        ax.set_xlabel(load_key)
        ax.grid(True, alpha=0.3)
    left.legend(fontsize="small")
    fig.tight_layout()
    path = out / "goodput_vs_load.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


#: a per-step series longer than this is plotted in buckets of simulated time (about this many)
TIMELINE_POINTS = 4_000


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
    column = parquet.schema_arrow.get_field_index("time")
    first, last = np.inf, -np.inf
    for group in range(parquet.num_row_groups):
        stats = parquet.metadata.row_group(group).column(column).statistics
        if stats is not None and stats.has_min_max:
            low, high = float(stats.min), float(stats.max)
        else:
            times = parquet.read_row_group(group, columns=["time"]).column(0).to_numpy()
            low, high = float(times.min(initial=np.inf)), float(times.max(initial=-np.inf))
        first, last = min(first, low), max(last, high)
    return (first, last) if first <= last else (0.0, 0.0)


def plot_run_timeline(run_dir: Path, out: Path) -> Path:
    """KV-cache use, running batch and waiting queue over simulated time for one run.

    Per-step series are drawn step by step; bucketed ones (written bucketed, or long ones reduced
    here) as the duration-weighted mean, with each bucket's maximum as a faint line.
    """
    steps_file = run_dir / "steps.parquet"
    if not steps_file.exists():
        raise LLMSimError(f"{run_dir}: no steps.parquet (was metrics.output_steps_parquet_path disabled?)")
    steps = timeline_table(steps_file)
    bucketed = "steps" in steps.columns
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for framework, rows in steps.groupby("framework", sort=True):
        t = rows["time"].to_numpy()
        total = rows["kv_blocks_total"].to_numpy()
        for ax, name, scale in (
            (axes[0], "kv_blocks_used", 100 / total),
            (axes[1], "num_seqs", 1),
            (axes[2], "num_waiting", 1),
        ):
            if not bucketed:
                ax.plot(t, rows[name] * scale, label=framework, lw=0.8)
                continue
            line = ax.plot(t, rows[f"{name}_mean"] * scale, label=f"{framework} (mean)", lw=0.8)[0]
            ax.plot(
                t, rows[f"{name}_max"] * scale, color=line.get_color(), alpha=0.35, lw=0.6, label=f"{framework} (max)"
            )
    for ax, label in zip(axes, ("KV cache used (%)", "requests in the batch", "waiting requests"), strict=True):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[2].set_xlabel("simulated time (s)")
    width = steps.attrs.get("bucket_s") or _bucket_width(steps)
    width_text = f" — buckets of {width:.3g} s" if bucketed and np.isfinite(width) else ""
    fig.suptitle(f"Engine state over time — {run_dir}{width_text}")
    fig.tight_layout()
    path = out / "run_timeline.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def _bucket_width(steps: pd.DataFrame) -> float:
    """The bucket width of a bucketed file: the smallest gap between a framework's bucket starts
    (NaN if no framework has two buckets)."""
    gaps = [np.diff(rows["time"].to_numpy()) for _, rows in steps.groupby("framework")]
    positive = np.concatenate([g[g > 0] for g in gaps]) if gaps else np.array([])
    return float(positive.min()) if len(positive) else float("nan")


def make_plots(target: Path, out: Path | None = None, ttft_ms: float = 500.0, tpot_ms: float = 50.0) -> list[Path]:
    """Every chart that fits ``target`` (a sweep dir or a run dir); returns the PNG paths."""
    out = out or (target / "plots")
    out.mkdir(parents=True, exist_ok=True)
    if (target / "steps.parquet").exists() and (target / "summary.json").exists():
        return [plot_run_timeline(target, out)]
    results = load_results(target)
    if results.frame.empty:
        raise LLMSimError(f"{target}: no finished runs to plot")
    paths = [plot_latency_vs_throughput(results, out)]
    goodput = plot_goodput(results, out, ttft_ms, tpot_ms)
    if goodput is not None:
        paths.append(goodput)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m llmsim.plot DIR``: charts of a sweep (latency vs throughput, goodput) or of one run."""
    parser = argparse.ArgumentParser(prog="python -m llmsim.plot", description=main.__doc__)
    parser.add_argument("target", type=Path, help="sweep directory or run directory")
    parser.add_argument("--out", type=Path, help="where to write the PNGs (default: DIR/plots)")
    parser.add_argument("--slo-ttft-ms", type=float, default=500.0, help="TTFT SLO for goodput (default 500)")
    parser.add_argument("--slo-tpot-ms", type=float, default=50.0, help="TPOT SLO for goodput (default 50)")
    args = parser.parse_args(argv)
    try:
        paths = make_plots(args.target, args.out, args.slo_ttft_ms, args.slo_tpot_ms)
    except LLMSimError as exc:
        print(f"llmsim: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
