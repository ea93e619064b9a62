"""Side-by-side comparison of two result tables, joined on the swept parameters."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from llmsim.errors import LLMSimError
from llmsim.sweep.tables import ResultTable, load_results

DEFAULT_METRICS = (
    "request_throughput",
    "output_throughput",
    "mean_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "mean_e2el_ms",
)


def compare_tables(a: ResultTable, b: ResultTable, metrics: list[str] | None = None) -> pd.DataFrame:
    """Long table: one row per (configuration, metric) with A, B, delta and relative delta (%).

    Rows are matched on the swept parameters both tables share plus the framework name; when
    neither table has swept parameters and each has one framework, the two are compared directly.
    """
    metrics = list(metrics or [m for m in DEFAULT_METRICS if m in a.frame and m in b.frame])
    missing = [m for m in metrics if m not in a.frame or m not in b.frame]
    if missing:
        raise LLMSimError(f"--metrics: {', '.join(missing)} not in both tables")
    left, right = _ok_rows(a.frame), _ok_rows(b.frame)
    # A parameter fixed at different values in A and B is what is being compared, not a join key.
    keys = [k for k in a.keys if k in b.keys and not _fixed_apart(left[k], right[k])]
    if "framework" in left and "framework" in right and set(left["framework"]) & set(right["framework"]):
        keys.append("framework")
    if not keys:
        if len(left) != 1 or len(right) != 1:
            raise LLMSimError("the tables share no swept parameter or framework name to match rows on")
        left, right = left.assign(_row=0), right.assign(_row=0)
        keys = ["_row"]
    for name, side in (("A", left), ("B", right)):
        if side.duplicated(keys).any():
            raise LLMSimError(f"rows of {name} are not unique on {', '.join(keys)}: compare tables of like sweeps")
    merged = left[[*keys, *metrics]].merge(right[[*keys, *metrics]], on=keys, suffixes=(" A", " B"))
    if merged.empty:
        raise LLMSimError(f"no configuration of A matches one of B on {', '.join(keys)}")
    rows = []
    for _, row in merged.iterrows():
        for metric in metrics:
            va, vb = float(row[f"{metric} A"]), float(row[f"{metric} B"])
            delta = vb - va
            rel = delta / va * 100.0 if va else (0.0 if delta == 0 else np.inf)
            rows.append(
                {
                    **{k: row[k] for k in keys if k != "_row"},
                    "metric": metric,
                    "A": va,
                    "B": vb,
                    "delta": delta,
                    "delta_pct": rel,
                }
            )
    return pd.DataFrame(rows)


def identical(result: pd.DataFrame) -> bool:
    """Every compared value of A equals B's (NaN equal to NaN)."""
    a, b = result["A"].to_numpy(dtype=float), result["B"].to_numpy(dtype=float)
    return bool(len(result)) and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _fixed_apart(left: pd.Series, right: pd.Series) -> bool:
    return left.nunique() == 1 and right.nunique() == 1 and left.iloc[0] != right.iloc[0]


def _ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def render(result: pd.DataFrame, fmt: str, a: Path, b: Path) -> str | None:
    """CSV or Markdown text, or None after printing a rich table."""
    if fmt == "csv":
        return result.to_csv(index=False)
    if fmt == "markdown":
        header = "| " + " | ".join(result.columns) + " |\n|" + "---|" * len(result.columns) + "\n"
        body = "".join("| " + " | ".join(_cell(v) for v in row) + " |\n" for row in result.itertuples(index=False))
        return header + body
    value_columns = ["metric", "A", "B", "delta", "delta_pct"]
    keys = [c for c in result.columns if c not in value_columns]
    varying = [k for k in keys if result[k].nunique() > 1]
    fixed = {k: result[k].iloc[0] for k in keys if k not in varying} if len(result) else {}
    title = f"A = {a}\nB = {b}"
    if fixed:
        title += "\n" + " ".join(f"{k}={v}" for k, v in fixed.items())
    table = Table(title=title, title_justify="left")
    table.add_column("configuration")
    for column in value_columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for _, row in result.iterrows():
        config = " ".join(f"{k}={row[k]}" for k in varying) or "-"
        table.add_row(
            config,
            row["metric"],
            _cell(row["A"]),
            _cell(row["B"]),
            _cell(row["delta"]),
            _cell(row["delta_pct"], pct=True),
        )
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    console.print(table)
    return None


def _cell(value: object, pct: bool = False) -> str:
    if isinstance(value, float):
        if pct:
            return f"{value:+.1f}%"
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmsim.compare A B``: key metrics of two runs, sweeps or tables side by side."""
    parser = argparse.ArgumentParser(prog="python -m llmsim.compare", description=main.__doc__)
    parser.add_argument("a", type=Path, help="run dir, sweep dir or .parquet table (baseline)")
    parser.add_argument("b", type=Path, help="run dir, sweep dir or .parquet table (candidate)")
    parser.add_argument("--metrics", help=f"comma-separated metric names (default: {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    parser.add_argument("--out", type=Path, help="write the CSV/Markdown output to this file")
    args = parser.parse_args(argv)
    try:
        result = compare_tables(
            load_results(args.a), load_results(args.b), args.metrics.split(",") if args.metrics else None
        )
    except LLMSimError as exc:
        print(f"llmsim: error: {exc}", file=sys.stderr)
        return 2
    if args.format == "table" and not args.out and identical(result):
        configurations = len(result) // max(result["metric"].nunique(), 1)
        print(
            f"identical: A and B agree on all {result['metric'].nunique()} metrics of {configurations} configuration(s)"
        )
        return 0
    text = render(result, args.format if not (args.out and args.format == "table") else "csv", args.a, args.b)
    if text is not None:
        if args.out:
            from llmsim.outputs import write_text

            write_text(args.out, text)
        else:
            sys.stdout.write(text)
    return 0
