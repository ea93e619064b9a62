"""llmsim's vLLM model in lockstep with vLLM 0.33.0's own scheduler (skipped where vLLM is not installed).

``pip install -e '.[conformance]'`` installs the pinned vLLM; see the README's "Conformance" section.
Every scenario must schedule the same requests with the same token counts at every step, at
bit-identical times, and give every request bit-identical first-token and finish times.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # before vLLM is imported: its platform is chosen then
pytest.importorskip("vllm.v1.core.sched.scheduler", reason="the conformance extra (vllm==0.33.0) is not installed")

import vllm
from lockstep_scenarios import SCENARIOS
from vllm_lockstep import compare, conformance, run_both, table

#: the fixed seeds every scenario runs with; ``mixed`` draws its stream and knobs from more
SEEDS = (0, 1)
MIXED_SEEDS = (2, 3, 5, 8, 13, 21)


def test_installed_vllm_is_the_pinned_release():
    assert vllm.__version__.startswith("0.33.0"), vllm.__version__


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_step_matches_the_real_scheduler(name, seed):
    result = conformance(name, seed)
    assert result.conforms, "\n" + table([result])


@pytest.mark.parametrize("seed", MIXED_SEEDS)
def test_mixed_streams_with_drawn_knobs_match_the_real_scheduler(seed):
    result = conformance("mixed", seed)
    assert result.conforms, "\n" + table([result])


@pytest.mark.parametrize("name", ["kv_pressure", "multi_turn", "mixed"])
def test_fast_forward_gives_the_real_schedulers_request_times(name):
    """With fast-forward on (the default), llmsim skips steady decode steps; every request's times
    must still be bit-identical to the real scheduler's."""
    scenario = SCENARIOS[name](0)
    real, sim = run_both(scenario, 0, fast_forward=True)
    result = compare(scenario, 0, real, sim)
    assert result.requests_with_time_differences == 0, "\n" + table([result])
    assert sim.preemptions == real.preemptions


def _prefix_hits(real):
    """Requests whose first scheduled step starts past token 0 (their prompt began in the prefix cache)."""
    first: dict[int, int] = {}
    for step in real.steps:
        for rid, computed, _n in step:
            first.setdefault(rid, computed)
    return sum(1 for computed in first.values() if computed > 0)


def test_scenarios_exercise_what_they_name():
    """The streams do what their names promise on the real scheduler (so a pass means something)."""
    checks = {
        "no_prefix_caching": lambda real: _prefix_hits(real) == 0,
        "kv_pressure": lambda real: real.preemptions > 0,
        "max_num_seqs_8": lambda real: max(len(s) for s in real.steps) == 8,
        "partial_prefills": lambda real: max(sum(1 for _r, c, n in s if n > 1) for s in real.steps) >= 2,
        "multi_turn": lambda real: _prefix_hits(real) > 100,
        "block_size_32": lambda real: _prefix_hits(real) > 0 and real.preemptions > 0,
    }
    for name, holds in checks.items():
        real, _sim = run_both(SCENARIOS[name](0), 0)
        assert holds(real), name
