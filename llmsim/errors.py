"""Errors meant for people: one line naming the key, the bad value and what is allowed."""

from __future__ import annotations

#: Longest rendering of a bad value in a message (longer ones are cut in the middle).
MAX_VALUE_CHARS = 120


def show_value(value: object) -> str:
    """``repr(value)`` on one line, shortened to :data:`MAX_VALUE_CHARS` characters."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    if len(text) > MAX_VALUE_CHARS:
        half = (MAX_VALUE_CHARS - 5) // 2
        text = f"{text[:half]} ... {text[-half:]}"
    return text


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


class LLMSimError(Exception):
    """Base class for every error llmsim reports to a user without a traceback."""


class ConfigError(LLMSimError, ValueError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}={show_value(value)} is not valid: {one_line(allowed)}")


class CapacityError(LLMSimError, ValueError):
    """The model (or its KV cache) does not fit on the GPUs it was given."""


class SimulationError(LLMSimError, RuntimeError):
    """The simulation cannot make progress (for example a deadlock in a scheduler)."""


class OutputError(LLMSimError):
    """A result file cannot be written (a directory in the way, no permission, a full disk)."""
