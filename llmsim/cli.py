"""Command-line glue: one-line errors before anything runs, and one ``run(cfg)`` for Hydra jobs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from llmsim.errors import LLMSimError, one_line
from llmsim.models import CONF_DIR

log = logging.getLogger("llmsim")

CONFIG_GROUPS = ("hardware", "model", "workload", "framework", "metrics", "simulation", "experiment", "sweeps")


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


#: Hydra flags that take the next argument as their value.
VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c", "--package", "-p")
#: Flags that change where configs come from: the command line is then left to Hydra as written.
SOURCE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
#: Flags that only print (help, the composed config, info): overrides are rewritten, not validated.
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--version")
#: At most this many combinations of swept config groups are composed to check a sweep's keys.
MAX_CHECKED_COMBINATIONS = 16


def split_command_line(args: list[str]) -> tuple[list[str], list[str]]:
    """``(flags, overrides)``: Hydra's ``--flags`` (with their values) apart from ``key=value`` overrides."""
    flags: list[str] = []
    overrides: list[str] = []
    takes_value = False
    for arg in args:
        if takes_value:
            flags.append(arg)
            takes_value = False
        elif arg.startswith("-") and not arg.startswith(("~", "+")):
            flags.append(arg)
            takes_value = arg in VALUE_FLAGS
        else:
            overrides.append(arg)
    return flags, overrides


def dotted(key: str) -> str:
    """``a.b[0].c`` -> ``a.b.0.c`` (how Hydra overrides spell list items)."""
    return key.replace("[", ".").replace("]", "")


def _is_group_override(key: str) -> bool:
    return "." not in key and (key.split("@")[0] in CONFIG_GROUPS or "/" in key)


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from llmsim.errors import ConfigError

    parsed = []
    for text in overrides:
        try:
            parsed.append(OverridesParser.create().parse_overrides([text])[0])
        except HydraException as exc:
            raise ConfigError("override", text, one_line(str(exc))) from None
    return parsed


def _values(override: Any) -> list[str]:
    """The value of an override as text, one entry per swept value."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _group_combinations(parsed: list[Any]) -> list[list[str]]:
    """The config-group choices of every job (a sweep over groups gives several), as override lists."""
    import itertools

    axes: list[list[str]] = []
    for override in parsed:
        key = override.key_or_group
        if not _is_group_override(key) or key.startswith("hydra"):
            continue
        prefix = override.input_line.split("=", 1)[0]
        axes.append([f"{prefix}={value}" for value in _values(override)])
    return [list(combo) for combo in itertools.islice(itertools.product(*axes), MAX_CHECKED_COMBINATIONS)]


_ABSENT = object()


def _lookup(cfg: DictConfig, key: str, value: str) -> Any:
    """The node at a dotted override key, ``_ABSENT`` if a key on the way is missing.

    A list index beyond the list's end is a one-line ConfigError.
    """
    from omegaconf import ListConfig

    from llmsim.errors import ConfigError

    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, ListConfig):
            size = len(node)
            if not part.isdigit() or int(part) >= size:
                where = ".".join(parts[:depth])
                entries = f"{size} entry (index 0)" if size == 1 else f"{size} entries (index 0 to {size - 1})"
                raise ConfigError(key, value, f"{where} has {entries}")
            node = node._get_node(int(part))
        elif isinstance(node, DictConfig):
            if part not in node:
                return _ABSENT
            node = node._get_node(part)
        else:
            return _ABSENT
    return node


def _compose(overrides: list[str]) -> DictConfig:
    """The composed config for ``overrides``; Hydra's complaint becomes one ConfigError line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from llmsim.errors import ConfigError

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="llmsim"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError("override", " ".join(overrides), message) from None


def _replaces_mapping(override: Any) -> bool:
    """A ``{...}`` value for a workload key: it replaces the mapping there (a distribution), not merges."""
    return override.key_or_group.startswith("workload.") and any(
        value.lstrip().startswith("{") for value in _values(override)
    )


