"""Side-by-side comparison: two result tables joined on the swept parameters (``compare A B``), or the
values of one key within a run or sweep (``compare DIR --by framework``)."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from llmsim.errors import LLMSimError
from llmsim.sweep.aggregate import RUN_COLUMNS
from llmsim.sweep.args import ArgumentParser, run_entry_point
from llmsim.sweep.differences import MAX_SHOWN, describe_side, differences
from llmsim.sweep.labels import distinct_keys, key_name, label
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
FORMATS = ("table", "csv", "markdown")


def _metrics(frames: list[pd.DataFrame], metrics: list[str] | None) -> list[str]:
    """The metrics to compare: those asked for (each must be a numeric column of every table), or the defaults."""
    if not metrics:
        chosen = [m for m in DEFAULT_METRICS if all(m in f for f in frames)]
        if not chosen:
            raise LLMSimError("the tables share none of the default metrics: name them with --metrics")
        return chosen
    not_metrics = {*RUN_COLUMNS, *(k for f in frames for k in f.columns if "." in k or k.endswith("_choice"))}
    known = [
        c
        for c in frames[0].columns
        if c not in not_metrics and all(c in f for f in frames) and pd.api.types.is_numeric_dtype(frames[0][c])
    ]
    for metric in metrics:
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise LLMSimError(f"--metrics={metric} is not valid: {hint}metrics: {', '.join(known)}")
    return metrics


def compare_tables(a: ResultTable, b: ResultTable, metrics: list[str] | None = None) -> pd.DataFrame:
    """Long table: one row per (configuration, metric) with A, B, delta and relative delta (%).

    Rows are matched on the swept parameters both tables share plus the framework name; when
    neither table has swept parameters and each has one framework, the two are compared directly.
    """
    left, right = _ok_rows(a.frame), _ok_rows(b.frame)
    metrics = _metrics([left, right], metrics)
    # A parameter fixed at different values in A and B is what is being compared, not a join key.
    keys = [k for k in a.keys if k in b.keys and k in left and k in right and not _fixed_apart(left[k], right[k])]
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
            rows.append(
                {**{k: row[k] for k in keys if k != "_row"}, "metric": metric, "A": va, "B": vb, **_delta(va, vb)}
            )
    return pd.DataFrame(rows)


def _delta(base: float, other: float) -> dict[str, float]:
    delta = other - base
    rel = delta / base * 100.0 if base else (0.0 if delta == 0 else np.inf)
    return {"delta": delta, "delta_pct": rel}


def resolve_key(results: ResultTable, key: str) -> str:
    """The column ``--by KEY`` names: a swept key, ``framework``, a config group (``hardware``) or a key's
    last part (``tensor_parallel_size``, ``rate``)."""
    frame = results.frame
    candidates = [*results.keys, *(["framework"] if "framework" in frame else [])]
    for column in (key, f"{key}_choice"):
        if column in candidates and column in frame:
            return column
    by_last = [c for c in candidates if c.rsplit(".", 1)[-1] == key and c in frame]
    if len(by_last) == 1:
        return by_last[0]
    shown = ", ".join(dict.fromkeys(candidates)) or "none (nothing was swept)"
    close = difflib.get_close_matches(key, candidates, n=2)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise LLMSimError(f"--by={key} is not valid: {hint}keys of {results.source}: {shown}")


def compare_by(
    results: ResultTable, key: str, metrics: list[str] | None = None, baseline: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """One row per (configuration, metric) with a column per value of ``key`` and, for every value after
    the baseline (the first value in order, or ``baseline``), its change in % (``trtllm vs vllm``); also
    returns the value columns."""
    column = resolve_key(results, key)
    frame = _ok_rows(results.frame)
    metrics = _metrics([frame], metrics)
    values = sorted(frame[column].dropna().unique(), key=_order)
    if baseline is not None:
        chosen = [v for v in values if str(v) == baseline or label(column, v) == baseline]
        if not chosen:
            shown = ", ".join(str(v) for v in values)
            raise LLMSimError(f"--baseline={baseline} is not valid: values of {column}: {shown}")
        values = [chosen[0], *[v for v in values if v != chosen[0]]]
    if len(values) < 2:
        raise LLMSimError(
            f"--by={key} is not valid: {column} takes one value in {results.source}, nothing to put beside it"
        )
    others = [k for k in distinct_keys(frame, results.keys) if k != column and not _same_as(frame, k, column)]
    if frame.duplicated([*others, column]).any():
        raise LLMSimError(f"rows are not unique on {', '.join([*others, column])}: cannot line them up by {column}")
    names = [label(column, v) for v in values]
    rows = []
    groups = frame.groupby(others, sort=True, dropna=False) if others else [((), frame)]
    for config, group in groups:
        config = config if isinstance(config, tuple) else (config,)
        by_value = group.set_index(column)
        for metric in metrics:
            measured = {name: float(by_value[metric].get(v, np.nan)) for v, name in zip(values, names, strict=True)}
            changes = {
                f"{n} vs {names[0]} (%)": _delta(measured[names[0]], measured[n])["delta_pct"] for n in names[1:]
            }
            rows.append({**dict(zip(others, config, strict=True)), "metric": metric, **measured, **changes})
    return pd.DataFrame(rows), names


def _order(value: Any) -> tuple[int, float | str]:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def _same_as(frame: pd.DataFrame, key: str, column: str) -> bool:
    """``framework_choice`` when lining up by ``framework`` (and the reverse): the same thing twice."""
    pair = {key.removesuffix("_choice"), column.removesuffix("_choice")}
    return len(pair) == 1 and (frame[key].astype(str) == frame[column].astype(str)).all()


def identical(result: pd.DataFrame) -> bool:
    """Every compared value of A equals B's (NaN equal to NaN)."""
    a, b = result["A"].to_numpy(dtype=float), result["B"].to_numpy(dtype=float)
    return bool(len(result)) and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _fixed_apart(left: pd.Series, right: pd.Series) -> bool:
    return left.nunique() == 1 and right.nunique() == 1 and left.iloc[0] != right.iloc[0]


