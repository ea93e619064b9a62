"""The small synthetic trace shipped for examples and tests, and the code that writes it.

``conf/workload/traces/sample_trace.csv`` is generated, not downloaded: regenerate it with
``python -m llmsim.workload sample-trace`` (the same seed always writes the same bytes). It holds
about 300 requests over two minutes in llmsim's own trace layout: bursty session starts, one in
three sessions a multi-turn conversation whose prompts carry the previous turns, and four shared
system prompts used by most sessions, so prefix caches have something to find.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmsim.workload.tables import REPO_ROOT

SAMPLE_TRACE = Path("conf/workload/traces/sample_trace.csv")
COLUMNS = ("arrival_time", "input_tokens", "output_tokens", "session_id", "prefix_group", "prefix_tokens")
SYSTEM_PROMPT_TOKENS = (384, 1024, 256, 640)  # the four shared system prompts
SYSTEM_PROMPT_POPULARITY = (0.4, 0.3, 0.2, 0.1)


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, size: int, low: int, high: int) -> np.ndarray:
    sigma_log = np.sqrt(np.log1p((sigma / mean) ** 2))
    values = rng.lognormal(np.log(mean) - sigma_log**2 / 2, sigma_log, size)
    return np.clip(np.rint(values), low, high).astype(np.int64)


def sample_trace_rows(seed: int = 2024, sessions: int = 180, duration_s: float = 120.0) -> list[tuple]:
    """Rows (time, input, output, session, group or None, prefix tokens or None), sorted by time."""
    rng = np.random.default_rng(seed)
    rate = sessions / duration_s
    starts = np.cumsum(rng.gamma(0.5, 1.0 / (rate * 0.5), sessions))  # burstiness 0.5
    turns = np.where(rng.random(sessions) < 1 / 3, rng.integers(2, 5, sessions), 1)
    uses_group = rng.random(sessions) < 0.7
    groups = rng.choice(len(SYSTEM_PROMPT_TOKENS), size=sessions, p=SYSTEM_PROMPT_POPULARITY)
    rows = []
    for session in range(sessions):
        group = int(groups[session]) if uses_group[session] else None
        prefix = SYSTEM_PROMPT_TOKENS[group] if group is not None else 0
        time = float(starts[session])
        context = prefix
        count = int(turns[session])
        user = _lognormal(rng, 220, 160, count, 8, 3000)
        answer = _lognormal(rng, 180, 120, count, 4, 1024)
        think = rng.exponential(8.0, count)
        for turn in range(count):
            prompt = context + int(user[turn])
            output = int(answer[turn])
            rows.append((round(time, 3), prompt, output, session + 1, group, prefix if group is not None else None))
            # the user reads the answer (about 25 ms a token plus 300 ms to first token), then types
            time += 0.3 + 0.025 * output + float(think[turn])
            context = prompt + output
    rows.sort(key=lambda row: (row[0], row[3]))
    return rows


def render_sample_trace(**kwargs: Any) -> str:
    """The CSV text of the sample trace."""
    lines = [",".join(COLUMNS)]
    for time, prompt, output, session, group, prefix in sample_trace_rows(**kwargs):
        group_text = "" if group is None else str(group)
        prefix_text = "" if prefix is None else str(prefix)
        lines.append(f"{time:.3f},{prompt},{output},{session},{group_text},{prefix_text}")
    return "\n".join(lines) + "\n"


def write_sample_trace(path: str | Path | None = None, **kwargs: Any) -> Path:
    """Write the sample trace (default: the shipped file in the checkout) and return its path."""
    target = Path(path) if path is not None else REPO_ROOT / SAMPLE_TRACE
    from llmsim.outputs import write_text

    write_text(target, render_sample_trace(**kwargs))
    return target
