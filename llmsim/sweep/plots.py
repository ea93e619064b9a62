"""PNG charts of sweeps and single runs (matplotlib, Agg backend: no display needed).

A sweep gets ``latency_vs_throughput.png`` (p50/p99 TTFT and TPOT against achieved output
throughput, one line per configuration, each point labelled with its offered load, the SLOs as
dashed lines) and, when a load axis was swept and SLOs are known, ``goodput_vs_load.png``. A run
directory gets ``run_timeline.png`` (:mod:`llmsim.sweep.timeline`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from llmsim.errors import LLMSimError
from llmsim.sweep.args import ArgumentParser, run_entry_point
from llmsim.sweep.figures import plain_log_axis, save_figure
from llmsim.sweep.labels import distinct_keys, labels, load_point_label
from llmsim.sweep.slos import configured_slos, recompute_goodput, run_choices, run_config, slo_text
from llmsim.sweep.tables import ResultTable, load_results
from llmsim.sweep.timeline import plot_run_timeline, timeline_table

__all__ = ["make_plots", "plot_goodput", "plot_latency_vs_throughput", "plot_run_timeline", "timeline_table"]

LOAD_KEYS = ("workload.rate", "workload.concurrency", "workload.num_requests")
LOAD_AXIS_TITLES = {
    "workload.rate": "offered rate (workload.rate, per second)",
    "workload.concurrency": "concurrency (workload.concurrency)",
    "workload.num_requests": "requests (workload.num_requests)",
}


def load_axis_title(frame: pd.DataFrame, load_key: str) -> str:
    """What the load axis counts: ``workload.rate`` is new sessions/s where follow-up turns add
    requests (the runs' offered request rate exceeds their session rate), else requests/s."""
    if load_key != "workload.rate":
        return LOAD_AXIS_TITLES[load_key]
    if {"offered_session_rate", "offered_request_rate"} <= set(frame.columns):
        sessions = pd.to_numeric(frame["offered_session_rate"], errors="coerce")
        requests = pd.to_numeric(frame["offered_request_rate"], errors="coerce")
        if (requests > sessions * 1.001).any():
            return "offered rate (workload.rate: new conversations/s; follow-up turns add requests)"
        if requests.notna().any():
            return "offered rate (workload.rate, requests/s)"
    return LOAD_AXIS_TITLES[load_key]


LATENCY_PANELS = (
    ("median_ttft_ms", "TTFT p50", "ttft"),
    ("p99_ttft_ms", "TTFT p99", "ttft"),
    ("median_tpot_ms", "TPOT p50", "tpot"),
    ("p99_tpot_ms", "TPOT p99", "tpot"),
)
SLO_STYLE = {"color": "crimson", "ls": "--", "lw": 1.1}
#: one marker and dash per configuration, so lines on top of each other stay visible
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")


def line_style(index: int) -> dict[str, Any]:
    """The marker, dash and transparency of the ``index``-th configuration's line."""
    return {
        "marker": MARKERS[index % len(MARKERS)],
        "ls": DASHES[(index // len(MARKERS)) % len(DASHES)],
        "alpha": 0.85,
        "markersize": 6 if index % len(MARKERS) else 6.5,
    }


def _load_key(frame: pd.DataFrame, keys: list[str]) -> str | None:
    """The swept load axis (offered rate, concurrency or request count): the first that takes several values."""
    return next((k for k in LOAD_KEYS if k in keys and k in frame and frame[k].nunique() > 1), None)


def configurations(frame: pd.DataFrame, keys: list[str], load_key: str | None) -> dict[str, pd.DataFrame]:
    """Rows grouped by everything that varies except the load axis (one line per configuration),
    labelled as a reader writes them (``vllm TP=2``)."""
    group_keys = [k for k in distinct_keys(frame, keys) if k != load_key]
    if not group_keys:
        return {"": frame}
    groups = {}
    for values, rows in frame.groupby(group_keys, sort=True, dropna=False):
        groups[labels(group_keys, values if isinstance(values, tuple) else (values,))] = rows
    return groups


def sweep_name(source: Path) -> str:
    """``2026-12-04/02-41-00`` for a dated sweep directory, else its name."""
    source = source.resolve()
    name = source.stem if source.is_file() else source.name
    if name[:1].isdigit() and source.parent.name[:1].isdigit():
        return f"{source.parent.name}/{name}"
    return name


def context(results: ResultTable) -> str:
    """What every run shares (model, GPU, framework, workload), from the runs' config, less what was swept."""
    config = run_config(results)
    choices = run_choices(results)
    swept = {k.split(".", 1)[0].removesuffix("_choice") for k in distinct_keys(results.frame, results.keys)}
    parts = []
    for group, text in (
        ("model", lambda c: c.get("name")),
        ("hardware", lambda c: c.get("name")),
        ("framework", lambda c: f"{c.get('name')} TP={c.get('tensor_parallel_size')}"),
        ("workload", lambda c: f"{choices.get('workload') or c.get('kind')} workload"),
    ):
        section = config.get(group)
        if group not in swept and isinstance(section, dict) and not (group == "framework" and "frameworks" in config):
            parts.append(str(text(section)))
    return ", ".join(parts)


def _title(kind: str, results: ResultTable) -> str:
    shared = context(results)
    return f"{kind} — {sweep_name(results.source)}" + (f"\n{shared}" if shared else "")


def _label_points(ax: Any, x: pd.Series, y: pd.Series, loads: pd.Series | None, key: str | None, color: str) -> None:
    if loads is None or key is None:
        return
    for xi, yi, load in zip(x, y, loads, strict=True):
        if pd.notna(xi) and pd.notna(yi):
            ax.annotate(
                load_point_label(key, load),
                (xi, yi),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=color,
            )


def _slo_line(ax: Any, limit: float) -> None:
    ax.axhline(limit, **SLO_STYLE, label=f"SLO {limit:g} ms")


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend under the panels for the configurations, the SLO line named in each panel's own."""
    handles, names = [], []
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name.startswith("SLO "):
                continue
            if name not in names:
                handles.append(handle)
                names.append(name)
        slo = [(h, n) for h, n in zip(*ax.get_legend_handles_labels(), strict=True) if n.startswith("SLO ")]
        if slo:
            ax.legend(*zip(*slo, strict=True), fontsize="small", loc="upper left")
    if names and names != [""]:
        fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize="small")


def plot_latency_vs_throughput(results: ResultTable, out: Path, slos: dict[str, float] | None = None) -> Path:
    """p50/p99 TTFT and TPOT against achieved output throughput, one line per configuration."""
    slos = slos or {}
    frame = _ok(results.frame)
    load_key = _load_key(frame, results.keys)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True, layout="constrained")
    for index, (label, rows) in enumerate(configurations(frame, results.keys, load_key).items()):
        rows = rows.sort_values(load_key) if load_key else rows.sort_values("output_throughput")
        for ax, (column, _, _) in zip(axes.flat, LATENCY_PANELS, strict=True):
            if column not in rows:
                continue
            x, y = rows["output_throughput"], rows[column]
            (line,) = ax.plot(x, y, **line_style(index), label=label or "runs")
            loads = rows[load_key] if load_key else None
            _label_points(ax, rows["output_throughput"], rows[column], loads, load_key, line.get_color())
    for ax, (column, title, slo) in zip(axes.flat, LATENCY_PANELS, strict=True):
        if slo in slos:
            _slo_line(ax, slos[slo])
        ax.set_title(title)
        ax.set_ylabel("ms")
        values = frame[column].dropna() if column in frame else pd.Series(dtype=float)
        limits = [*values, *([slos[slo]] if slo in slos else [])]
        if len(values) and (values > 0).all() and max(limits) / min(limits) > 3:  # log only where it helps
            ax.set_yscale("log")
            low, high = min(limits), max(limits)
            room = max(1.15, (high / low) ** 0.08)  # room for the points and their labels
            ax.set_ylim(low / room, high * room)
            plain_log_axis(ax)
        else:
            ax.set_ylim(0, max(limits, default=1.0) * 1.12 or 1.0)
        ax.set_xlim(0, float(frame["output_throughput"].max()) * 1.1 or 1.0)
        ax.grid(True, alpha=0.3)
        ax.grid(True, which="minor", alpha=0.1)
    for ax in axes[1]:
        ax.set_xlabel("achieved output throughput (tokens/s)")
    _figure_legend(fig, axes.flat)
    note = f"; points labelled with {load_axis_title(frame, load_key)}" if load_key else ""
    fig.suptitle(_title("Latency against throughput", results) + note, fontsize="medium")
    path = out / "latency_vs_throughput.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def goodput_table(results: ResultTable, slos: dict[str, float], recompute: bool) -> pd.DataFrame:
    """The ok rows with ``request_goodput`` and ``slo_attainment`` for ``slos``: as the runs computed them
    (their configured SLOs), or recomputed from the requests tables (SLOs given on the command line)."""
    frame = results.frame
    if recompute or "request_goodput" not in frame or "slo_attainment" not in frame:
        frame = recompute_goodput(results, slos)
    return _ok(frame)


def plot_goodput(results: ResultTable, out: Path, slos: dict[str, float], recompute: bool = False) -> Path | None:
    """Goodput and SLO attainment against offered load (None when no load axis was swept or no SLO is set)."""
    load_key = _load_key(_ok(results.frame), results.keys)
    if load_key is None or not slos:
        return None
    frame = goodput_table(results, slos, recompute)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for index, (label, rows) in enumerate(configurations(frame, results.keys, load_key).items()):
        rows = rows.sort_values(load_key)
        left.plot(rows[load_key], rows["request_goodput"], **line_style(index), label=label or "runs")
        right.plot(rows[load_key], rows["slo_attainment"] * 100, **line_style(index), label=label or "runs")
    left.set_title("Goodput")
    left.set_ylabel("good requests/s")
    right.set_title("SLO attainment")
    right.set_ylabel("% of completed requests meeting every SLO")
    right.set_ylim(0, 105)
    left.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xlabel(load_axis_title(frame, load_key))
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
    _figure_legend(fig, (left, right))
    source = "recomputed from the requests" if recompute else "as the runs computed them"
    fig.suptitle(_title(f"Goodput against load, SLOs {slo_text(slos)} ({source})", results), fontsize="medium")
    path = out / "goodput_vs_load.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def make_plots(
    target: Path,
    out: Path | None = None,
    slo_overrides: dict[str, float] | None = None,
    notes: list[str] | None = None,
) -> list[Path]:
    """Every chart that fits ``target`` (a sweep dir, a runs table or a run dir); returns the PNG paths.

    SLOs come from the runs' own config; ``slo_overrides`` (``{"ttft": 300}``) replace them. Why a
    chart was not drawn is appended to ``notes``.
    """
    target = Path(target)
    if target.is_dir() and (target / "steps.parquet").exists() and (target / "summary.json").exists():
        out = out or (target / "plots")
        out.mkdir(parents=True, exist_ok=True)
        return [plot_run_timeline(target, out)]
    results = load_results(target)
    if results.frame.empty or _ok(results.frame).empty:
        raise LLMSimError(f"{target}: no finished runs to plot")
    out = out or ((target if target.is_dir() else target.parent) / "plots")
    out.mkdir(parents=True, exist_ok=True)
    slos = {**configured_slos(results), **(slo_overrides or {})}
    paths = [plot_latency_vs_throughput(results, out, slos)]
    goodput = plot_goodput(results, out, slos, recompute=bool(slo_overrides))
    if goodput is not None:
        paths.append(goodput)
    elif notes is not None and _load_key(_ok(results.frame), results.keys):
        notes.append(
            "goodput_vs_load.png not drawn: no SLO set (metrics.slo_ttft_ms=... metrics.slo_tpot_ms=... in the "
            "sweep, or --slo-ttft-ms/--slo-tpot-ms here)"
        )
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m llmsim.plot DIR``: charts of a sweep (latency vs throughput, goodput) or of one run."""
    parser = ArgumentParser(prog="python -m llmsim.plot", description=main.__doc__)
    parser.add_argument("target", type=Path, help="sweep directory, runs .parquet table or run directory")
    parser.add_argument("--out", type=Path, help="where to write the PNGs (default: DIR/plots)")
    for name in ("ttft", "tpot", "e2el"):
        parser.add_argument(
            f"--slo-{name}-ms",
            type=float,
            metavar="MS",
            help=f"{name.upper()} SLO for goodput, replacing the sweep's metrics.slo_{name}_ms",
        )
    args = parser.parse_args(argv)
    overrides = {name: getattr(args, f"slo_{name}_ms") for name in ("ttft", "tpot", "e2el")}
    for name, value in overrides.items():
        if value is not None and not value > 0:
            parser.error(f"--slo-{name}-ms={value:g} is not valid: a positive number of milliseconds")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out={args.out} is not valid: a directory for the PNGs (that is a file)")
    notes: list[str] = []

    def plot() -> int:
        paths = make_plots(args.target, args.out, {k: v for k, v in overrides.items() if v is not None}, notes)
        for path in paths:
            print(path)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return 0

    return run_entry_point(plot, args.target)
