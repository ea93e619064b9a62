"""Command-line glue: one-line errors before anything runs, and one ``run(cfg)`` for Hydra jobs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from llmsim.errors import LLMSimError, one_line
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


RUN_CONTROL_KEYS = ("resume",)


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


def run(cfg: DictConfig | dict[str, Any], output_dir: str | Path, *, in_sweep: bool = False) -> dict[str, Any]:
    """Run one experiment from a composed config and write its outputs into ``output_dir``.

    In a sweep the job prints one line instead of the table and shows no progress bar.
    """
    from llmsim.orchestrator import ExperimentOrchestrator

    orchestrator = ExperimentOrchestrator(experiment_container(cfg), output_dir=output_dir)
    orchestrator.config_choices = hydra_choices()
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

    In a sweep a failing job is recorded (status ``failed`` and its one-line reason) and does not
    stop the others; a single run re-raises so the command exits non-zero.
    """
    import time

    from llmsim.runinfo import base_run_info, read_run_info, write_run_info

    output_dir = Path(output_dir)
    try:
        container = experiment_container(cfg)
    except LLMSimError as exc:  # in a sweep: this job fails alone, with its reason
        if not multirun:
            raise
        info = base_run_info({}, overrides)
        info.update(status="failed", error=_error_line(exc), framework="", wall_time_s=0.0)
        write_run_info(output_dir, info)
        log.error("run %s failed: %s", output_dir.name, info["error"])
        return None
    info = base_run_info(container, overrides)
    framework = (container.get("framework") or {}).get("name", "")
    info["framework"] = framework
    previous = read_run_info(output_dir)
    resume = bool(OmegaConf.select(cfg, "resume", default=True)) if isinstance(cfg, DictConfig) else True
    if (
        resume
        and isinstance(previous, dict)
        and previous.get("status") == "ok"
        and previous.get("config_hash") == info["config_hash"]
    ):
        finished = finished_summary(output_dir)
        if finished is not None:
            log.info("skipping %s: finished before with the same config (resume=false to force)", output_dir)
            return finished
        log.warning("re-running %s: its run.json says ok but summary.json is missing or corrupt", output_dir)
    elif isinstance(previous, dict) and previous.get("status") == "running":
        log.warning("re-running %s: an earlier attempt was interrupted", output_dir)
    write_run_info(output_dir, info)
    started = time.perf_counter()
    try:
        summary = run(cfg, output_dir, in_sweep=multirun)
    except Exception as exc:
        info.update(status="failed", error=_error_line(exc), wall_time_s=time.perf_counter() - started)
        write_run_info(output_dir, info)
        if not multirun:
            raise
        log.error("run %s failed: %s", output_dir.name, info["error"])
        return None
    # frameworks that stopped during the run are named in the summary; the others' results stand
    errors = summary.get("framework_errors") or {}
    info.update(status="ok", error="; ".join(errors.values()), wall_time_s=time.perf_counter() - started)
    write_run_info(output_dir, info)
    return summary


def finished_summary(output_dir: Path) -> dict[str, Any] | None:
    """The ``summary.json`` of a finished run, or None when it is missing, corrupt or incomplete."""
    import json

    try:
        summary = json.loads((output_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("frameworks"), dict) or not summary["frameworks"]:
        return None
    return summary


def report_error(exc: BaseException | str) -> None:
    """Print a user error as one line on stderr."""
    print(f"llmsim: error: {one_line(str(exc))}", file=sys.stderr)


def is_user_error(exc: BaseException) -> bool:
    """Errors that get one line and no traceback."""
    return isinstance(exc, LLMSimError)
