"""SimulationEnvironment: a ``simpy.Environment`` with the run's stop conditions."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import simpy

from llmsim.config import SimulationConfig


class SimulationEnvironment:
    """Owns the SimPy clock; the run ends when work is done or ``max_simulation_time`` is reached."""

    def __init__(self, simulation_config: SimulationConfig) -> None:
        self.config = simulation_config
        self.env = simpy.Environment()
        self.work_done = self.env.event()
        self.stopped_by_time_limit = False

    def get_simpy_env(self) -> simpy.Environment:
        """The underlying SimPy environment."""
        return self.env

    def schedule_process(self, process_fn: Callable[[], Generator[Any, Any, Any]]) -> simpy.Process:
        """Start a SimPy process from a generator function (or an already created generator)."""
        generator = process_fn() if callable(process_fn) else process_fn
        return self.env.process(generator)

    def signal_work_done(self) -> None:
        """Called when no request is left in flight and no more will arrive."""
        if not self.work_done.triggered:
            self.work_done.succeed()

    def run(self) -> float:
        """Advance until the work is done or the time limit; returns the simulated time reached."""
        limit = self.env.timeout(self.config.max_simulation_time)
        self.env.run(until=self.env.any_of([self.work_done, limit]))
        self.stopped_by_time_limit = not self.work_done.triggered
        return self.env.now

    def now(self) -> float:
        """Current simulated time in seconds."""
        return self.env.now