def _ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def to_text(result: pd.DataFrame, fmt: str) -> str:
    """CSV or Markdown text of a comparison."""
    if fmt == "csv":
        return result.to_csv(index=False)
    header = "| " + " | ".join(result.columns) + " |\n|" + "---|" * len(result.columns) + "\n"
    body = "".join("| " + " | ".join(_cell(v) for v in row) + " |\n" for row in result.itertuples(index=False))
    return header + body


def print_table(result: pd.DataFrame, title: str, value_columns: list[str], pct_columns: list[str]) -> None:
    """A rich table: the configuration (what varies), the metric, the values and their changes."""
    keys = [c for c in result.columns if c not in {"metric", *value_columns, *pct_columns}]
    keys = [
        k for k in keys if not any(_same_as(result, k, other) for other in keys if other != k and k.endswith("_choice"))
    ]
    varying = [k for k in keys if result[k].nunique() > 1]
    fixed = [label(k, result[k].iloc[0]) for k in keys if k not in varying] if len(result) else []
    if fixed:
        title += "\nall rows: " + " ".join(fixed)
    table = Table()
    if varying:
        table.add_column("configuration")
    table.add_column("metric")
    for column in [*value_columns, *pct_columns]:
        table.add_column(column, justify="right")
    for _, row in result.iterrows():
        cells = [" ".join(label(k, row[k]) for k in varying)] if varying else []
        cells.append(str(row["metric"]))
        cells += [_cell(row[c]) for c in value_columns] + [_cell(row[c], pct=True) for c in pct_columns]
        table.add_row(*cells)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    console.print(Text(title), soft_wrap=True)  # paths and differences are not wrapped to the table's width
    console.print(table)


