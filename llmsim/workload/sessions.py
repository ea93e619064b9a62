"""Sampling the request stream: sessions (one or more conversation turns) with their send times.

Everything here depends only on the workload config and its seed, so every framework, hardware
or knob variant at the same workload sees exactly the same requests (common random numbers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from llmsim.config import ClientProfile, WorkloadConfig
from llmsim.distributions import Distribution
from llmsim.rng import stream_rng
from llmsim.workload.arrivals import ArrivalProcess, parse_rate_schedule, profile_arrival_process
from llmsim.workload.request import RequestSpec, shared_prompt_segment

#: Drawn token counts are held at most at this many tokens: longer than any model's context (such a
#: request is refused either way), and small enough that sums over a conversation never overflow int64.
MAX_DRAWN_TOKENS = 2**31

# Segment ids: prompt text of request r is 2r+1, its generated text 2r+2 (0 is never used); shared
# system prompt g of profile p is shared_prompt_segment(g, p) (negative).


@dataclass(frozen=True, slots=True)
class Session:
    """A conversation: its first turn is sent at ``start_time`` (open loop); later turns follow replies."""

    session_id: int
    start_time: float
    turns: tuple[RequestSpec, ...]


class SessionStream:
    """Sessions made one at a time, in send order, as the workload reaches them.

    Only their start times exist up front (``start_times``, one per session), so a run of a million
    requests does not hold a million request descriptions: those not sent yet are not made, and
    those answered are dropped with their requests. It can be iterated once.
    """

    def __init__(self, start_times: Sequence[float], sessions: Iterator[Session]) -> None:
        self.start_times = start_times
        self._sessions = sessions

    def __len__(self) -> int:
        return len(self.start_times)

    def __iter__(self) -> Iterator[Session]:
        return self._sessions


class SessionSampler:
    """Draws sessions for a workload, one independent random stream per purpose and profile."""

    def __init__(
        self,
        workload: WorkloadConfig,
        distributions: list[dict[str, Distribution | None]],
        seed: int,
        horizon_s: float | None = None,
    ):
        self.workload = workload
        self.dists = distributions
        self.seed = seed
        self.horizon_s = horizon_s  # the run stops then: open-loop sessions starting later are never built

    def _arrival_processes(self) -> list[ArrivalProcess]:
        """Each profile's arrival process; ``workload.rate`` or ``rate_schedule`` is split by weight."""
        workload = self.workload
        schedule = (
            parse_rate_schedule(workload.rate_schedule, "workload.rate_schedule") if workload.rate_schedule else None
        )
        total_weight = sum(p.weight for p in workload.client_profiles)
        processes = []
        for index, (profile, dists) in enumerate(zip(workload.client_profiles, self.dists, strict=True)):
            process = profile_arrival_process(
                dists["inter_arrival"], profile.weight, total_weight, workload.rate, workload.burstiness, schedule
            )
            # the key a degenerate process is reported under: what shaped its gaps
            if workload.burstiness is not None:
                key, value = "workload.burstiness", workload.burstiness
            elif dists["inter_arrival"] is not None:
                name = "inter_arrival_time_dist_config"
                key, value = f"workload.client_profiles[{index}].{name}", profile.inter_arrival_time_dist_config
            elif schedule is not None:
                key, value = "workload.rate_schedule", workload.rate_schedule
            else:
                key, value = "workload.rate", workload.rate
            processes.append(replace(process, key=key, value=value))
        return processes

    def open_loop_sessions(self) -> list[Session]:
        """Sessions whose first turns arrive by each profile's open-loop process."""
        return list(self.open_loop_stream())

    def open_loop_stream(self) -> SessionStream:
        """:meth:`open_loop_sessions`, made as they are reached."""
        starts: list[tuple[float, int]] = []
        duration = self.workload.total_duration
        if self.horizon_s is not None and (duration is None or duration > self.horizon_s):
            duration = self.horizon_s  # nothing starting after the run stops is ever sent: do not draw it
        for index, process in enumerate(self._arrival_processes()):
            rng = stream_rng(self.seed, "arrivals", index)
            times = process.times(duration, self.workload.num_requests, rng)
            starts.extend((float(t), index) for t in times)
        starts.sort()
        if self.workload.num_requests is not None:
            starts = starts[: self.workload.num_requests]
        return SessionStream([start for start, _ in starts], self._build(starts))

    def batch_sessions(self) -> list[Session]:
        """``num_requests`` sessions with profiles drawn by weight, all starting at t=0."""
        count = self.workload.num_requests or 0
        profiles = self.workload.client_profiles
        weights = np.array([p.weight for p in profiles], dtype=np.float64)
        rng = stream_rng(self.seed, "profile_choice")
        choice = (
            rng.choice(len(profiles), size=count, p=weights / weights.sum())
            if len(profiles) > 1
            else np.zeros(count, int)
        )
        return list(self._build([(0.0, i) for i in choice.tolist()]))

    def _build(self, starts: list[tuple[float, int]]) -> Iterator[Session]:
        """Attach lengths, streaming and follow-up turns to each (start time, profile index), in order."""
        counts: dict[int, int] = {}
        for _, index in starts:
            counts[index] = counts.get(index, 0) + 1
        # each profile's draws as plain lists, consumed in session order by cursors
        drawn = {index: self._draw_profile(index, count) for index, count in counts.items()}
        columns = {index: {name: values.tolist() for name, values in d.items()} for index, d in drawn.items()}
        cursor = dict.fromkeys(counts, 0)
        followup_cursor = dict.fromkeys(counts, 0)
        profiles = self.workload.client_profiles
        chunk_tokens = self.workload.stream_chunk_tokens
        next_request_id = 0
        for session_id, (start, index) in enumerate(starts):
            profile_name = profiles[index].profile_name
            d = columns[index]
            k = cursor[index]
            cursor[index] = k + 1
            prompt_len = d["prompt"][k]
            output_len = d["output"][k]
            streaming = d["streaming"][k]
            group = d["prefix_group"][k]
            history: tuple[tuple[int, int], ...] = ()
            history_tokens = 0
            if group >= 0:
                history_tokens = d["prefix_lengths"][group]
                history = ((shared_prompt_segment(group, index), history_tokens),)
            think = 0.0
            num_turns = 1 + d["extra_turns"][k]
            turns = []
            for turn in range(num_turns):
                if turn > 0:
                    j = followup_cursor[index]
                    followup_cursor[index] = j + 1
                    prompt_len = d["followup_prompt"][j]
                    output_len = d["followup_output"][j]
                    think = d["think"][j]
                rid = next_request_id
                next_request_id += 1
                spec = RequestSpec(
                    request_id=rid,
                    session_id=session_id,
                    turn=turn,
                    profile=profile_name,
                    prompt_tokens=history_tokens + prompt_len,
                    max_output_tokens=output_len,
                    streaming=streaming,
                    prompt_segments=(*history, (2 * rid + 1, prompt_len)),
                    output_segment=2 * rid + 2,
                    think_time_s=think,
                    stream_chunk_tokens=chunk_tokens,
                    output_reuse="never" if turn == num_turns - 1 else "after_finish",
                    private_prompt=not history,
                )
                turns.append(spec)
                # the next turn's prompt: this whole conversation so far, then its own new text
                history = (*spec.prompt_segments, (spec.output_segment, output_len))
                history_tokens += prompt_len + output_len
            yield Session(session_id, start, tuple(turns))

    def _draw_profile(self, index: int, count: int) -> dict[str, np.ndarray]:
        profile: ClientProfile = self.workload.client_profiles[index]
        dists = self.dists[index]
        rng = lambda name: stream_rng(self.seed, name, index)  # noqa: E731
        prompt = _tokens(dists["prompt"].sample(rng("prompt"), count))
        output = _tokens(dists["output"].sample(rng("output"), count))
        streaming = rng("streaming").random(count) < profile.streaming_response_probability
        p = profile.conversational_probability
        if dists.get("turns") is not None:
            turns = np.rint(dists["turns"].sample(rng("turns_per_session"), count))
            extra = np.clip(turns, 1, profile.max_conversation_turns).astype(np.int64) - 1
        elif p > 0:
            extra = np.minimum(
                rng("turns").geometric(1.0 - p, count) - 1 if p < 1 else np.full(count, 10**9),
                profile.max_conversation_turns - 1,
            )
        else:
            extra = np.zeros(count, dtype=np.int64)
        followups = int(extra.sum())
        groups = profile.shared_prefix_groups
        if groups and dists.get("shared_prefix") is not None:
            lengths = _tokens(dists["shared_prefix"].sample(rng("prefix_lengths"), groups))
            uses = rng("prefix_use").random(count) < profile.shared_prefix_fraction
            chosen = rng("prefix_group").integers(0, groups, count)
            prefix_group = np.where(uses, chosen, -1)
        else:
            lengths = np.zeros(0, dtype=np.int64)
            prefix_group = np.full(count, -1, dtype=np.int64)
        return {
            "prefix_group": prefix_group,
            "prefix_lengths": lengths,
            "prompt": prompt,
            "output": output,
            "streaming": streaming,
            "extra_turns": extra.astype(np.int64),
            "followup_prompt": _tokens(
                (dists.get("followup_prompt") or dists["prompt"]).sample(rng("followup_prompt"), followups)
            ),
            "followup_output": _tokens(dists["output"].sample(rng("followup_output"), followups)),
            "think": dists["think"].sample(rng("think"), followups).astype(np.float64),
        }


def _tokens(draws: np.ndarray) -> np.ndarray:
    """Drawn lengths as whole token counts from 1 to :data:`MAX_DRAWN_TOKENS` (a fraction is cut, as before)."""
    return np.clip(draws, 1, MAX_DRAWN_TOKENS).astype(np.int64)
