"""Request streams for the lockstep conformance suite, and the token ids both sides see.

A :class:`Stream` is what a benchmark client would send: per request an arrival time, a prompt
length, an output length (always generated in full: ``ignore_eos``), optionally a shared-prefix
group and a conversation (session) it continues. The same stream is written as an llmsim trace
(:func:`write_trace`) and turned into token ids for the real vLLM scheduler (:func:`token_ids`),
following llmsim's content model (``llmsim.workload.trace``): a group's requests start with the
same shared prompt, and a turn of a session starts with the previous turn's prompt and answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

#: token ids drawn below Llama-3's special tokens, so no end-of-sequence token is ever sampled
VOCAB_SAFE = 128000


@dataclass(frozen=True)
class Req:
    """One request of a stream (times in seconds from the first request)."""

    rid: int
    arrival: float
    prompt: int
    output: int
    group: int = -1  #: shared-prefix group (-1: none)
    prefix: int = 0  #: leading prompt tokens taken from the group's shared prompt
    session: int = -1  #: conversation this turn belongs to (-1: none)


@dataclass(frozen=True)
class Scenario:
    """A stream and the engine knobs both schedulers run it with."""

    name: str
    description: str
    requests: tuple[Req, ...]
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    num_gpu_blocks: int | None = None  #: None: llmsim's memory plan for the GPU
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True


def _poisson_times(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    gaps = rng.exponential(1.0 / rate, n)
    gaps[0] = 0.0  # trace times are relative to the first request
    return np.cumsum(gaps)


def _poisson(seed: int) -> Scenario:
    t = _poisson_times(np.random.default_rng(seed + 1), 200, 5.0)
    reqs = tuple(Req(i, float(t[i]), 512, 128) for i in range(200))
    return Scenario("poisson", "200 requests, Poisson 5 req/s, prompt 512, output 128", reqs)


def _burst_requests(seed: int, n: int = 300) -> tuple[Req, ...]:
    rng = np.random.default_rng(seed + 2)
    prompts, outputs = rng.integers(100, 2001, n), rng.integers(50, 501, n)
    return tuple(Req(i, 0.0, int(prompts[i]), int(outputs[i])) for i in range(n))


def _burst(seed: int) -> Scenario:
    return Scenario("burst", "300 requests at t=0, prompt U[100,2000], output U[50,500]", _burst_requests(seed))


def _kv_pressure(seed: int) -> Scenario:
    return Scenario(
        "kv_pressure", "the burst with 2000 KV blocks: preemptions", _burst_requests(seed), num_gpu_blocks=2000
    )


def _shared_prefix(seed: int) -> Scenario:
    t = _poisson_times(np.random.default_rng(seed + 4), 200, 10.0)
    reqs = tuple(Req(i, float(t[i]), 1224, 128, group=0, prefix=1024) for i in range(200))
    return Scenario("shared_prefix", "200 requests, Poisson 10 req/s, shared 1024-token prompt + 200 own", reqs)


def _shared_prefix_burst(seed: int) -> Scenario:
    reqs = tuple(Req(i, 0.0, 1224, 128, group=0, prefix=1024) for i in range(100))
    return Scenario("shared_prefix_burst", "100 requests at t=0 sharing a 1024-token prompt", reqs)


def _long_prompts(seed: int) -> Scenario:
    t = _poisson_times(np.random.default_rng(seed + 5), 100, 2.0)
    reqs = tuple(Req(i, float(t[i]), 6000, 256) for i in range(100))
    return Scenario("long_prompts", "100 requests, Poisson 2 req/s, prompt 6000, output 256", reqs)


def _conversations(rng: np.random.Generator, sessions: int, first_rid: int, start: float) -> list[Req]:
    """Multi-turn chats: each turn's prompt is the previous turn's prompt and answer plus a new message;
    the next turn is sent well after the previous one could finish (think time), as a chat client does."""
    out: list[Req] = []
    rid = first_rid
    for s in range(sessions):
        t = start + float(rng.uniform(0.0, 2.0))
        context = 0
        for turn in range(int(rng.integers(2, 6))):
            message = int(rng.integers(20, 400))
            answer = int(rng.integers(20, 300))
            group = 0 if turn == 0 and s % 2 == 0 else -1  # half the chats open with the shared system prompt
            prefix = 256 if group == 0 else 0
            prompt = context + message + prefix
            out.append(Req(rid, t, prompt, answer, group=group, prefix=prefix, session=s))
            rid += 1
            context = prompt + answer
            t += float(rng.uniform(8.0, 15.0))
    return out


def _multi_turn(seed: int) -> Scenario:
    rng = np.random.default_rng(seed + 6)
    reqs = sorted(_conversations(rng, 60, 0, 0.0), key=lambda r: (r.arrival, r.rid))
    return Scenario("multi_turn", "60 chats of 2-5 turns: each turn reuses the conversation so far", _renumber(reqs))


def _max_num_seqs_binding(seed: int) -> Scenario:
    rng = np.random.default_rng(seed + 7)
    t = _poisson_times(rng, 150, 20.0)
    prompts, outputs = rng.integers(50, 400, 150), rng.integers(100, 400, 150)
    reqs = tuple(Req(i, float(t[i]), int(prompts[i]), int(outputs[i])) for i in range(150))
    return Scenario("max_num_seqs_8", "150 short requests at 20 req/s, at most 8 running", reqs, max_num_seqs=8)


def _no_prefix_caching(seed: int) -> Scenario:
    base = _shared_prefix_burst(seed)
    return replace(
        base,
        name="no_prefix_caching",
        description="the shared-prefix burst, prefix caching off",
        enable_prefix_caching=False,
    )


def _block_size_32(seed: int) -> Scenario:
    rng = np.random.default_rng(seed + 8)
    t = _poisson_times(rng, 200, 15.0)
    prompts, outputs = rng.integers(100, 1500, 200), rng.integers(50, 400, 200)
    reqs = tuple(Req(i, float(t[i]), int(prompts[i]), int(outputs[i]), group=i % 3, prefix=96) for i in range(200))
    return Scenario(
        "block_size_32",
        "200 requests in 3 prefix groups, 32-token blocks, 1200 blocks",
        reqs,
        block_size=32,
        num_gpu_blocks=1200,
    )


def _partial_prefills(seed: int) -> Scenario:
    rng = np.random.default_rng(seed + 9)
    n = 80
    t = np.sort(rng.uniform(0.0, 2.0, n))
    t -= t[0]
    prompts, outputs = rng.integers(300, 5000, n), rng.integers(10, 120, n)
    reqs = tuple(Req(i, float(t[i]), int(prompts[i]), int(outputs[i])) for i in range(n))
    return Scenario(
        "partial_prefills",
        "80 prompts of 300-5000 tokens within 2 s, 1024-token budget: many chunked at once",
        reqs,
        max_num_batched_tokens=1024,
    )


def _mixed(seed: int) -> Scenario:
    """Everything at once, drawn from the seed: Poisson and burst arrivals, lognormal lengths, prefix
    groups, conversations, a tight KV cache (preemptions) and knobs that vary with the seed."""
    rng = np.random.default_rng(seed + 10)
    reqs: list[Req] = []
    n = 150
    t = _poisson_times(rng, n, float(rng.uniform(5.0, 20.0)))
    prompts = np.clip(rng.lognormal(6.0, 1.0, n), 8, 6000).astype(int)
    outputs = np.clip(rng.lognormal(4.5, 0.8, n), 1, 800).astype(int)
    for i in range(n):
        group = int(rng.integers(0, 3)) if rng.random() < 0.4 else -1
        prefix = 300 + 100 * group if group >= 0 else 0
        reqs.append(Req(i, float(t[i]), int(prompts[i]) + prefix, int(outputs[i]), group=group, prefix=prefix))
    burst_at = float(t[n // 2])
    burst = rng.integers(40, 1200, 40)
    reqs += [Req(n + j, burst_at, int(burst[j]), int(rng.integers(20, 300))) for j in range(40)]
    reqs += _conversations(rng, 15, n + 40, float(t[n // 4]))
    reqs.sort(key=lambda r: (r.arrival, r.rid))
    return Scenario(
        "mixed",
        "Poisson + burst + prefix groups + chats, tight KV cache, knobs drawn from the seed",
        _renumber(reqs),
        max_num_seqs=int(rng.choice([16, 64, 256])),
        max_num_batched_tokens=int(rng.choice([512, 1024, 2048, 4096])),
        block_size=int(rng.choice([16, 32])),
        num_gpu_blocks=int(rng.integers(900, 2500)),
    )


def _renumber(reqs: list[Req]) -> tuple[Req, ...]:
    """Request ids in send order (llmsim numbers trace rows in order), times from the first request
    (a trace's times are taken relative to its first row)."""
    start = reqs[0].arrival if reqs else 0.0
    return tuple(replace(r, rid=i, arrival=r.arrival - start) for i, r in enumerate(reqs))


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "poisson": _poisson,
    "burst": _burst,
    "kv_pressure": _kv_pressure,
    "shared_prefix": _shared_prefix,
    "shared_prefix_burst": _shared_prefix_burst,
    "long_prompts": _long_prompts,
    "multi_turn": _multi_turn,
    "max_num_seqs_8": _max_num_seqs_binding,
    "no_prefix_caching": _no_prefix_caching,
    "block_size_32": _block_size_32,
    "partial_prefills": _partial_prefills,
    "mixed": _mixed,
}


