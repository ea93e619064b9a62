"""Command-line glue: one-line errors before anything runs, and one ``run(cfg)`` for Hydra jobs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from llmsim.errors import LLMSimError, OutputError, one_line
from llmsim.models import CONF_DIR
from llmsim.overrides import (
    CONFIG_GROUPS,
    INFO_FLAGS,
    SOURCE_FLAGS,
    as_written,
    check_sweep_keys,
    compose_config,
    normalize_overrides,
    split_command_line,
)

log = logging.getLogger("llmsim")


def group_options(group: str, conf_dir: Path = CONF_DIR, extra_dirs: tuple[Path, ...] = ()) -> list[str]:
    """Options of a config group: its YAML file names (``sweeps`` lives beside ``conf``), also in extra dirs."""
    folders = [conf_dir.parent / "sweeps" if group == "sweeps" else conf_dir / group]
    folders += [extra / group for extra in extra_dirs]
    return sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})


def extra_config_dirs(args: list[str]) -> tuple[Path, ...]:
    """Directories added with ``--config-dir DIR`` / ``-cd DIR`` (Hydra's flag)."""
    dirs = []
    for index, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and index + 1 < len(args):
            dirs.append(Path(args[index + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return tuple(dirs)


def check_group_overrides(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """``framework=nope`` -> one-line ConfigError listing the options (also for sweep lists a,b,c)."""
    from llmsim.errors import ConfigError

    extra = extra_config_dirs(args)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        group = key.split("@")[0]
        if group not in CONFIG_GROUPS or value in ("", "null"):
            continue
        options = group_options(group, conf_dir, extra)
        choices = value[len("choice(") : -1] if value.startswith("choice(") and value.endswith(")") else value
        for choice in choices.split(","):
            choice = choice.strip()
            if choice not in options:
                raise ConfigError(group, choice, f"one of {', '.join(options)}")


def preflight(args: list[str]) -> list[str]:
    """Validate the command line before Hydra starts; return it with overrides rewritten for Hydra.

    Config groups are checked first; then keys that are not in the YAML are made settable (see
    :func:`normalize_overrides`); a single run validates the whole config, a ``--multirun`` sweep
    the keys it sets. A user mistake raises :class:`LLMSimError` with one line; nothing is written.
    """
    from llmsim.orchestrator import ExperimentOrchestrator

    check_group_overrides(args)
    flags, overrides = split_command_line(args)
    if any(flag.split("=", 1)[0] in SOURCE_FLAGS for flag in flags):
        return args  # configs from elsewhere: Hydra composes them, each job validates itself
    overrides = [a for a in overrides if not a.startswith("hydra.") and not a.startswith("hydra/")]
    hydra_args = [a for a in args if a.startswith(("hydra.", "hydra/"))]
    rewritten, missing = normalize_overrides(overrides)
    if any(flag.split("=", 1)[0] in INFO_FLAGS for flag in flags):
        return [*flags, *rewritten, *hydra_args]  # Hydra prints what was asked for; nothing runs
    if "--multirun" in flags or "-m" in flags:
        check_sweep_keys(rewritten, missing)
        return [*flags, *rewritten, *hydra_args]
    cfg = compose_config(rewritten)
    container = experiment_container(cfg)
    try:
        ExperimentOrchestrator(container, output_dir=None).setup_simulation()
    except LLMSimError as exc:
        raise as_written(exc, overrides) from None
    from llmsim.config import context_warnings, load_experiment_config

    for line in context_warnings(load_experiment_config(container)):
        print(f"llmsim: warning: {line}", file=sys.stderr)
    return [*flags, *rewritten, *hydra_args]


RUN_CONTROL_KEYS = ("resume", "overwrite")


def experiment_container(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The resolved experiment config, without Hydra's settings and run-control switches.

    An interpolation that does not resolve (``${oops}``, or a group removed with ``~``) is a ConfigError.
    """
    from omegaconf.errors import OmegaConfBaseException

    from llmsim.errors import ConfigError

    if not isinstance(cfg, DictConfig):
        container = dict(cfg)
    else:
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "config"
            value: Any = OmegaConf.to_container(cfg, resolve=False)
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            raise ConfigError(key, value, one_line(str(exc).split("\n")[0])) from None
        container = dict(resolved) if isinstance(resolved, dict) else {}
    from llmsim.config import check_run_control

    check_run_control(container)  # resume=0.5 is refused before any job reads it
    return {k: v for k, v in container.items() if k not in ("hydra", *RUN_CONTROL_KEYS)}


def run(
    cfg: DictConfig | dict[str, Any],
    output_dir: str | Path,
    *,
    in_sweep: bool = False,
    overwrite: bool | None = None,
) -> dict[str, Any]:
    """Run one experiment from a composed config and write its outputs into ``output_dir``.

    In a sweep the job prints one line instead of the table and shows no progress bar, and every
    output must lie inside its directory. ``overwrite`` (default: the config's ``overwrite`` key) lets
    outputs replace files llmsim did not write.
    """
    from llmsim.orchestrator import ExperimentOrchestrator
    from llmsim.outputs import OutputPolicy, output_policy

    if overwrite is None:
        overwrite = run_control(cfg, "overwrite", False)
    orchestrator = ExperimentOrchestrator(experiment_container(cfg), output_dir=output_dir)
    orchestrator.config_choices = hydra_choices()
    with output_policy(OutputPolicy(overwrite=overwrite, in_sweep=in_sweep)):
        summary = orchestrator.run(show_progress=False if in_sweep else None, print_table=not in_sweep)
    if in_sweep:
        for name, metrics in summary["frameworks"].items():
            log.info(
                "%s %s: %d completed, %.1f output tok/s, p50 TTFT %.1f ms, p50 TPOT %.2f ms",
                Path(output_dir).name,
                name,
                metrics["completed"],
                metrics["output_throughput"],
                metrics["median_ttft_ms"],
                metrics["median_tpot_ms"],
            )
    return summary


def run_control(cfg: DictConfig | dict[str, Any], key: str, default: bool) -> bool:
    """A top-level run-control switch (``resume``, ``overwrite``): true or false, anything else a ConfigError."""
    from llmsim.errors import ConfigError

    value = OmegaConf.select(cfg, key, default=default) if isinstance(cfg, DictConfig) else cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def hydra_choices() -> dict[str, str]:
    """The config-group options of the running Hydra job (``{"workload": "chat", ...}``); empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {str(group): str(option) for group, option in choices.items() if option is not None and "/" not in group}


def _error_line(exc: BaseException) -> str:
    return str(exc) if is_user_error(exc) else f"{type(exc).__name__}: {exc}"


def execute_job(
    cfg: DictConfig, output_dir: str | Path, overrides: list[str], *, multirun: bool
) -> dict[str, Any] | None:
    """One Hydra job: skip it if an identical run already succeeded here, else run it and record ``run.json``.

    Output paths are checked before anything is simulated (:func:`llmsim.outputs.planned_outputs`).
    In a sweep a failing job is recorded (status ``failed`` and its one-line reason) and does not
    stop the others, even when its directory cannot be written (the reason is then logged, and
    aggregation reports the job); a single run re-raises so the command exits non-zero.
    """
    from llmsim.runinfo import clear_job_failure, record_job_failure

    output_dir = Path(output_dir)
    if multirun:
        exit_when_orphaned()
    if multirun:
        try:
            clear_job_failure(output_dir)
        except OSError as exc:
            log.warning("cannot remove the earlier failure record of %s: %s", output_dir.name, exc.strerror or exc)
    try:
        return _execute_job(cfg, output_dir, overrides, multirun=multirun)
    except RunDirUnwritable as exc:  # the job directory cannot be written (read-only, full disk)
        if not multirun:
            raise
        log.error("run %s failed: %s", output_dir.name, exc)
        try:
            record_job_failure(output_dir, overrides, str(exc))
        except OSError as again:
            log.error("cannot record that failure beside it either: %s", again.strerror or again)
        return None


_ORPHAN_WATCH: list[int] = []


def exit_when_orphaned(interval_s: float = 1.0) -> None:
    """In a joblib (loky) worker process: exit as soon as the sweep that started it is gone.

    A sweep killed with ``kill -9`` cannot stop its workers, and loky's idle ones would otherwise wait
    for work forever. A thread polls the parent process id; when the worker has been re-parented, it
    stops the sibling workers it saw beside it (on Linux, from ``/proc``: those that never ran a job
    have no such thread) and exits. A job it was running stays ``running`` in its ``run.json``, and
    is run again when the sweep is. Anywhere else (a sequential sweep in the main process, Ray,
    SLURM) this does nothing.
    """
    import contextlib
    import multiprocessing
    import os
    import signal
    import threading
    import time

    if _ORPHAN_WATCH or not multiprocessing.current_process().name.startswith("LokyProcess"):
        return
    parent = os.getppid()
    _ORPHAN_WATCH.append(parent)

    def watch() -> None:
        siblings: set[int] = set()
        polls = 0
        while True:
            time.sleep(interval_s)
            if os.getppid() == parent:
                if polls % 10 == 0:  # the pool is started at once; look again now and then
                    siblings = _loky_children(parent) - {os.getpid()}
                polls += 1
                continue
            for pid in siblings:
                if _loky_children(None, only=pid):  # still a loky worker, and orphaned as well
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGTERM)
            os._exit(1)

    threading.Thread(target=watch, name="llmsim-orphan-watch", daemon=True).start()


def _loky_children(parent: int | None, only: int | None = None) -> set[int]:
    """Process ids of loky workers whose parent is ``parent`` (None: any parent but that of this process's
    sweep, i.e. orphaned), read from ``/proc`` (empty where there is none). ``only``: look at that pid alone."""
    found: set[int] = set()
    proc = Path("/proc")
    candidates = [proc / str(only)] if only is not None else list(proc.glob("[0-9]*"))
    for entry in candidates:
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"popen_loky_posix" not in command:
            continue
        if (parent is None and ppid not in _ORPHAN_WATCH) or ppid == parent:
            found.add(int(entry.name))
    return found


def _fail_job(output_dir: Path, info: dict[str, Any], exc: BaseException) -> None:
    info.update(status="failed", error=_error_line(exc))
    write_run_info_of(output_dir, info)
    log.error("run %s failed: %s", output_dir.name, info["error"])


class RunDirUnwritable(OutputError):
    """A run's ``run.json`` cannot be written: its directory is read-only, full or gone."""


def write_run_info_of(output_dir: Path, info: dict[str, Any]) -> None:
    """``run.json`` of a job (see :func:`llmsim.runinfo.write_run_info`); failing that, a :class:`RunDirUnwritable`."""
    from llmsim.runinfo import write_run_info

    try:
        write_run_info(output_dir, info)
    except OSError as exc:
        raise RunDirUnwritable(f"cannot write into {output_dir}: {exc.strerror or one_line(str(exc))}") from None


def _execute_job(cfg: DictConfig, output_dir: Path, overrides: list[str], *, multirun: bool) -> dict[str, Any] | None:
    import time

    from llmsim.config import load_experiment_config
    from llmsim.outputs import OutputPolicy, planned_outputs
    from llmsim.runinfo import base_run_info, read_run_info

    try:
        container = experiment_container(cfg)
        resume = run_control(cfg, "resume", True)
        overwrite = run_control(cfg, "overwrite", False)
        planned = planned_outputs(
            load_experiment_config(container), output_dir, OutputPolicy(overwrite=overwrite, in_sweep=multirun)
        )
    except LLMSimError as exc:  # in a sweep: this job fails alone, with its reason
        if not multirun:
            raise
        info = base_run_info({}, overrides)
        info.update(framework="", wall_time_s=0.0)
        _fail_job(output_dir, info, exc)
        return None
    info = base_run_info(container, overrides)
    framework = (container.get("framework") or {}).get("name", "")
    info["framework"] = framework
    previous = read_run_info(output_dir)
    if (
        resume
        and isinstance(previous, dict)
        and previous.get("status") == "ok"
        and previous.get("config_hash") == info["config_hash"]
    ):
        finished, problem = finished_run(output_dir, planned)
        if finished is not None:
            log.info("skipping %s: finished before with the same config (resume=false to force)", output_dir)
            return finished
        log.warning("re-running %s: its run.json says ok but %s", output_dir, problem)
    elif isinstance(previous, dict) and previous.get("status") == "running":
        log.warning("re-running %s: an earlier attempt was interrupted", output_dir)
    write_run_info_of(output_dir, info)
    started = time.perf_counter()
    try:
        summary = run(cfg, output_dir, in_sweep=multirun, overwrite=overwrite)
    except Exception as exc:
        info["wall_time_s"] = time.perf_counter() - started
        if not multirun:
            info.update(status="failed", error=_error_line(exc))
            write_run_info_of(output_dir, info)
            raise
        _fail_job(output_dir, info, exc)
        return None
    # frameworks that stopped during the run are named in the summary; the others' results stand
    errors = summary.get("framework_errors") or {}
    info.update(status="ok", error="; ".join(errors.values()), wall_time_s=time.perf_counter() - started)
    write_run_info_of(output_dir, info)
    return summary


#: metrics every framework of a finished summary has (what sweeps, tables and the job's log line read)
REQUIRED_METRICS = ("completed", "failed", "output_throughput", "median_ttft_ms", "median_tpot_ms")


def finished_run(output_dir: Path, planned: dict[str, Path] | None = None) -> tuple[dict[str, Any] | None, str]:
    """A finished run's summary, or (None, why not): every output it is configured to write must be whole.

    ``planned``: its output files by result name (default: ``summary.json`` and ``requests.parquet``
    in ``output_dir``). The summary must parse and give each framework the metrics in
    :data:`REQUIRED_METRICS`; a Parquet output must have a readable footer.
    """
    if planned is None:
        planned = {"summary": output_dir / "summary.json", "requests": output_dir / "requests.parquet"}
    summary_path = planned.get("summary")
    if summary_path is None:
        return None, "it writes no summary (output_summary_json_path is null)"
    summary = finished_summary(output_dir, summary_path)
    if summary is None:
        return None, f"{summary_path.name} is missing, corrupt or incomplete"
    for name, path in planned.items():
        if name == "summary":
            continue
        if not path.is_file():
            return None, f"{path.name} is missing"
        if path.suffix == ".parquet" and not _parquet_readable(path):
            return None, f"{path.name} is corrupt"
    return summary, ""


def _parquet_readable(path: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return False
    return True


def finished_summary(output_dir: Path, path: Path | None = None) -> dict[str, Any] | None:
    """The summary of a finished run (``path``, default ``output_dir/summary.json``), or None when it is
    missing, corrupt or incomplete (a framework without the metrics in :data:`REQUIRED_METRICS`)."""
    import json
    import math

    try:
        summary = json.loads((path or output_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("frameworks"), dict) or not summary["frameworks"]:
        return None
    for metrics in summary["frameworks"].values():
        if not isinstance(metrics, dict):
            return None
        for key in REQUIRED_METRICS:
            value = metrics.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return None
    return summary


def report_error(exc: BaseException | str) -> None:
    """Print a user error as one line on stderr."""
    print(f"llmsim: error: {one_line(str(exc))}", file=sys.stderr)


def is_user_error(exc: BaseException) -> bool:
    """Errors that get one line and no traceback."""
    return isinstance(exc, LLMSimError)
