"""Sweep tables: ``runs.parquet`` (one row per run and framework) and ``requests.parquet``.

Built from whatever job directories of a sweep exist, so an interrupted or partly failed sweep still
gives its tables. Only the jobs that belong to the sweep count: the combinations its
``multirun.yaml`` describes (stale directories from an earlier, larger sweep into the same folder are
ignored). Corrupt or partial job directories are reported and skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from llmsim.outputs import atomic_write
from llmsim.runinfo import output_path, read_job_failure, read_run_info

log = logging.getLogger(__name__)

RUNS_TABLE = "runs.parquet"
REQUESTS_TABLE = "requests.parquet"
RUN_COLUMNS = ("run", "framework", "status", "error", "seed", "config_hash", "wall_time_s")
#: suffix of a swept key's column when the key is also the name of a result column
CHOICE_SUFFIX = "_choice"


def key_column(key: str) -> str:
    """The runs-table column of a swept key: the key itself (``workload.rate``, ``model``), except a key
    named like a result column: ``framework=trtllm`` (the config group) goes in ``framework_choice``, as
    ``framework`` names the framework each row measured (a run of ``experiment=compare_frameworks``
    measures several). ``seed`` is the run's seed either way and keeps its name.
    """
    return f"{key}{CHOICE_SUFFIX}" if key in RUN_COLUMNS and key != "seed" else key


def swept_keys(overrides: list[str]) -> dict[str, Any]:
    """A job's overrides as ``{column: typed value}`` (columns named by :func:`key_column`)."""
    return {key_column(key): value for key, value in (parse_override(o) for o in overrides)}


@dataclass
class SweepTables:
    """What aggregation produced: the tables, the job directories read and those skipped."""

    runs: pd.DataFrame
    jobs: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    override_keys: list[str] = field(default_factory=list)
    #: jobs multirun.yaml lists that have no directory yet (an interrupted sweep), as their overrides
    never_started: list[str] = field(default_factory=list)

    @property
    def failed(self) -> pd.DataFrame:
        """Rows of runs that failed."""
        return self.runs[self.runs["status"] != "ok"] if len(self.runs) else self.runs


def parse_override(text: str) -> tuple[str, Any]:
    """``workload.rate=5`` -> (``workload.rate``, 5) with Hydra's own typing of the value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_overrides([text])[0]
    key = override.get_key_element().lstrip("+~")
    try:
        value = override.value()
    except Exception:
        value = override.get_value_element_as_str()
    return key, value


def expected_combinations(sweep_dir: Path) -> list[frozenset[str]] | None:
    """Override sets of every job the sweep launches, from its ``multirun.yaml`` (None if absent)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    try:
        config = yaml.safe_load(path.read_text()) or {}
        hydra_cfg = config.get("hydra", {})
        task = list(hydra_cfg.get("overrides", {}).get("task", []))
        params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()] + task
        parsed = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as exc:  # half-written or edited by hand: take every job directory there is
        log.warning("cannot read %s (%s): aggregating every job directory", path, " ".join(str(exc).split()))
        return None
    return [frozenset(job) for batch in batches for job in batch]


def read_overrides(path: Path) -> list[str] | None:
    """A job's ``.hydra/overrides.yaml`` as a list of override strings (None if unreadable)."""
    try:
        overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
        return None
    return overrides


