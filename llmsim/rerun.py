"""``python -m llmsim.rerun RUN_DIR [--out DIR]``: run a finished run's exact config again and check its metrics.

Reads ``RUN_DIR/.hydra/config.yaml`` (the composed config Hydra saved), simulates it into a fresh
directory of its own, ``--out`` (default ``outputs/reruns/<date>/<time>-<run name>`` under the current
directory; never RUN_DIR itself, nor wherever the saved config's output paths point) and compares the
new summary with the original: exit code 0 when every metric is identical, 1 when something differs
(listed), 2 when RUN_DIR is not a finished run or ``--out`` is not new (one line on stderr).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llmsim.cli import experiment_container
from llmsim.entrypoint import ArgumentParser, run_entry_point
from llmsim.errors import ConfigError, one_line
from llmsim.orchestrator import ExperimentOrchestrator
from llmsim.runinfo import output_path, read_run_info


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


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            "run_dir", str(path.parent), f"a run whose {path.name} reads as JSON ({one_line(str(exc))})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("frameworks"), dict):
        raise ConfigError("run_dir", str(path.parent), f"a run whose {path.name} has a 'frameworks' table")
    return data


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The experiment config a run directory's ``.hydra/config.yaml`` saved (one-line error if it cannot)."""
    if not run_dir.is_dir():
        raise ConfigError(
            "run_dir", str(run_dir), "an existing run directory" if not run_dir.exists() else "a directory"
        )
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        hint = "a run directory written by python -m llmsim (it has .hydra/config.yaml)"
        if (run_dir / "multirun.yaml").exists():
            hint += "; this is a sweep: pass one of its job directories"
        raise ConfigError("run_dir", str(run_dir), hint)
    try:
        loaded = OmegaConf.load(config_file)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError(
            "run_dir", str(run_dir), f"a run whose .hydra/config.yaml is valid YAML ({one_line(str(exc))})"
        ) from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError("run_dir", str(run_dir), "a run whose .hydra/config.yaml is a mapping of config groups")
    return experiment_container(loaded)


def rerun(run_dir: Path, out: Path) -> list[str]:
    """Simulate the run's saved config into ``out``; return the metric differences (empty: reproduced).

    A directory that is not a finished run (no ``.hydra/config.yaml``, no readable ``summary.json``)
    is a one-line :class:`~llmsim.errors.ConfigError`, raised before anything is simulated.
    """
    config = saved_config(run_dir)
    original_file = output_path(run_dir, read_run_info(run_dir), "summary", "summary.json")
    if original_file is None or not original_file.is_file():
        raise ConfigError("run_dir", str(run_dir), "a finished run: it has no summary.json to compare with")
    original = _load_json(original_file)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", str(out), "a new or empty directory (a rerun never writes over other files)")
    with contextlib.redirect_stdout(io.StringIO()):
        summary = ExperimentOrchestrator(inside(config, out), output_dir=out).run(show_progress=False)
    return differences(original.get("frameworks", {}), summary["frameworks"])


def inside(config: dict[str, Any], out: Path) -> dict[str, Any]:
    """The config with every output it asks for written under its own name in ``out`` (not where it says)."""
    names = {
        "output_summary_json_path": "summary.json",
        "output_requests_parquet_path": "requests.parquet",
        "output_requests_csv_path": "requests.csv",
        "output_steps_parquet_path": "steps.parquet",
    }
    config = dict(config)
    for key in ("metrics", "metrics_config"):
        if not isinstance(config.get(key), dict):
            continue
        metrics = dict(config[key])
        for name, file_name in names.items():
            if metrics.get(name):
                metrics[name] = file_name
        metrics["output_summary_json_path"] = "summary.json"
        metrics.pop("allow_outside_run_dir", None)
        config[key] = metrics
    if isinstance(config.get("experiment"), dict):  # a seed-layout preset (experiment=seed_example)
        config["experiment"] = inside(config["experiment"], out)
    return config


def default_out(run_dir: Path) -> Path:
    """``outputs/reruns/<date>/<time>-<run name>`` in the current directory (a new name each time)."""
    from datetime import datetime

    now = datetime.now()
    base = (
        Path("outputs") / "reruns" / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}-{run_dir.resolve().name}"
    )
    out, number = base, 1
    while out.exists():
        number += 1
        out = base.with_name(f"{base.name}-{number}")
    return out


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m llmsim.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--out", type=Path, help="a new directory for the rerun's outputs (default outputs/reruns/<date>/<time>-<run>)"
    )
    args = parser.parse_args(argv)
    out = args.out or default_out(args.run_dir)
    diffs = rerun(args.run_dir, out)
    print(f"rerun written to {out}")
    if diffs:
        print(f"NOT reproduced: {len(diffs)} metric(s) differ")
        for line in diffs[:50]:
            print("  " + line)
        return 1
    print(f"reproduced: every metric of {args.run_dir} is identical")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: a user mistake ends in one line on stderr and exit status 2."""
    return run_entry_point(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
