"""``python -m llmsim [overrides]``: run one experiment (or a ``--multirun`` sweep) with Hydra."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from llmsim.cli import execute_job, is_user_error, preflight, report_error
from llmsim.sweep.naming import register_resolvers


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """One Hydra job: simulate, write outputs and ``run.json`` in the job's directory."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = execute_job(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), multirun=multirun)
    except Exception as exc:  # user errors get one line; anything else keeps its traceback
        if not is_user_error(exc):
            raise
        report_error(exc)
        sys.exit(2)
    if summary is None:
        return None
    errors = summary.get("framework_errors") or {}
    if errors and not multirun:  # the outputs are written; say which framework stopped and exit non-zero
        for message in errors.values():
            report_error(f"framework {message}")
        sys.exit(3)
    first = next(iter(summary["frameworks"].values()))
    return float(first["output_throughput"])


def main() -> None:
    """Entry point: validate the command line, then hand over to Hydra."""
    register_resolvers()
    try:
        sys.argv[1:] = preflight(sys.argv[1:])
    except Exception as exc:
        if not is_user_error(exc):
            raise
        report_error(exc)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
