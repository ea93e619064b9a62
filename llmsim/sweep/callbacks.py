"""Hydra callbacks for sweeps: a jobs-done progress bar while it runs, its tables when it ends.

Callbacks run in the launching process whatever the launcher (joblib, Ray, submitit), while jobs
run elsewhere; progress is therefore read from the sweep directory itself: a job is done once its
``run.json`` says ``ok`` or ``failed``.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmsim.runinfo import read_run_info

log = logging.getLogger(__name__)


def count_done(sweep_dir: Path, wanted: set[frozenset[str]]) -> int:
    """Jobs of the sweep whose ``run.json`` has a final status."""
    done = 0
    if not sweep_dir.is_dir():
        return 0
    from llmsim.sweep.aggregate import read_overrides

    for path in sweep_dir.iterdir():
        overrides_file = path / ".hydra" / "overrides.yaml"
        info = read_run_info(path) if overrides_file.exists() else None
        if not isinstance(info, dict) or info.get("status") not in ("ok", "failed"):
            continue
        overrides = read_overrides(path)
        done += overrides is not None and frozenset(overrides) in wanted
    return done


class SweepProgress:
    """Polls a sweep directory in a thread and shows jobs done / total on stderr."""

    def __init__(self, sweep_dir: Path, interval_s: float = 0.5, enabled: bool | None = None) -> None:
        self.sweep_dir = sweep_dir
        self.interval = interval_s
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="llmsim-sweep-progress", daemon=True)

    def start(self) -> None:
        """Start polling (no-op when not on a terminal)."""
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        from llmsim.sweep.aggregate import expected_combinations

        progress = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("jobs done"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        with progress:
            task = progress.add_task("jobs", total=None)
            wanted: set[frozenset[str]] | None = None
            while not self._stop.wait(self.interval):
                if wanted is None:
                    try:
                        combos = expected_combinations(self.sweep_dir)
                    except Exception:  # multirun.yaml not written yet, or half-written
                        combos = None
                    if combos is None:
                        continue
                    wanted = set(combos)
                    progress.update(task, total=len(wanted))
                progress.update(task, completed=count_done(self.sweep_dir, wanted))


def check_sweep_dir(config: DictConfig) -> None:
    """Refuse a relative ``hydra.sweep.dir`` when jobs run on an existing Ray cluster.

    Ray's workers there resolve a relative path in their own working directory, on their own node:
    the job directories would be scattered while the tables are built here from an empty folder.
    """
    import os

    from llmsim.errors import ConfigError

    launcher = config.hydra.launcher
    if not str(OmegaConf.select(launcher, "_target_", default="")).startswith("hydra_plugins.hydra_ray_launcher."):
        return
    address = OmegaConf.select(launcher, "ray.init.address", default=None) or os.environ.get("RAY_ADDRESS")
    sweep_dir = str(config.hydra.sweep.dir)
    if address and address != "local" and not Path(sweep_dir).is_absolute():
        raise ConfigError(
            "hydra.sweep.dir",
            sweep_dir,
            f"an absolute path on storage every node of the Ray cluster at {address} shares",
        )


#: exit status of a sweep whose tables were written but some of whose jobs failed (or never finished)
FAILED_JOBS_EXIT = 3


def check_job_dirs_writable(sweep_dir: Path) -> None:
    """Refuse a sweep into a directory holding a job directory that Hydra itself could not write.

    Hydra saves each job's ``.hydra/*.yaml`` and opens its log before llmsim's code runs; if it
    cannot, the whole sweep stops with a traceback. A job directory that is read-only while its
    ``.hydra`` folder and log are writable is handled per job instead (recorded as failed).
    """
    import os
    import tempfile

    from llmsim.errors import ConfigError

    if not sweep_dir.is_dir():
        return
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()):
        log_files = list(job.glob("*.log"))
        try:
            with tempfile.TemporaryFile(dir=job / ".hydra"):
                pass
            for log_file in log_files:  # Hydra appends to the job's log: open it so, writing nothing
                os.close(os.open(log_file, os.O_WRONLY | os.O_APPEND))
            if not log_files:
                with tempfile.TemporaryFile(dir=job):
                    pass
        except OSError as exc:
            raise ConfigError(
                "hydra.sweep.dir",
                str(sweep_dir),
                f"a directory whose job directories can be written: {job.name} cannot "
                f"({exc.strerror or exc}); make it writable or move it away",
            ) from None


OUTPUT_KEYS = (
    "output_summary_json_path",
    "output_requests_parquet_path",
    "output_requests_csv_path",
    "output_steps_parquet_path",
)


def check_shared_outputs(config: DictConfig) -> None:
    """Refuse, before any job starts, an absolute output path set for the whole sweep: every job would
    write that one file (each job refuses any path outside its own directory; this says it once)."""
    from llmsim.errors import ConfigError

    for prefix in ("metrics", "experiment.metrics_config"):
        for name in OUTPUT_KEYS:
            key = f"{prefix}.{name}"
            node = OmegaConf.select(config, prefix, default=None)
            if not isinstance(node, DictConfig) or name not in node:
                continue
            value = OmegaConf.to_container(node, resolve=False).get(name)  # type: ignore[union-attr]
            if isinstance(value, str) and "${" not in value and Path(value).is_absolute():
                raise ConfigError(
                    key,
                    value,
                    f"in a --multirun sweep a path inside the job's directory (every job would write {value})",
                )


class SweepTablesCallback(Callback):
    """Locks the sweep directory, shows progress during a sweep and runs
    :func:`llmsim.sweep.aggregate.aggregate` at its end; exits with :data:`FAILED_JOBS_EXIT` when a job failed."""

    def __init__(self, progress: bool | None = None) -> None:
        self.progress_enabled = progress
        self._progress: SweepProgress | None = None
        self._lock: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Hydra ships its callbacks to every job worker: the progress thread and the lock stay here.
        return {"progress_enabled": self.progress_enabled, "_progress": None, "_lock": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the sweep directory suits the launcher and that no other sweep runs into it, lock it,
        then start the progress display."""
        from llmsim.cli import report_error
        from llmsim.errors import ConfigError
        from llmsim.sweep.lock import SweepLock, sweep_id

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            check_sweep_dir(config)
            check_shared_outputs(config)
            check_job_dirs_writable(sweep_dir)
            overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
            name = str(OmegaConf.select(config, "hydra.job.config_name", default="") or "")
            lock = SweepLock(sweep_dir, sweep_id(name, overrides))
            lock.acquire()
        except ConfigError as exc:  # Hydra turns a callback's exception into a warning: stop here
            report_error(exc)
            sys.exit(2)
        except OSError as exc:
            report_error(f"hydra.sweep.dir={sweep_dir}: cannot write there: {exc.strerror or exc}")
            sys.exit(2)
        self._lock = lock
        self._progress = SweepProgress(sweep_dir, enabled=self.progress_enabled)
        self._progress.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Aggregate the sweep directory, print a short report, unlock; a failed job makes the exit status 3."""
        from llmsim.sweep.aggregate import aggregate, describe

        if self._progress is not None:
            self._progress.stop()
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            try:
                tables = aggregate(sweep_dir)
            except Exception as exc:  # the jobs' own outputs stay; aggregation can be rerun by hand
                log.error(
                    "could not aggregate %s: %s (run python -m llmsim.aggregate %s)",
                    sweep_dir,
                    " ".join(str(exc).split()),
                    sweep_dir,
                )
                sys.exit(FAILED_JOBS_EXIT)
            print(describe(tables, sweep_dir), flush=True)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
        if len(tables.failed) or tables.skipped or tables.never_started:
            sys.exit(FAILED_JOBS_EXIT)