def _cell(value: object, pct: bool = False) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if pct:
            return f"{value:+.1f}%"
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def _ab_title(a: ResultTable, b: ResultTable, result: pd.DataFrame) -> tuple[str, list[str]]:
    """The table's title (A and B with what tells them apart) and the headers of the A and B columns."""
    differs = differences(a, b)
    title = f"A = {a.source}{describe_side(differs, 0)}\nB = {b.source}{describe_side(differs, 1)}"
    short = [" ".join(label(k, v[i]) for k, v in list(differs.items())[:2]) for i in (0, 1)]
    headers = [f"{side}: {text}" if text else side for side, text in zip(("A", "B"), short, strict=True)]
    if not differs:
        title += "\n(no configuration key differs between A and B)"
    return title, headers


def main(argv: list[str] | None = None) -> int:
    """``python -m llmsim.compare A B`` (two runs, sweeps or tables side by side) or
    ``python -m llmsim.compare DIR --by KEY`` (the values of KEY in one run or sweep side by side)."""
    parser = ArgumentParser(prog="python -m llmsim.compare", description=main.__doc__)
    parser.add_argument("a", type=Path, help="run dir, sweep dir or .parquet table (baseline)")
    parser.add_argument("b", type=Path, nargs="?", help="run dir, sweep dir or .parquet table (candidate)")
    parser.add_argument("--by", help="put the values of this key side by side: framework, a swept key, ...")
    parser.add_argument("--baseline", help="with --by: the value the others are measured against (default: the first)")
    parser.add_argument("--metrics", help=f"comma-separated metric names (default: {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--out", type=Path, help="write the CSV/Markdown output to this file")
    args = parser.parse_args(argv)
    if args.b is None and not args.by:
        parser.error("give two results to compare (A B), or one with --by KEY")
    if args.baseline is not None and not args.by:
        parser.error("--baseline goes with --by KEY")
    if args.b is not None and args.by:
        parser.error("--by lines up the values of a key within one run or sweep: give one of them, not two")
    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else None
    fmt = "csv" if args.out and args.format == "table" else args.format
    paths = [args.a] if args.b is None else [args.a, args.b]
    return run_entry_point(lambda: _run(args, metrics, fmt), *paths)


def _run(args: argparse.Namespace, metrics: list[str] | None, fmt: str) -> int:
    a = load_results(args.a)
    if args.by:
        result, names = compare_by(a, args.by, metrics, args.baseline)
        pct = [c for c in result.columns if c.endswith(f" vs {names[0]} (%)")]
        column = resolve_key(a, args.by)
        title = f"{a.source}: by {key_name(column)} ({', '.join(names)}; changes against {names[0]})"
        return _emit(result, fmt, args.out, lambda: print_table(result, title, names, pct))
    b = load_results(args.b)
    result = compare_tables(a, b, metrics)
    if fmt == "table" and identical(result):
        configurations = len(result) // max(result["metric"].nunique(), 1)
        differs = differences(a, b)
        apart = "; ".join(f"{key_name(k)}: {v[0]} vs {v[1]}" for k, v in list(differs.items())[:MAX_SHOWN])
        print(
            f"identical: A and B agree on all {result['metric'].nunique()} metrics of {configurations} configuration(s)"
            + (f" matched on {', '.join(_join_keys(result))} (their setups differ in {apart})" if differs else "")
        )
        return 0
    title, headers = _ab_title(a, b, result)
    shown = result.rename(columns={"A": headers[0], "B": headers[1]})
    return _emit(result, fmt, args.out, lambda: print_table(shown, title, [*headers, "delta"], ["delta_pct"]))


def _join_keys(result: pd.DataFrame) -> list[str]:
    return [c for c in result.columns if c not in ("metric", "A", "B", "delta", "delta_pct")]


def _emit(result: pd.DataFrame, fmt: str, out: Path | None, table: Callable[[], None]) -> int:
    if fmt == "table":
        table()
        return 0
    text = to_text(result, fmt)
    if out:
        from llmsim.outputs import write_text

        write_text(out, text)
    else:
        sys.stdout.write(text)
    return 0
