"""Writing a run's results (atomically) and printing its summary as a table."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmsim.errors import OutputError, one_line
from llmsim.metrics.summary import percentile_label

if TYPE_CHECKING:
    from rich.console import Console

    from llmsim.config import ExperimentConfig
    from llmsim.orchestrator import ExperimentOrchestrator

log = logging.getLogger(__name__)


def _new_file_mode() -> int:
    """Permissions a plainly created file gets here (``0o666`` less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same directory, then rename: no half-written outputs.

    The file ends up with the permissions any new file gets (the temporary one is private).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Text (``\\n`` line ends), written atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, newline="\n"))


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON, written atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"))


@dataclass(frozen=True)
class OutputPolicy:
    """How a run may place its files.

    ``overwrite``: an existing file that llmsim did not write may be replaced (the ``overwrite=true`` key);
    ``in_sweep``: the run is a job of a ``--multirun`` sweep, so every output must lie inside its own
    directory (a path outside it would be shared by every job of the sweep).
    """

    overwrite: bool = False
    in_sweep: bool = False


_POLICY: ContextVar[OutputPolicy | None] = ContextVar("llmsim_output_policy", default=None)


@contextmanager
def output_policy(policy: OutputPolicy) -> Iterator[None]:
    """Runs inside the block place their outputs by ``policy`` (see :func:`planned_outputs`)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


#: result name -> metrics key of its path
OUTPUT_PATH_KEYS = {
    "summary": "output_summary_json_path",
    "requests": "output_requests_parquet_path",
    "requests_csv": "output_requests_csv_path",
    "steps": "output_steps_parquet_path",
}


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def written_by_llmsim(base: Path) -> set[str] | None:
    """Real paths of the files llmsim wrote for the run in ``base`` (its ``run.json`` lists them).

    None for a ``run.json`` that llmsim wrote before it listed outputs (it has a ``config_hash`` and no
    ``outputs``): that run's files inside ``base`` are taken as llmsim's, so old sweeps still resume.
    """
    from llmsim.runinfo import read_run_info

    info = read_run_info(base)
    if not isinstance(info, dict):
        return set()
    outputs = info.get("outputs")
    if outputs is None and "config_hash" in info:
        return None
    if not isinstance(outputs, dict):
        return set()
    return {os.path.realpath(base / str(p)) for p in outputs.values() if isinstance(p, str)}


def check_output_path(
    key: str, configured: str, base: Path, *, allow_outside: bool, policy: OutputPolicy, ours: set[str] | None
) -> Path:
    """Where ``configured`` (the value of output key ``key``) writes for a run in ``base``, or a ConfigError.

    A relative path lies inside the run directory and may not climb out of it (nor leave it through a
    linked folder); an absolute path outside it needs ``allow_outside_run_dir`` and is never allowed in a
    sweep. A link at the path is refused, never followed or replaced; an existing file is replaced
    only when llmsim wrote it for this run directory (``run.json`` lists it) or ``overwrite`` is set.
    """
    from llmsim.errors import ConfigError

    path = Path(configured) if Path(configured).is_absolute() else base / configured
    allow_key = key.rsplit(".", 1)[0] + ".allow_outside_run_dir"
    real_base = os.path.realpath(base)
    real = os.path.realpath(path.parent) + os.sep + path.name
    if not _inside(real, real_base):
        if policy.in_sweep:
            raise ConfigError(
                key,
                configured,
                f"in a --multirun sweep a path inside the job's directory ({real} is outside it)",
            )
        if not Path(configured).is_absolute():
            raise ConfigError(key, configured, f"a path inside the run directory {base} (it leaves it through a link)")
        if not allow_outside:
            raise ConfigError(
                key, configured, f"a path inside the run directory {base}, or set {allow_key}=true to write outside it"
            )
    if path.is_symlink():
        raise ConfigError(key, configured, f"{path} is a symbolic link: llmsim neither follows nor replaces links")
    if path.is_dir():
        raise ConfigError(key, configured, f"a file path: {path} is a directory")
    ours_too = real in ours if ours is not None else _inside(real, real_base)
    if path.exists() and not policy.overwrite and not ours_too:
        raise ConfigError(
            key,
            configured,
            f"a new file: {path} exists and llmsim did not write it for this run (set overwrite=true to replace it)",
        )
    return path


def planned_outputs(config: ExperimentConfig, base: Path, policy: OutputPolicy | None = None) -> dict[str, Path]:
    """The files a run of ``config`` in ``base`` writes, by result name; a path it may not use is a ConfigError.

    Checked before anything is simulated (see :func:`check_output_path` for the rules).
    """
    policy = policy or _POLICY.get() or OutputPolicy()
    metrics = config.metrics_config
    prefix = "metrics" if config.layout == "hydra" else "metrics_config"
    ours = written_by_llmsim(base)
    planned: dict[str, Path] = {}
    for name, attribute in OUTPUT_PATH_KEYS.items():
        configured = getattr(metrics, attribute)
        if configured:
            planned[name] = check_output_path(
                f"{prefix}.{attribute}",
                configured,
                base,
                allow_outside=metrics.allow_outside_run_dir,
                policy=policy,
                ours=ours,
            )
    return planned


def write_outputs(orchestrator: ExperimentOrchestrator, summary: dict[str, Any]) -> dict[str, Path]:
    """Write summary JSON, per-request Parquet/CSV and the step series where the metrics config asks.

    Every path is checked first (:func:`planned_outputs`), so a refused one writes nothing; each file
    is written atomically, and the run directory's ``run.json`` then lists them (``outputs``), which
    is how a later run knows it may replace them. A file that cannot be written is an
    :class:`OutputError` naming its key.
    """
    from llmsim.runinfo import record_outputs

    cfg = orchestrator.config.metrics_config
    collector = orchestrator.metrics_collector
    assert collector is not None
    base = orchestrator.output_dir
    planned = planned_outputs(orchestrator.config, base)
    prefix = "metrics" if orchestrator.config.layout == "hydra" else "metrics_config"
    written: dict[str, Path] = {}
    requests = collector.get_all_request_metrics_df()
    writers: dict[str, Callable[[Path], None]] = {
        "summary": lambda path: write_json(path, summary),
        "requests": lambda path: atomic_write(path, lambda tmp: _write_parts(tmp, _row_chunks(requests))),
        "requests_csv": lambda path: atomic_write(path, lambda tmp: requests.to_csv(tmp, index=False)),
        "steps": lambda path: atomic_write(path, lambda tmp: _write_parts(tmp, collector.step_parts())),
    }
    try:
        for name, path in planned.items():
            key = OUTPUT_PATH_KEYS[name]
            try:
                writers[name](path)
            except OSError as exc:
                raise OutputError(
                    f"{prefix}.{key}={getattr(cfg, key)!r}: cannot write {path}: {exc.strerror or one_line(str(exc))}"
                ) from None
            written[name] = path
    finally:
        if written:
            try:
                record_outputs(base, written)
            except OSError as exc:
                log.warning("cannot list the outputs in %s: %s", base / "run.json", exc.strerror or exc)
    return written


#: rows of the request table converted to Arrow at a time when it is written (a row group each)
REQUEST_ROW_GROUP = 100_000


def _row_chunks(frame: Any) -> Iterable[Any]:
    """A table in slices of :data:`REQUEST_ROW_GROUP` rows (at least one, so that an empty table
    still has its columns), so that writing it never holds a whole second copy."""
    for start in range(0, max(len(frame), 1), REQUEST_ROW_GROUP):
        yield frame.iloc[start : start + REQUEST_ROW_GROUP]


def _write_parts(path: Path, parts: Iterable[Any]) -> None:
    """Stream DataFrame parts into one Parquet file (the step series of a long run never sits in memory whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for frame in parts:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            if table.num_rows:
                writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


#: console rows shown as percentages (the summary file holds these as fractions 0-1)
PERCENT_ROWS = ("prefix_cache_hit_rate", "slo_attainment")


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, metric key) rows of the console table, in reading order.

    Latency rows name their population: TTFT, TPOT and ITL over streamed requests (what a streaming
    client measures), E2EL over every completed request.
    """
    percents = summary.get("percentiles", [99])
    frameworks = summary["frameworks"].values()
    rows = [
        ("Completed / failed / incomplete", "_counts"),
        ("Streamed / non-streamed (completed)", "_streaming"),
        ("Offered load (sessions/s → req/s)", "_offered"),
        ("Benchmark duration (s)", "duration"),
        ("Request throughput (req/s)", "request_throughput"),
        ("  over the arrival window (req/s)", "request_throughput_steady"),
        ("Output token throughput (tok/s)", "output_throughput"),
        ("Total token throughput (tok/s)", "total_token_throughput"),
    ]
    if any("request_goodput" in m for m in frameworks):
        rows.append(("Request goodput (req/s)", "request_goodput"))
        rows.append(("SLO attainment", "slo_attainment"))
    for name, label, population in (
        ("ttft", "TTFT", "streamed"),
        ("tpot", "TPOT", "streamed"),
        ("itl", "ITL", "streamed"),
        ("e2el", "E2EL", "all"),
    ):
        rows.append((f"{label} mean (ms, {population})", f"mean_{name}_ms"))
        rows.append((f"{label} median (ms, {population})", f"median_{name}_ms"))
        high = [p for p in percents if p > 50]
        if high:
            p = high[-1]
            rows.append((f"{label} {percentile_label(p)} (ms, {population})", f"{percentile_label(p)}_{name}_ms"))
    rows += [
        ("Prefix cache hit rate", "prefix_cache_hit_rate"),
        ("Preemptions", "preemptions"),
        ("Mean batch size", "mean_batch_size"),
        ("KV cache usage mean / max", "_kv"),
    ]
    return rows


def _cell(metrics: dict[str, Any], key: str) -> str:
    """One table cell: a metric, or one of the combined rows (``_counts``, ``_kv``, ...)."""
    if key == "_counts":
        return f"{metrics['completed']:,} / {metrics['failed']:,} / {metrics['incomplete']:,}"
    if key == "_streaming":
        return f"{metrics.get('num_streamed', 0):,} / {metrics.get('num_non_streamed', 0):,}"
    if key == "_offered":
        return f"{_fmt(metrics.get('offered_session_rate'))} → {_fmt(metrics.get('offered_request_rate'))}"
    if key == "_kv":
        return f"{metrics['mean_kv_cache_usage']:.1%} / {metrics['max_kv_cache_usage']:.1%}"
    if key in PERCENT_ROWS:
        return f"{metrics[key]:.1%}"
    if key.endswith(("_ttft_ms", "_tpot_ms", "_itl_ms")) and metrics.get("num_streamed") == 0:
        return "-"  # no streamed request: nothing a streaming client would have measured
    return _fmt(metrics.get(key, ""))


def header_lines(summary: dict[str, Any], run_dir: Path | None = None) -> list[str]:
    """What was simulated, in a few lines: model and GPUs, frameworks, workload, seed, run directory."""
    run = summary.get("run")
    if not run:
        return []
    hardware, model, workload = run["hardware"], run["model"], run["workload"]
    lines = [f"llmsim {run['llmsim_version']} · experiment {run['experiment']} · seed {run['seed']}"]
    for name, fw in run["frameworks"].items():
        fw_model = model["per_framework"].get(name, model)
        release = f"; modelled on {fw['modelled_release']}" if fw.get("modelled_release") else ""
        tp = fw["tensor_parallel_size"]
        lines.append(
            f"{name}: {fw_model['name']} ({fw_model['dtype']}), TP={tp} on {tp} × {hardware['gpu']} "
            f"({hardware['name']}, node of {hardware['num_gpus']}){release}"
        )
    lines.append(_workload_line(workload))
    if run_dir is not None:
        lines.append(f"run dir: {run_dir}")
    return lines


def _workload_line(workload: dict[str, Any]) -> str:
    """``workload chat (open_loop): 10 sessions/s configured, offered 10.2 sessions/s = 14.4 req/s ...``."""
    text = f"workload {workload['name']} ({workload['kind']})"
    if workload.get("request_rate") is not None:
        text += f": rate {_fmt(float(workload['request_rate']))} {workload['request_rate_unit']}"
    elif workload.get("max_concurrency"):
        text += f": {workload['max_concurrency']} concurrent clients"
    elif workload.get("all_at_start"):
        text += ": every request sent at t=0"
    if "input_len" in workload:
        text += f"; input {workload['input_len']}, output {workload['output_len']} tokens"
        if workload["range_ratio"]:
            text += f" (± {workload['range_ratio']:.0%})"
        if workload["prefix_len"]:
            text += f", shared prefix {workload['prefix_len']}"
    sessions, requests = workload.get("offered_session_rate"), workload.get("offered_request_rate")
    if requests is not None and sessions is not None and abs(requests - sessions) > 1e-9 * requests:
        text += f"; offered {_fmt(sessions)} sessions/s = {_fmt(requests)} req/s"
    elif requests is not None:
        text += f"; offered {_fmt(requests)} req/s"
    if workload.get("total_duration"):
        text += f"; {_fmt(float(workload['total_duration']))} s of arrivals"
    return text + f"; {workload['num_prompts']:,} requests sent"


def print_summary(summary: dict[str, Any], console: Console | None = None, run_dir: Path | None = None) -> None:
    """Print the header (what was simulated) and one table: a row per metric, a column per framework."""
    from rich.console import Console  # only runs that print pay for importing rich
    from rich.table import Table
    from rich.text import Text

    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=max(100, 40 + 18 * len(summary["frameworks"])))
    frameworks = summary["frameworks"]
    for line in header_lines(summary, run_dir):
        console.print(Text(line), soft_wrap=True)
    title = f"llmsim — {summary.get('experiment', 'experiment')} (simulated {summary['simulated_time_s']:.1f} s"
    title += ", stopped at max_simulation_time)" if summary.get("stopped_by_time_limit") else ")"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in frameworks:
        table.add_column(name, justify="right")
    for label, key in summary_rows(summary):
        table.add_row(label, *(_cell(metrics, key) for metrics in frameworks.values()))
    console.print(table)
    for name, metrics in frameworks.items():
        if metrics.get("error"):
            console.print(Text(f"{name} stopped during the run: {metrics['error']}", style="bold red"))
