"""One sweep at a time in a sweep directory (identical sweeps may share it).

Two different sweeps into one ``hydra.sweep.dir`` would overwrite each other's ``multirun.yaml`` and
aggregate each other's jobs. Each sweep therefore holds a lock (``filelock``, an OS lock the system
releases when the process ends, however it ends) on a file of its own,
``<sweep dir>/.llmsim/sweeps/<sweep id>-<pid>.lock``, for as long as it runs. The sweep id is a hash
of what decides its jobs: the config name and the command-line overrides (sweep lists included;
``resume``, ``overwrite`` and the ``hydra.*`` settings such as ``n_jobs`` left out). A sweep that starts while a sweep with another id
holds its lock is refused with one line; a sweep with the same id goes ahead (its jobs are the same
and resume or overwrite each other's files atomically with identical results). A short guard lock,
``<sweep dir>/.llmsim/sweeps.lock``, makes the check and the taking of the lock one step.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from filelock import FileLock, Timeout

from llmsim.errors import ConfigError

LOCK_DIR = Path(".llmsim") / "sweeps"
GUARD = Path(".llmsim") / "sweeps.lock"
#: seconds to wait for the guard lock (only held while a sweep checks the others)
GUARD_TIMEOUT_S = 60.0


#: overrides that change how a sweep runs, not which jobs it has
RUN_CONTROL = ("resume", "overwrite")


def sweep_id(config_name: str, overrides: list[str]) -> str:
    """What identifies a sweep: its config name and task overrides (order does not matter; ``resume``
    and ``overwrite`` left out)."""
    jobs = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in RUN_CONTROL]
    payload = json.dumps([config_name, sorted(jobs)])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class SweepLock:
    """The lock a running sweep holds on its directory (see the module docstring)."""

    def __init__(self, sweep_dir: Path, identity: str) -> None:
        self.sweep_dir = sweep_dir
        self.identity = identity
        self.path = sweep_dir / LOCK_DIR / f"{identity}-{os.getpid()}.lock"
        self._lock: FileLock | None = None

    def acquire(self) -> None:
        """Take the lock, or raise a ConfigError naming ``hydra.sweep.dir`` when another sweep runs there."""
        (self.sweep_dir / LOCK_DIR).mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(self.sweep_dir / GUARD, timeout=GUARD_TIMEOUT_S):
                for other in sorted((self.sweep_dir / LOCK_DIR).glob("*.lock")):
                    if other == self.path or other.name.startswith(f"{self.identity}-"):
                        continue
                    if _held(other):
                        raise ConfigError(
                            "hydra.sweep.dir",
                            str(self.sweep_dir),
                            "a directory no other sweep is running into: a different sweep (lock "
                            f"{other.name}) is; wait for it to end or choose another hydra.sweep.dir",
                        )
                    other.unlink(missing_ok=True)  # left by a sweep that ended without removing it
                lock = FileLock(self.path, timeout=0)
                lock.acquire()
                self._lock = lock
        except Timeout:
            raise ConfigError(
                "hydra.sweep.dir", str(self.sweep_dir), f"a directory whose {GUARD} can be locked (it stays locked)"
            ) from None

    def release(self) -> None:
        """Let go of the lock and remove its file."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
            self.path.unlink(missing_ok=True)


def _held(path: Path) -> bool:
    """Whether a live process holds the lock on ``path`` (tried without waiting)."""
    probe = FileLock(path, timeout=0, is_singleton=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False