def job_dirs(sweep_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Job directories that belong to the sweep (and those skipped, with why)."""
    combos = expected_combinations(sweep_dir)
    wanted = set(combos) if combos is not None else None
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        overrides_file = path / ".hydra" / "overrides.yaml"
        if not overrides_file.exists():
            if (path / ".hydra").exists() or (path / "run.json").exists():
                skipped.append((path, "no .hydra/overrides.yaml"))
            continue
        listed = read_overrides(path)
        if listed is None:
            skipped.append((path, "unreadable .hydra/overrides.yaml"))
            continue
        overrides = frozenset(listed)
        if wanted is not None and overrides not in wanted:
            continue  # a job of another sweep into the same directory
        found.append(path)
    return found, skipped


def _job_rows(path: Path, keys: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    info = read_run_info(path)
    failure = read_job_failure(path)
    if failure is not None:  # its last attempt could not write into its own directory
        stale = info if isinstance(info, dict) else {}
        row = {**keys, "run": path.name, "framework": stale.get("framework", ""), "status": "failed"}
        row.update(error=str(failure.get("error")), seed=stale.get("seed"), config_hash=stale.get("config_hash"))
        return [{**row, "wall_time_s": None}], None
    if not isinstance(info, dict):
        return [], "missing or corrupt run.json"
    if info.get("status") == "running":
        return [], "interrupted: run.json still says running (re-run the sweep into this directory to finish it)"
    base = {
        **keys,
        "run": path.name,
        "status": "ok" if info.get("status") == "ok" else "failed",
        "error": info.get("error") or ("" if info.get("status") == "ok" else f"run status: {info.get('status')}"),
        "seed": info.get("seed"),
        "config_hash": info.get("config_hash"),
        "wall_time_s": info.get("wall_time_s"),
    }
    if base["status"] != "ok":
        return [{**base, "framework": info.get("framework", "")}], None
    summary_path = output_path(path, info, "summary", "summary.json")
    if summary_path is None:
        error = "no summary written (metrics.output_summary_json_path is null)"
        return [{**base, "status": "failed", "error": error, "framework": ""}], None
    try:
        summary = json.loads(summary_path.read_text())
        frameworks = summary["frameworks"]
        rows = [{**base, "framework": str(name), **dict(metrics)} for name, metrics in frameworks.items()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        error = f"{summary_path.name} missing or corrupt"
        return [{**base, "status": "failed", "error": error, "framework": ""}], None
    for row in rows:  # a framework that stopped during the run (the others' results stand)
        if row.get("error"):
            row["status"] = "failed"
    return rows, None


#: runs-table columns that hold text whatever they contain
TEXT_COLUMNS = ("run", "framework", "status", "error", "config_hash")


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number or a string that reads as one (``"NaN"``, ``"1.5"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _one_type_per_column(runs: pd.DataFrame, override_keys: list[str]) -> pd.DataFrame:
    """One value type per column, decided column by column, so Parquet can hold them.

    A result column mixing numbers and text (a summary edited by hand to say ``"NaN"``) stays numeric:
    text that reads as a number becomes that number, other text becomes NaN (logged with its run);
    only that column is touched. A swept key mixing types (``workload.rate=abc,5``) becomes text.
    """

    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and value != value)

    for column in runs.columns:
        if runs[column].dtype != object:
            continue
        values = [value for value in runs[column] if not missing(value)]
        kinds = {type(value) for value in values}
        if len(kinds) <= 1:
            continue
        numeric = any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if column not in override_keys and column not in TEXT_COLUMNS and numeric:
            converted = [None if missing(value) else _number(value) for value in runs[column]]
            for run, value, number in zip(runs["run"], runs[column], converted, strict=True):
                if number is None and not missing(value):
                    log.warning("%s: %s=%r is not a number; read as NaN", run, column, value)
            runs[column] = pd.to_numeric(pd.Series(converted, index=runs.index, dtype=object), errors="coerce")
        else:
            runs[column] = [None if missing(value) else str(value) for value in runs[column]]
    return runs


def _sorted_runs(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Order rows by the swept values (numbers numerically), then run and framework names."""
    order = []
    for key in keys:
        column = runs[key]
        numeric = pd.to_numeric(column, errors="coerce")
        order.append(numeric if numeric.notna().all() else column.astype(str))
    frame = pd.DataFrame({f"_k{i}": col for i, col in enumerate(order)})
    frame["_run"], frame["_fw"] = runs["run"], runs["framework"].astype(str)
    index = frame.sort_values(list(frame.columns), kind="stable").index
    return runs.loc[index].reset_index(drop=True)


def aggregate(sweep_dir: str | Path, *, write: bool = True) -> SweepTables:
    """Build (and write) ``runs.parquet`` and ``requests.parquet`` of a sweep directory."""
    sweep_dir = Path(sweep_dir)
    jobs, skipped = job_dirs(sweep_dir)
    rows: list[dict[str, Any]] = []
    override_keys: list[str] = []
    used: list[Path] = []
    for path in jobs:
        try:
            keys = swept_keys(read_overrides(path) or [])
        except Exception as exc:  # an override Hydra cannot parse (edited by hand)
            skipped.append((path, f"unreadable .hydra/overrides.yaml: {' '.join(str(exc).split())}"))
            continue
        for key in keys:
            if key not in override_keys:
                override_keys.append(key)
        job_rows, problem = _job_rows(path, keys)
        if problem:
            skipped.append((path, problem))
            continue
        rows.extend(job_rows)
        used.append(path)
    runs = pd.DataFrame(rows)
    if len(runs):
        front = [k for k in override_keys if k in runs] + [c for c in RUN_COLUMNS if c in runs]
        runs = runs[front + [c for c in runs.columns if c not in front]]
        runs = _sorted_runs(runs, [k for k in override_keys if k in runs])
        runs = _one_type_per_column(runs, override_keys)
    for path, why in skipped:
        log.warning("skipped %s: %s", path, why)
    tables = SweepTables(runs, used, skipped, [k for k in override_keys if k in runs])
    tables.never_started = never_started(sweep_dir)
    if write:
        check_tables_are_ours(sweep_dir)
        atomic_write(sweep_dir / RUNS_TABLE, lambda tmp: write_runs_table(tmp, tables))
        _write_requests(sweep_dir, tables)
    return tables


#: schema metadata key that marks a Parquet file as a sweep table written by :func:`aggregate`
TABLE_META = b"llmsim.sweep_table"


def _table_kind(path: Path) -> str | None:
    """``runs``/``requests`` for a sweep table llmsim wrote, None for any other file."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    if TABLE_META in metadata:
        return metadata[TABLE_META].decode()
    return "runs" if OVERRIDE_KEYS_META in metadata else None  # a runs.parquet from before TABLE_META


def check_tables_are_ours(sweep_dir: Path) -> None:
    """Refuse to replace a ``runs.parquet``/``requests.parquet`` that aggregation did not write (one line).

    A single run's ``requests.parquet`` (or any file of that name) stays as it is; a link is never
    followed. A ``requests.parquet`` that begins with a ``run`` column beside a ``runs.parquet`` of
    ours is taken as ours too (tables written before they were marked).
    """
    from llmsim.errors import LLMSimError

    runs_ours = False
    for name, kind in ((RUNS_TABLE, "runs"), (REQUESTS_TABLE, "requests")):
        path = sweep_dir / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise LLMSimError(f"{path} is a link or a directory: aggregation writes its tables as plain files only")
        if not path.exists():
            continue
        found = _table_kind(path)
        if found == kind or (kind == "requests" and runs_ours and found is None and _starts_with_run(path)):
            runs_ours = runs_ours or kind == "runs"
            continue
        raise LLMSimError(
            f"{path} was not written by llmsim.aggregate: it is left as it is (move it away to aggregate {sweep_dir})"
        )


def _starts_with_run(path: Path) -> bool:
    """A Parquet file whose first column is ``run`` (how a sweep's requests table begins)."""
    try:
        return pq.read_schema(path).names[:1] == ["run"]
    except (OSError, pa.ArrowException):
        return False


def never_started(sweep_dir: Path) -> list[str]:
    """Jobs ``multirun.yaml`` lists that have no directory with their overrides (the sweep stopped first)."""
    combos = expected_combinations(sweep_dir)
    if combos is None:
        return []
    present = set()
    for path in sweep_dir.iterdir():
        if path.is_dir() and (listed := read_overrides(path)) is not None:
            present.add(frozenset(listed))
    return [",".join(sorted(combo)) for combo in combos if combo not in present]


OVERRIDE_KEYS_META = b"llmsim.override_keys"


def write_runs_table(path: Path, tables: SweepTables) -> None:
    """``runs.parquet`` with the swept keys recorded in its schema metadata."""
    table = pa.Table.from_pandas(tables.runs, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[OVERRIDE_KEYS_META] = json.dumps(tables.override_keys).encode()
    metadata[TABLE_META] = b"runs"
    pq.write_table(table.replace_schema_metadata(metadata), path)


def read_override_keys(path: Path) -> list[str] | None:
    """The swept keys recorded in a ``runs.parquet`` (None for other Parquet files)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(OVERRIDE_KEYS_META)
    return json.loads(raw) if raw else None


def _marked(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the mark of a sweep's requests table (see :func:`check_tables_are_ours`)."""
    return schema.with_metadata({**(schema.metadata or {}), TABLE_META: b"requests"})


def _write_requests(sweep_dir: Path, tables: SweepTables) -> None:
    """All per-request rows of ok runs, with the run's key columns in front (streamed, one run at a time)."""
    runs = tables.runs
    key_columns = ["run", *tables.override_keys]

    def write(tmp: Path) -> None:
        writer: pq.ParquetWriter | None = None
        try:
            for path in tables.jobs:
                if read_job_failure(path) is not None:
                    continue  # its last attempt failed: what its directory holds is from an earlier one
                request_file = output_path(path, read_run_info(path), "requests", "requests.parquet")
                if request_file is None or not request_file.exists():
                    continue
                keys = runs.loc[runs["run"] == path.name, key_columns].head(1)
                if keys.empty:
                    continue
                try:
                    frame = pd.read_parquet(request_file)
                    for column in reversed(key_columns):
                        frame.insert(0, column, keys.iloc[0][column])
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    if writer is not None:
                        table = table.cast(writer.schema)
                except Exception as exc:  # a corrupt or foreign requests.parquet: leave this run's rows out
                    problem = f"requests.parquet left out: {' '.join(str(exc).split())[:200]}"
                    tables.skipped.append((path, problem))
                    log.warning("skipped %s: %s", path, problem)
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(tmp, _marked(table.schema))
                writer.write_table(table)
            if writer is None:
                empty = pa.table({c: pa.array([], pa.string()) for c in key_columns})
                pq.write_table(empty.replace_schema_metadata(_marked(empty.schema).metadata), tmp)
        finally:
            if writer is not None:
                writer.close()

    atomic_write(sweep_dir / REQUESTS_TABLE, write)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmsim.aggregate SWEEP_DIR``: (re)build a sweep's tables and list failed runs."""
    from llmsim.sweep.args import ArgumentParser, fail, run_entry_point

    parser = ArgumentParser(prog="python -m llmsim.aggregate", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (hydra.sweep.dir of a --multirun)")
    args = parser.parse_args(argv)
    sweep_dir: Path = args.sweep_dir

    def build() -> int:
        check_sweep_dir(sweep_dir)
        try:
            tables = aggregate(sweep_dir)
        except OSError as exc:  # the tables cannot be written there (permissions, a full disk)
            fail(f"cannot write the tables of {sweep_dir}: {exc.strerror or exc}")
        print(describe(tables, sweep_dir))
        return 0

    return run_entry_point(build, sweep_dir)


def check_sweep_dir(path: Path) -> None:
    """Refuse what is not a sweep directory: a file, a single run's directory, a folder of single runs
    or of anything else (a sweep directory has the ``multirun.yaml`` Hydra writes when a sweep starts)."""
    from llmsim.errors import LLMSimError

    if not path.is_dir():
        raise LLMSimError(f"{path} is not a directory: give the sweep directory (hydra.sweep.dir of a --multirun)")
    if (path / "multirun.yaml").is_file():
        return
    if any((path / name).exists() for name in ("summary.json", "run.json", ".hydra")):
        raise LLMSimError(f"{path} is a single run's directory, not a sweep: aggregate its parent sweep directory")
    has_runs = any((child / ".hydra" / "overrides.yaml").exists() for child in path.iterdir() if child.is_dir())
    what = "a directory of single runs" if has_runs else "no job directories in it"
    raise LLMSimError(f"{path} is not a sweep directory: no multirun.yaml ({what}); nothing was written")


def describe(tables: SweepTables, sweep_dir: Path) -> str:
    """A few lines: how many runs, which failed and why, where the tables are."""
    runs = tables.runs
    failed_rows = runs[runs["status"] != "ok"] if len(runs) else runs
    total = runs["run"].nunique() if len(runs) else 0
    failed = failed_rows["run"].nunique() if len(runs) else 0
    lines = [f"{total} runs aggregated ({total - failed} ok, {failed} failed) -> {sweep_dir / RUNS_TABLE}"]
    for _, row in failed_rows.drop_duplicates(["run", "error"]).iterrows() if len(runs) else []:
        lines.append(f"  FAILED {row['run']}: {row['error']}")
    for path, why in tables.skipped:
        lines.append(f"  skipped {path.name}: {why}")
    if tables.never_started:
        lines.append(f"  {len(tables.never_started)} job(s) never started (re-run the sweep into this directory):")
        lines.extend(f"    {overrides}" for overrides in tables.never_started[:20])
        if len(tables.never_started) > 20:
            lines.append(f"    ... and {len(tables.never_started) - 20} more")
    return "\n".join(lines)
