"""Requests: the immutable content every framework sees, and one framework's copy with its state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# Segment ids name runs of token content: two requests share a KV block exactly when the block
# covers the same (segment, offset) pieces in the same order after the same prefix.
Segment = tuple[int, int]  # (segment id, number of tokens)


def shared_prompt_segment(group: int, profile: int = 0) -> int:
    """Segment id of shared system prompt ``group`` of client profile ``profile`` (negative).

    Ids start at -2: CPython hashes -1 like -2, and KV block hashes are built from segment ids.
    """
    return -(profile * 1_000_000 + group + 2)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """What a client sends: identical for every framework of an experiment (common random numbers)."""

    request_id: int
    session_id: int
    turn: int
    profile: str
    prompt_tokens: int
    max_output_tokens: int
    streaming: bool
    prompt_segments: tuple[Segment, ...]
    output_segment: int
    think_time_s: float = 0.0  # pause before this turn (turns after the first)
    stream_chunk_tokens: int = 1  # a streamed answer reaches the client in chunks of this many tokens
    # when a later request may contain this one's generated tokens (its KV blocks could be reused):
    # "never" (the last turn), "after_finish" (the next turn is sent once this answer is in) or
    # "any_time" (a trace replays the next turn at its own time, possibly while this one decodes)
    output_reuse: Literal["never", "after_finish", "any_time"] = "any_time"
    # True when no other request's prompt contains this prompt's content (a first turn made of its
    # own segment only): just its own later turns, or itself after a preemption, can reuse its blocks
    private_prompt: bool = False

    @property
    def token_segments(self) -> tuple[Segment, ...]:
        """Content of the whole sequence: the prompt, then the tokens the model will generate."""
        return (*self.prompt_segments, (self.output_segment, self.max_output_tokens))


class Request:
    """One framework's copy of a request: lifecycle timestamps and scheduler state."""

    __slots__ = (
        "spec",
        "framework_id",
        "send_time",
        "arrival_time",
        "on_done",
        # scheduler state
        "num_computed_tokens",
        "num_output_tokens",
        "blocks",
        "block_hashes",
        "num_hashed_blocks",
        "kv_state",
        "seq",
        "lazy_state",
        "num_cached_tokens",
        "preemptions",
        "status",
        "reason",
        # server-side times
        "first_scheduled_time",
        "first_token_time",
        "last_token_time",
        "finish_time",
        "first_chunk_time",
        "last_chunk_time",
        # client-side times
        "client_first_token_time",
        "client_completion_time",
        "extra",
    )

    def __init__(
        self,
        spec: RequestSpec,
        framework_id: str,
        send_time: float,
        arrival_time: float,
        on_done: Callable[[Request], None] | None = None,
    ) -> None:
        self.spec = spec
        self.framework_id = framework_id
        self.send_time = send_time
        self.arrival_time = arrival_time
        self.on_done = on_done
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.blocks: list[int] = []
        self.block_hashes: list[int] = []
        self.num_hashed_blocks = 0  # leading blocks already registered in the prefix cache
        self.kv_state: Any = None  # a KV mechanism's own per-request state (radix cache)
        self.seq = -1  # admission order among running requests (set each time it starts running)
        # while advanced lazily: its state when it joined; () once it may never join (frameworks/lazy_decode.py)
        self.lazy_state: tuple[int, ...] | None = None
        self.num_cached_tokens = -1  # prompt tokens found in the prefix cache at first admission
        self.preemptions = 0
        self.status = "queued"
        self.reason = ""
        self.first_scheduled_time = float("nan")
        self.first_token_time = float("nan")
        self.last_token_time = float("nan")
        self.finish_time = float("nan")
        self.first_chunk_time = float("nan")  # server time the first streamed chunk was complete
        self.last_chunk_time = float("nan")  # server time the latest streamed chunk was complete
        self.client_first_token_time = float("nan")
        self.client_completion_time = float("nan")
        self.extra: dict[str, Any] | None = None

    @property
    def prompt_len(self) -> int:
        """Prompt tokens."""
        return self.spec.prompt_tokens

    @property
    def num_tokens(self) -> int:
        """Tokens known so far: the prompt plus what has been generated."""
        return self.spec.prompt_tokens + self.num_output_tokens

    @property
    def max_tokens(self) -> int:
        """Length of the sequence once finished."""
        return self.spec.prompt_tokens + self.spec.max_output_tokens

    @property
    def is_finished(self) -> bool:
        """Whether every output token has been generated."""
        return self.num_output_tokens >= self.spec.max_output_tokens

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (
            f"Request(id={self.spec.request_id}, fw={self.framework_id}, computed={self.num_computed_tokens}, "
            f"out={self.num_output_tokens}/{self.spec.max_output_tokens}, status={self.status})"
        )
