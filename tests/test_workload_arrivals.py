"""Open-loop arrivals: rate and burstiness as `vllm bench serve` draws them, and rates that vary in time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import constant_profile, make_config
from scenario import run_quietly

from llmsim.config import load_experiment_config
from llmsim.errors import ConfigError
from llmsim.workload.arrivals import DiurnalRate, parse_rate_schedule
from llmsim.workload.sessions import SessionSampler


def arrival_times(workload: dict) -> np.ndarray:
    """Session start times of a workload (no simulation needed: they depend on the workload alone)."""
    config = load_experiment_config(make_config(workload=workload))
    sampler = SessionSampler(config.workload, config.distributions(), config.workload_seed)
    return np.array([s.start_time for s in sampler.open_loop_sessions()])


def open_loop(**workload) -> dict:
    return {"client_profiles": [constant_profile(50, 5)], **workload}


def cv_standard_error(burstiness: float, n: int) -> float:
    """Approximate standard error of the sample CV of n Gamma(burstiness) gaps, relative to the CV."""
    excess_kurtosis = 6.0 / burstiness
    return 0.5 * math.sqrt((2.0 + excess_kurtosis) / n)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_arrivals_have_the_configured_rate_and_coefficient_of_variation(burstiness):
    rate, duration = 50.0, 100.0
    times = arrival_times(open_loop(rate=rate, burstiness=burstiness, total_duration=duration))
    n = len(times)
    assert n == pytest.approx(rate * duration, rel=4 / math.sqrt(burstiness * rate * duration))
    gaps = np.diff(times)
    assert 1 / gaps.mean() == pytest.approx(rate, rel=4 / math.sqrt(burstiness * n))
    expected_cv = 1 / math.sqrt(burstiness)
    assert gaps.std() / gaps.mean() == pytest.approx(expected_cv, rel=4 * cv_standard_error(burstiness, n))


def test_without_burstiness_the_rate_rescales_the_profiles_own_distribution():
    profile = {**constant_profile(50, 5), "inter_arrival_time_dist_config": {"type": "Constant", "value": 1.0}}
    times = arrival_times({"rate": 4.0, "total_duration": 10.0, "client_profiles": [profile]})
    assert np.allclose(np.diff(times), 0.25)


def test_burstiness_one_is_a_poisson_process():
    times = arrival_times(open_loop(rate=20.0, burstiness=1.0, total_duration=200.0))
    gaps = np.diff(times)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    counts = np.histogram(times, bins=np.arange(0, 201, 1.0))[0]
    assert counts.var() / counts.mean() == pytest.approx(1.0, rel=0.15)  # Poisson counts: variance = mean


def test_burstiness_splits_the_rate_over_profiles_by_weight():
    heavy = {**constant_profile(50, 5), "profile_name": "heavy", "weight": 3.0}
    light = {**constant_profile(50, 5), "profile_name": "light", "weight": 1.0}
    config = load_experiment_config(
        make_config(workload={"rate": 40, "burstiness": 0.5, "total_duration": 100, "client_profiles": [heavy, light]})
    )
    sessions = SessionSampler(config.workload, config.distributions(), config.workload_seed).open_loop_sessions()
    counts = {"heavy": 0, "light": 0}
    for session in sessions:
        counts[session.turns[0].profile] += 1
    assert counts["heavy"] / 100 == pytest.approx(30, rel=0.15)
    assert counts["light"] / 100 == pytest.approx(10, rel=0.25)


def test_a_rate_schedule_changes_the_arrival_rate_piecewise():
    steps = [[0, 10], [40, 40], [80, 0], [100, 5]]
    times = arrival_times(open_loop(rate_schedule=steps, total_duration=160.0))
    for start, end, rate in [(0, 40, 10), (40, 80, 40), (80, 100, 0), (100, 160, 5)]:
        count = ((times >= start) & (times < end)).sum()
        expected = rate * (end - start)
        assert count == pytest.approx(expected, abs=4 * math.sqrt(expected) + 0.5), (start, end)


def test_a_rate_schedule_starting_later_sends_nothing_before_its_first_step():
    times = arrival_times(open_loop(rate_schedule=[[30, 10]], total_duration=60.0))
    assert times.min() >= 30
    assert len(times) == pytest.approx(300, abs=4 * math.sqrt(300))


def test_a_bursty_rate_schedule_keeps_its_burstiness_at_every_rate():
    times = arrival_times(open_loop(rate_schedule=[[0, 20], [100, 80]], burstiness=0.25, total_duration=200.0))
    for start, end, rate in [(0, 100, 20), (100, 200, 80)]:
        gaps = np.diff(times[(times >= start) & (times < end)])
        assert 1 / gaps.mean() == pytest.approx(rate, rel=0.15)
        assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=4 * cv_standard_error(0.25, len(gaps)))


def test_a_diurnal_rate_follows_its_cosine_curve():
    schedule = {"type": "diurnal", "period_s": 200, "min_rate": 5, "max_rate": 45}
    times = arrival_times(open_loop(rate_schedule=schedule, total_duration=400.0))
    curve = parse_rate_schedule(schedule, "workload.rate_schedule")
    edges = np.arange(0, 401, 25.0)
    counts = np.histogram(times, bins=edges)[0]
    expected = np.diff(curve.cumulative(edges))
    assert np.all(np.abs(counts - expected) <= 4 * np.sqrt(expected) + 1)
    assert len(times) == pytest.approx(25 * 400, rel=0.05)  # the mean rate is (min + max) / 2
    assert expected[3] > 5 * expected[0]  # quiet at night, busy at noon


def test_rate_schedules_map_cumulative_intensity_back_to_time_exactly():
    for spec in ([[0, 3], [10, 0], [20, 7]], {"type": "diurnal", "period_s": 60, "min_rate": 0, "max_rate": 9}):
        schedule = parse_rate_schedule(spec, "workload.rate_schedule")
        t = np.linspace(0.5, 119.5, 239)
        t = t[schedule.rate_at(t) > 0]
        assert np.allclose(schedule.inverse(schedule.cumulative(t)), t, atol=1e-7)


def test_diurnal_phase_shifts_the_curve():
    shifted = DiurnalRate(period_s=100, min_rate=1, max_rate=3, phase_s=50)
    assert shifted.rate_at(np.array([0.0]))[0] == pytest.approx(3.0)
    assert shifted.cumulative(np.array([100.0]))[0] == pytest.approx(200.0)


def test_arrivals_depend_only_on_the_workload_and_its_seed():
    workload = open_loop(rate=10, burstiness=0.5, total_duration=50)
    assert np.array_equal(arrival_times(workload), arrival_times(workload))
    assert not np.array_equal(arrival_times(workload), arrival_times({**workload, "random_seed": 9}))


def test_a_bursty_run_sends_its_requests_at_the_sampled_times():
    workload = open_loop(rate=5, burstiness=0.3, total_duration=20)
    _, requests, _ = run_quietly(make_config(workload=workload))
    assert np.allclose(np.sort(requests["send_time_s"].to_numpy()), arrival_times(workload), atol=1e-9)


@pytest.mark.parametrize(
    ("workload", "key"),
    [
        pytest.param({"rate": None, "burstiness": 0.5}, "workload.burstiness", id="burstiness-without-rate"),
        pytest.param({"burstiness": -1}, "workload.burstiness", id="negative-burstiness"),
        pytest.param({"rate": 5, "rate_schedule": [[0, 5]]}, "workload.rate", id="rate-and-schedule"),
        pytest.param({"rate": None, "rate_schedule": []}, "workload.rate_schedule", id="empty-schedule"),
        pytest.param({"rate": None, "rate_schedule": [[0, 5], [0, 6]]}, "workload.rate_schedule[1][0]", id="unsorted"),
        pytest.param({"rate": None, "rate_schedule": [[0, -5]]}, "workload.rate_schedule[0][1]", id="negative-rate"),
        pytest.param({"rate": None, "rate_schedule": [[0, 0]]}, "workload.rate_schedule", id="all-zero"),
        pytest.param({"rate": None, "rate_schedule": [[0]]}, "workload.rate_schedule[0]", id="not-a-pair"),
        pytest.param(
            {"rate": None, "rate_schedule": {"type": "weekly"}}, "workload.rate_schedule.type", id="unknown-type"
        ),
        pytest.param(
            {"rate": None, "rate_schedule": {"type": "diurnal", "period_s": 10, "min_rate": 5, "max_rate": 1}},
            "workload.rate_schedule.min_rate",
            id="diurnal-min-above-max",
        ),
        pytest.param(
            {"rate": None, "rate_schedule": {"type": "diurnal", "min_rate": 1, "max_rate": 2}},
            "workload.rate_schedule.period_s",
            id="diurnal-without-period",
        ),
        pytest.param(
            {"kind": "offline", "num_requests": 5, "burstiness": 2}, "workload.burstiness", id="offline-burstiness"
        ),
    ],
)
def test_a_bad_arrival_spec_is_a_config_error_naming_the_key(workload, key):
    with pytest.raises(ConfigError) as info:
        load_experiment_config(make_config(workload={**open_loop(rate=5, total_duration=10), **workload}))
    assert info.value.key == key
