"""Reading user data files (traces, empirical distributions): CSV, Parquet or JSONL tables.

Every problem becomes a one-line :class:`~llmsim.errors.ConfigError` that names the config key,
the file and, where it applies, the line (CSV, JSONL) or row (Parquet) at fault.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError

#: The checkout (relative data paths are looked up in the current directory, then here).
REPO_ROOT = Path(__file__).resolve().parents[2]
CSV_SUFFIXES = (".csv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def resolve_path(path: str | Path, key: str) -> Path:
    """An existing file: ``path`` as given, or relative to the current directory, then the repo root."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ConfigError(key, path, "a path to a file")
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        found = candidate if candidate.is_file() else None
    else:
        found = next((base / candidate for base in (Path.cwd(), REPO_ROOT) if (base / candidate).is_file()), None)
    if found is None:
        where = "" if candidate.is_absolute() else f" (looked in {Path.cwd()} and {REPO_ROOT})"
        raise ConfigError(key, str(path), f"no such file{where}")
    return found.resolve()


@dataclass(frozen=True)
class Table:
    """A file's rows as a DataFrame, with where each row came from (for error messages)."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray  # line (CSV, JSONL) or row (Parquet) number of each frame row, 1-based
    unit: str  # "line" or "row"

    def where(self, index: int) -> str:
        """``line 12`` / ``row 7``: the location of frame row ``index``."""
        return f"{self.unit} {int(self.lines[index])}"


def read_table(path: Path, key: str) -> Table:
    """Read a CSV (header row), Parquet or JSONL (one object per line) file."""
    suffix = path.suffix.lower()
    if suffix not in (*CSV_SUFFIXES, *PARQUET_SUFFIXES, *JSONL_SUFFIXES):
        raise ConfigError(key, str(path), "a .csv, .parquet or .jsonl file")
    try:
        if path.stat().st_size == 0:
            raise ConfigError(key, str(path), "the file is empty")
        if suffix in PARQUET_SUFFIXES:
            table = _read_parquet(path, key)
        else:
            text = _decode(path, key)
            table = _read_jsonl(path, text, key) if suffix in JSONL_SUFFIXES else _read_csv(path, text, key)
    except OSError as exc:  # unreadable: permissions, a vanished file, an I/O error
        raise ConfigError(key, str(path), f"cannot be read: {exc.strerror or exc}") from None
    if len(table.frame) == 0:
        raise ConfigError(key, str(path), "the file has a header but no rows")
    return table


def _decode(path: Path, key: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(key, str(path), f"line {line} is not UTF-8 text (is it a binary file?)") from None


def _read_csv(path: Path, text: str, key: str) -> Table:
    if not text.strip():
        raise ConfigError(key, str(path), "the file is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), skip_blank_lines=False, skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as exc:
        raise ConfigError(key, str(path), "cannot be read as CSV: " + " ".join(str(exc).split())) from None
    lines = np.arange(len(frame), dtype=np.int64) + 2  # line 1 is the header
    keep = ~frame.isna().all(axis=1).to_numpy()  # blank lines
    return Table(path, frame[keep].reset_index(drop=True), lines[keep], "line")


def _read_jsonl(path: Path, text: str, key: str) -> Table:
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(key, str(path), f"line {number} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ConfigError(key, str(path), f"line {number} is not a JSON object")
        records.append(record)
        lines.append(number)
    if not records:
        raise ConfigError(key, str(path), "the file is empty")
    return Table(path, pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64), "line")


def _read_parquet(path: Path, key: str) -> Table:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise ConfigError(key, str(path), "cannot be read as Parquet: " + " ".join(str(exc).split())) from None
    return Table(path, frame.reset_index(drop=True), np.arange(len(frame), dtype=np.int64) + 1, "row")


def numeric_column(
    table: Table,
    column: str,
    key: str,
    *,
    allow_missing: bool,
    nonneg: bool = False,
    integer: bool = False,
    ceiling: float | None = None,
    unit: str = "",
    label: str | None = None,
) -> np.ndarray:
    """Column ``column`` as float64 (NaN where empty, if ``allow_missing``), checked row by row.

    ``true``/``false`` are not numbers; ``ceiling`` bounds every value (``unit`` names what it counts),
    so a count converted to integers afterwards cannot overflow.
    """
    label = label or repr(column)
    raw = table.frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = (np.isnan(values) & raw.notna().to_numpy()) | _booleans(raw)
    if bad.any():
        i = int(np.argmax(bad))
        value = raw.iloc[i]
        value = value.item() if isinstance(value, np.generic) else value  # True, not np.True_
        raise ConfigError(key, str(table.path), f"{table.where(i)}: {label} {value!r} is not a number")
    checks: list[tuple[np.ndarray, str]] = []
    if not allow_missing:
        checks.append((np.isnan(values), "is missing"))
    checks.append((np.isinf(values), "must be finite"))
    finite = np.where(np.isfinite(values), values, 0.0)
    if nonneg:
        checks.append((finite < 0, "must not be negative"))
    if integer:
        checks.append((finite != np.floor(finite), "must be a whole number"))
    if ceiling is not None:
        checks.append((np.abs(finite) > ceiling, f"exceeds {ceiling:,.0f}{unit}, the most a row may hold"))
    for mask, problem in checks:
        if mask.any():
            i = int(np.argmax(mask))
            shown = "" if np.isnan(values[i]) else f" ({raw.iloc[i]})"
            raise ConfigError(key, str(table.path), f"{table.where(i)}: {label}{shown} {problem}")
    return values


def _booleans(raw: pd.Series) -> np.ndarray:
    """Where a column holds ``true``/``false`` (JSON booleans, a Parquet bool column): not numbers."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.notna().to_numpy()
    if raw.dtype == object:
        return raw.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    return np.zeros(len(raw), dtype=bool)