def write_trace(scenario: Scenario, path: Path) -> None:
    """The stream as an llmsim trace CSV (times printed exactly, with ``repr``)."""
    lines = ["arrival_time,input_tokens,output_tokens,session_id,prefix_group,prefix_tokens"]
    for r in scenario.requests:
        session = "" if r.session < 0 else f"s{r.session}"
        group = "" if r.group < 0 else f"g{r.group}"
        prefix = "" if r.group < 0 else str(r.prefix)
        lines.append(f"{r.arrival!r},{r.prompt},{r.output},{session},{group},{prefix}")
    path.write_text("\n".join(lines) + "\n")


def token_ids(scenario: Scenario, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt token ids and the output ids each request will be given, in request order.

    Group prefixes are identical across a group; a session's turn begins with the previous turn's
    prompt and output (cut to the turn's prompt length); everything else is random per request.
    """
    rng = np.random.default_rng(seed + 1000)
    shared: dict[int, np.ndarray] = {}
    history: dict[int, list[int]] = {}
    prompts: list[list[int]] = []
    outputs: list[list[int]] = []
    for r in scenario.requests:
        context: list[int] = []
        if r.session >= 0 and r.session in history:
            context = history[r.session][: r.prompt]
        elif r.group >= 0:
            if r.group not in shared or len(shared[r.group]) < r.prefix:
                shared[r.group] = rng.integers(0, VOCAB_SAFE, max(r.prefix, 1))
            context = shared[r.group][: r.prefix].tolist()
        own = rng.integers(0, VOCAB_SAFE, r.prompt - len(context)).tolist()
        prompt = context + own
        output = rng.integers(0, VOCAB_SAFE, r.output).tolist()
        if r.session >= 0:
            history[r.session] = prompt + output
        prompts.append(prompt)
        outputs.append(output)
    return prompts, outputs
