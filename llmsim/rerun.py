"""``python -m llmsim.rerun RUN_DIR [--out DIR]``: run a finished run's exact config again and check its metrics.

Reads ``RUN_DIR/.hydra/config.yaml`` (the composed config Hydra saved), simulates it into ``--out``
(default ``RUN_DIR/rerun``) and compares the new ``summary.json`` with the original: exit code 0
when every metric is identical, 1 when something differs (listed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from llmsim.cli import experiment_container
from llmsim.errors import LLMSimError
from llmsim.orchestrator import ExperimentOrchestrator


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Paths whose values differ between two summaries."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, path + "."))
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out


def rerun(run_dir: Path, out: Path) -> list[str]:
    """Simulate the run's saved config into ``out``; return the metric differences (empty: reproduced)."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.exists():
        raise LLMSimError(f"{run_dir}: no .hydra/config.yaml (not a run directory written by python -m llmsim)")
    config = experiment_container(OmegaConf.load(config_file))
    with contextlib.redirect_stdout(io.StringIO()):
        summary = ExperimentOrchestrator(config, output_dir=out).run(show_progress=False)
    original_file = run_dir / "summary.json"
    if not original_file.exists():
        return [f"{run_dir}: no summary.json to compare with (the original run did not finish)"]
    original = json.loads(original_file.read_text())
    return differences(original.get("frameworks", {}), summary["frameworks"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m llmsim.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="output directory of the rerun (default RUN_DIR/rerun)")
    args = parser.parse_args(argv)
    try:
        diffs = rerun(args.run_dir, args.out or args.run_dir / "rerun")
    except LLMSimError as exc:
        print(f"llmsim: error: {exc}", file=sys.stderr)
        return 2
    if diffs:
        print(f"NOT reproduced: {len(diffs)} metric(s) differ")
        for line in diffs[:50]:
            print("  " + line)
        return 1
    print(f"reproduced: every metric of {args.run_dir} is identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
