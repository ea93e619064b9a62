"""``run.json``: what a run directory needs to say how it was made and whether it succeeded."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from llmsim.outputs import write_json

RUN_FILE = "run.json"
KEY_PACKAGES = ("hydra-core", "omegaconf", "simpy", "numpy", "pandas", "pyarrow", "pydantic", "joblib")
REPO = Path(__file__).resolve().parent.parent


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the resolved experiment config (Hydra's own settings excluded)."""
    payload = {k: v for k, v in config.items() if k not in ("hydra", "resume", "overwrite")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has local changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results."""
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def base_run_info(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Everything about a run that is known before it starts."""
    from llmsim import __version__

    simulation = config.get("simulation") or {}
    workload = config.get("workload") or {}
    return {
        "llmsim_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "overrides": list(overrides),
        "seed": simulation.get("random_seed"),
        "workload_seed": workload.get("random_seed")
        if workload.get("random_seed") is not None
        else simulation.get("random_seed"),
        "config_hash": config_hash(config),
        "status": "running",
    }


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """Write ``run.json`` atomically, keeping the ``outputs`` it lists already (unless ``info`` has its own)."""
    if "outputs" not in info:
        previous = read_run_info(run_dir)
        if isinstance(previous, dict) and isinstance(previous.get("outputs"), dict):
            info = {**info, "outputs": previous["outputs"]}
    write_json(run_dir / RUN_FILE, info)


def record_outputs(run_dir: Path, written: dict[str, Path]) -> None:
    """Add the files a run wrote to ``run.json``'s ``outputs`` (result name -> path, relative to the run
    directory when inside it): the record of what llmsim wrote there, and may therefore replace."""
    import os

    info = read_run_info(run_dir)
    info = info if isinstance(info, dict) else {}
    outputs = dict(info.get("outputs") or {}) if isinstance(info.get("outputs"), dict) else {}
    base = os.path.realpath(run_dir)
    for name, path in written.items():
        real = os.path.realpath(path)
        outputs[name] = os.path.relpath(real, base) if real.startswith(base.rstrip(os.sep) + os.sep) else real
    info["outputs"] = outputs
    write_json(run_dir / RUN_FILE, info)


def output_path(run_dir: Path, info: dict[str, Any] | None, name: str, default: str) -> Path | None:
    """Where a run wrote its result ``name`` (``summary``, ``requests``...), from ``run.json``'s ``outputs``.

    A run.json from before outputs were listed gives ``run_dir/default``; one that lists outputs but
    not this one gives None (the run did not write it).
    """
    outputs = info.get("outputs") if isinstance(info, dict) else None
    if not isinstance(outputs, dict):
        return run_dir / default
    value = outputs.get(name)
    return run_dir / value if isinstance(value, str) else None


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    """``run.json`` of a run directory, or None when missing or unreadable."""
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


#: where a sweep job that cannot write into its own directory records its failure (in the sweep directory)
FAILED_DIR = Path(".llmsim") / "failed"


def job_failure_file(job_dir: Path) -> Path:
    """``<sweep dir>/.llmsim/failed/<job name>.json``: the failure of a job whose own directory is not writable."""
    return job_dir.parent / FAILED_DIR / f"{job_dir.name}.json"


def record_job_failure(job_dir: Path, overrides: list[str], error: str) -> None:
    """Record beside the job (in its sweep directory) that it failed and why; aggregation reads it."""
    write_json(job_failure_file(job_dir), {"status": "failed", "error": error, "overrides": list(overrides)})


def clear_job_failure(job_dir: Path) -> None:
    """Forget an earlier attempt's failure record (a new attempt of the job is starting)."""
    job_failure_file(job_dir).unlink(missing_ok=True)


def read_job_failure(job_dir: Path) -> dict[str, Any] | None:
    """The failure recorded for a job whose own directory could not be written, or None."""
    try:
        record = json.loads(job_failure_file(job_dir).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
