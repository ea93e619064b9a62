"""``python -m llmsim [overrides]``: run one experiment (or a ``--multirun`` sweep) with Hydra."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from llmsim.cli import is_user_error, preflight, report_error, run


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """One Hydra job: simulate, write outputs in the job's directory."""
    output_dir = HydraConfig.get().runtime.output_dir
    try:
        summary = run(cfg, output_dir)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        report_error(exc)
        sys.exit(2)
    first = next(iter(summary["frameworks"].values()))
    return float(first["output_throughput"])


def main() -> None:
    """Entry point: validate the command line, then hand over to Hydra."""
    try:
        preflight(sys.argv[1:])
    except Exception as exc:
        if not is_user_error(exc):
            raise
        report_error(exc)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
