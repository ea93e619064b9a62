"""Sessions, shared prefixes and closed loops: the loads where prefix caches and client behaviour matter."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import constant_profile, make_config
from scenario import run_quietly

from llmsim.config import load_experiment_config
from llmsim.errors import ConfigError
from llmsim.workload.sessions import SessionSampler


def sessions_of(workload: dict) -> list:
    config = load_experiment_config(make_config(workload=workload))
    sampler = SessionSampler(config.workload, config.distributions(), config.workload_seed)
    return sampler.open_loop_sessions() if config.workload.kind == "open_loop" else sampler.batch_sessions()


def test_conversation_follow_ups_find_the_previous_turns_in_the_prefix_cache():
    profile = constant_profile(
        200,
        60,
        conversational_probability=0.6,
        conversation_think_time_dist_config={"type": "Exponential", "rate": 1.0},
    )
    _, requests, _ = run_quietly(make_config(workload={"rate": 2, "total_duration": 30, "client_profiles": [profile]}))
    requests = requests.sort_values(["session_id", "turn"])
    previous = requests.groupby("session_id")[["prompt_tokens", "output_tokens"]].shift()
    history = (previous["prompt_tokens"] + previous["output_tokens"])[requests["turn"] > 0]
    assert len(history) > 20
    cached = requests.loc[history.index, "cached_prompt_tokens"]
    assert (cached == (history - 1) // 16 * 16).all()  # every full block of the conversation so far
    assert (requests.loc[requests["turn"] == 0, "cached_prompt_tokens"] == 0).all()


def test_prefix_groups_share_their_system_prompts_in_the_prefix_cache():
    profile = constant_profile(
        100,
        20,
        shared_prefix_groups=3,
        shared_prefix_fraction=1.0,
        shared_prefix_tokens_dist_config={"type": "Constant", "value": 512, "is_int": True},
    )
    _, requests, _ = run_quietly(make_config(workload={"rate": 4, "total_duration": 20, "client_profiles": [profile]}))
    assert (requests["prompt_tokens"] == 612).all()
    hits = requests.sort_values("send_time_s")["cached_prompt_tokens"].to_numpy()
    # only the first request of each of the 3 groups misses; every later one finds its 512-token prompt
    assert (hits == 0).sum() == 3
    assert (hits == 512).sum() == len(hits) - 3


def test_turns_per_session_follow_turns_dist_config():
    profile = constant_profile(
        50,
        5,
        turns_dist_config={"type": "Empirical", "values": [1, 3, 20], "weights": [2, 1, 1]},
        max_conversation_turns=6,
    )
    sessions = sessions_of({"rate": 20, "total_duration": 200, "client_profiles": [profile]})
    turns = np.array([len(s.turns) for s in sessions])
    assert set(np.unique(turns)) == {1, 3, 6}  # 20 turns are capped at max_conversation_turns
    assert np.mean(turns == 1) == pytest.approx(0.5, abs=0.03)
    assert np.mean(turns == 6) == pytest.approx(0.25, abs=0.03)


def test_turns_dist_config_and_conversational_probability_are_exclusive():
    profile = constant_profile(
        50, 5, conversational_probability=0.3, turns_dist_config={"type": "Constant", "value": 2}
    )
    with pytest.raises(ConfigError) as info:
        load_experiment_config(make_config(workload={"rate": 1, "total_duration": 5, "client_profiles": [profile]}))
    assert info.value.key == "workload.client_profiles[0].turns_dist_config"


def test_a_bad_turns_distribution_names_its_key():
    profile = constant_profile(50, 5, turns_dist_config={"type": "Zipf", "s": 1.5})
    with pytest.raises(ConfigError) as info:
        load_experiment_config(make_config(workload={"rate": 1, "total_duration": 5, "client_profiles": [profile]}))
    assert info.value.key == "workload.client_profiles[0].turns_dist_config.n"


def test_without_turns_dist_config_sessions_are_as_before():
    profile = constant_profile(50, 5, conversational_probability=0.5, max_conversation_turns=4)
    turns = np.array(
        [len(s.turns) for s in sessions_of({"rate": 20, "total_duration": 200, "client_profiles": [profile]})]
    )
    # each answer gets a follow-up with probability 0.5, at most 4 turns
    assert np.mean(turns == 1) == pytest.approx(0.5, abs=0.03)
    assert np.mean(turns == 4) == pytest.approx(0.125, abs=0.02)


def test_closed_loop_obeys_littles_law_with_think_time():
    concurrency, think = 6, 0.5
    config = make_config(
        workload={
            "kind": "closed_loop",
            "concurrency": concurrency,
            "num_requests": 150,
            "think_time_dist_config": {"type": "Constant", "value": think},
            "client_profiles": [constant_profile(300, 48)],
        }
    )
    summary, _, steps = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    assert metrics["completed"] == 150
    assert steps["num_running"].max() + steps["num_waiting"].max() <= concurrency
    # N = X (R + Z): every client is either waiting for an answer or thinking
    clients = metrics["request_throughput"] * (metrics["mean_e2el_ms"] / 1e3 + think)
    assert clients == pytest.approx(concurrency, rel=0.06)


def test_open_loop_sessions_are_made_only_when_their_send_time_comes():
    from llmsim import ExperimentOrchestrator

    config = make_config(workload={"rate": 5, "total_duration": 60, "client_profiles": [constant_profile(50, 20)]})
    orchestrator = ExperimentOrchestrator(config)
    orchestrator.setup_simulation()
    generator = orchestrator.workload_generator
    stream = generator.sessions
    assert not isinstance(stream, list) and len(stream) > 200  # start times only, no request descriptions
    env = orchestrator.sim_env_wrapper.env
    env.process(generator.generate_requests_process())
    env.run(until=30.0)
    # only the next session (the one the sender waits for) was made after t=30: the stream yields
    # every later one still, in order, and they are the sessions the eager list has
    later = list(stream)
    assert [s.start_time for s in later] == [t for t in stream.start_times if t > 30.0][1:] and len(later) > 100
    eager = sessions_of({"rate": 5, "total_duration": 60, "client_profiles": [constant_profile(50, 20)]})
    assert later == eager[len(eager) - len(later) :]
