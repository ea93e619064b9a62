"""Errors meant for people: one line naming the key, the bad value and what is allowed."""

from __future__ import annotations


class LLMSimError(Exception):
    """Base class for every error llmsim reports to a user without a traceback."""


class ConfigError(LLMSimError, ValueError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}={value!r} is not valid: {allowed}")


class CapacityError(LLMSimError, ValueError):
    """The model (or its KV cache) does not fit on the GPUs it was given."""


class SimulationError(LLMSimError, RuntimeError):
    """The simulation cannot make progress (for example a deadlock in a scheduler)."""