def normalize_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Rewrite overrides so that every key the schemas know can be set as ``key=value``.

    Hydra refuses ``key=value`` when ``key`` is not in the composed YAML (struct mode) and merges a
    ``{...}`` value into the mapping already there (``{type: Constant, value: 512}`` over a
    LogNormal would keep its ``mean`` and ``sigma``). So a key missing from every composed variant
    (in any swept variant) becomes ``++key=value`` (validation then names it if it is unknown); a workload mapping
    such as a distribution is replaced: ``++key=null`` goes before it. Returns the rewritten
    overrides and the keys that were missing (to check for typos before a sweep starts).
    """
    parsed = _parse(overrides)
    bases = [_compose(combo) for combo in _group_combinations(parsed)]
    rewritten: list[str] = []
    missing: list[str] = []
    for text, override in zip(overrides, parsed, strict=True):
        key = override.key_or_group
        if _is_group_override(key) or key.startswith("hydra") or override.type.name == "DEL":
            rewritten.append(text)
            continue
        if override.type.name != "CHANGE":  # +key / ++key: Hydra adds it; a mapping still replaces
            if _replaces_mapping(override) and any(isinstance(_lookup(b, key, None), DictConfig) for b in bases):
                rewritten.append(f"++{key}=null")
            rewritten.append(text)
            continue
        shown = _values(override)[0] if override.is_sweep_override() else override.value()
        nodes = [_lookup(base, key, shown) for base in bases]
        absent = [node is _ABSENT for node in nodes]
        if any(absent):
            missing.append(key)
        if _replaces_mapping(override) and (any(absent) or any(isinstance(node, DictConfig) for node in nodes)):
            reset = f"++{key}=null"
            if reset not in rewritten:
                rewritten.append(reset)
            rewritten.append(text)
        elif any(absent):
            rewritten.append(f"++{text}")
        else:
            rewritten.append(text)
    return rewritten, missing


def _as_written(exc: Any, overrides: list[str]) -> Any:
    """A ConfigError about ``a.b[0].c`` named as the user wrote it (``a.b.0.c``)."""
    from llmsim.errors import ConfigError

    if not isinstance(exc, ConfigError) or "[" not in exc.key:
        return exc
    written = dotted(exc.key)
    if not any(o.lstrip("+~").split("=", 1)[0] == written for o in overrides):
        return exc
    parent = exc.key.rpartition(".")[0]
    allowed = exc.allowed.replace(parent + ".", dotted(parent) + ".") if parent else exc.allowed
    return ConfigError(written, exc.value, allowed)


def _unknown_everywhere(key: str, probe: str, combos: list[list[str]]) -> Any:
    """The 'unknown key' error for ``key`` if every composed variant's schema refuses it, else None."""
    from llmsim.config import load_experiment_config
    from llmsim.errors import ConfigError

    first = None
    for combo in combos:
        try:
            load_experiment_config(experiment_container(_compose([*combo, probe])))
        except ConfigError as exc:
            if dotted(exc.key) == key and exc.allowed.startswith("unknown key"):
                first = first or exc
                continue
        return None  # this variant knows the key (its value may still be wrong: that job says so)
    return first


def _check_sweep_keys(rewritten: list[str], missing: list[str]) -> None:
    """A key missing from the YAML that no swept variant's schema knows stops the sweep before any job."""
    if not missing:
        return
    parsed = _parse(rewritten)
    combos = _group_combinations(parsed)
    for key in missing:
        override = next(p for p in reversed(parsed) if p.key_or_group == key)
        probe = f"++{key}={_values(override)[0]}"
        error = _unknown_everywhere(key, probe, combos)
        if error is not None:
            raise _as_written(error, [probe])


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
        _check_sweep_keys(rewritten, missing)
        return [*flags, *rewritten, *hydra_args]
    cfg = _compose(rewritten)
    try:
        ExperimentOrchestrator(experiment_container(cfg), output_dir=None).setup_simulation()
    except LLMSimError as exc:
        raise _as_written(exc, overrides) from None
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
    return {k: v for k, v in container.items() if k not in ("hydra", *RUN_CONTROL_KEYS)}


def run(cfg: DictConfig | dict[str, Any], output_dir: str | Path, *, in_sweep: bool = False) -> dict[str, Any]:
    """Run one experiment from a composed config and write its outputs into ``output_dir``.

    In a sweep the job prints one line instead of the table and shows no progress bar.
    """
    from llmsim.orchestrator import ExperimentOrchestrator

    orchestrator = ExperimentOrchestrator(experiment_container(cfg), output_dir=output_dir)
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
