"""Progress of a single run in simulated time (a SimPy process that ticks, not an event per token)."""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

import simpy


class SimulationProgress:
    """A progress bar of simulated seconds against the expected horizon, with requests completed.

    Disabled, it is inert (and rich is not even imported).
    """

    def __init__(self, horizon_s: float, enabled: bool | None = None, ticks: int = 200) -> None:
        self.horizon = max(horizon_s, 1e-9)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.interval = self.horizon / ticks
        self.progress: Any = None
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]simulating"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s simulated"),
            TextColumn("{task.fields[done]} requests done"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("sim", total=self.horizon, done=0)

    def process(self, env: simpy.Environment, done_count: Any) -> Generator[simpy.Event, Any, None]:
        """SimPy process: update the bar every ``horizon / ticks`` simulated seconds."""
        while True:
            self.progress.update(self.task, completed=min(env.now, self.horizon), done=done_count())
            yield env.timeout(self.interval)

    def __enter__(self) -> SimulationProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
