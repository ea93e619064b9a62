"""Command-line glue: one-line errors before anything runs, and one ``run(cfg)`` for Hydra jobs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from llmsim.errors import LLMSimError
from llmsim.models import CONF_DIR

log = logging.getLogger("llmsim")

CONFIG_GROUPS = ("hardware", "model", "workload", "framework", "metrics", "simulation", "experiment")


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Options of a config group: its YAML file names."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_overrides(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """``framework=nope`` -> one-line ConfigError listing the options (also for sweep lists a,b,c)."""
    from llmsim.errors import ConfigError

    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        group = key.split("@")[0]
        if group not in CONFIG_GROUPS or value in ("", "null"):
            continue
        options = group_options(group, conf_dir)
        choices = value[len("choice(") : -1] if value.startswith("choice(") and value.endswith(")") else value
        for choice in choices.split(","):
            choice = choice.strip()
            if choice not in options:
                raise ConfigError(group, choice, f"one of {', '.join(options)}")


def preflight(args: list[str]) -> None:
    """Validate the command line before Hydra starts: config groups, then (single runs) the whole config.

    A user mistake raises :class:`LLMSimError` with one line; nothing is written.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from llmsim.errors import ConfigError
    from llmsim.orchestrator import ExperimentOrchestrator

    check_group_overrides(args)
    if any(a.startswith("-") for a in args):
        return  # --multirun, --config-path and friends: Hydra validates, each job validates itself
    overrides = [a for a in args if not a.startswith("hydra.") and not a.startswith("hydra/")]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="llmsim"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError("override", " ".join(overrides), message) from None
    ExperimentOrchestrator(OmegaConf.to_container(cfg, resolve=True), output_dir=None).setup_simulation()


def run(cfg: DictConfig | dict[str, Any], output_dir: str | Path) -> dict[str, Any]:
    """Run one experiment from a composed config and write its outputs into ``output_dir``."""
    from llmsim.orchestrator import ExperimentOrchestrator

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    orchestrator = ExperimentOrchestrator(container, output_dir=output_dir)
    return orchestrator.run()


def report_error(exc: BaseException) -> None:
    """Print a user error as one line on stderr."""
    print(f"llmsim: error: {exc}", file=sys.stderr)


def is_user_error(exc: BaseException) -> bool:
    """Errors that get one line and no traceback."""
    return isinstance(exc, LLMSimError)
