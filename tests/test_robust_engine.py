"""Whole runs under stress: invariants over random workloads and knobs, edge cases, and no hangs.

Property tests (hypothesis) drive every framework model over small random workloads, with KV caches
shrunk by ``num_gpu_blocks_override`` so that preemption, retraction and pausing happen, and check
after every step and at the end: every request the clients sent is completed, rejected with a
reason or (only when the time limit stopped the run) incomplete; KV blocks are never over-allocated
and all are free once the system drains; timestamps are ordered; completed requests got all their
tokens; cached prompt tokens never exceed the prompt; summaries hold no NaN.

Frameworks that cannot make progress are stopped by the guard in :mod:`llmsim.engine`; the tests
with deliberately broken frameworks would hang (or run to the time limit step by step) without it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import math
import signal
from typing import Any

import pytest
from conftest import conf_file, constant_profile, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmsim.engine
from llmsim import ExperimentOrchestrator
from llmsim.errors import LLMSimError
from llmsim.frameworks.continuous import StepPlan
from llmsim.frameworks.registry import framework_class_map, register_framework
from llmsim.frameworks.vllm import VLLMFramework
from llmsim.workload.request import Request, RequestSpec


# ---- helpers ---------------------------------------------------------------------------------------
class Hung(BaseException):
    """Raised by the alarm: a BaseException, so no framework guard can swallow it."""


@pytest.fixture
def time_limit():
    """Fail (instead of hanging) if the test takes longer than 30 s."""

    def expire(signum, frame):
        raise Hung("the run did not end: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def with_framework(config: dict, name: str, **knobs: Any) -> dict:
    framework = conf_file("framework", name)
    framework.update(knobs)
    config["framework"] = framework
    return config


def several(config: dict, **frameworks: dict) -> dict:
    """The config with ``frameworks: {label: group file + knobs}`` instead of one framework."""
    config = copy.deepcopy(config)
    config.pop("framework")
    config["frameworks"] = {}
    for label, knobs in frameworks.items():
        knobs = dict(knobs)
        framework = conf_file("framework", knobs.pop("file", label))
        framework.update(knobs)
        config["frameworks"][label] = framework
    return config


def run(config: dict, output_dir: Any = None) -> tuple[ExperimentOrchestrator, dict]:
    orchestrator = ExperimentOrchestrator(config, output_dir=output_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = orchestrator.run(show_progress=False, print_table=False)
    return orchestrator, summary


def kv_consistent(framework: Any) -> None:
    """The KV mechanism's books match the requests that hold cache, and never exceed its capacity."""
    held = framework.in_flight()
    kv = getattr(framework, "kv", None)
    if kv is None:  # static batching: a token count
        assert 0 <= framework.used_tokens <= framework.capacity_tokens
    elif hasattr(kv, "pool"):
        pool = kv.pool
        counts: dict[int, int] = {}
        for request in held:
            for block in request.blocks:
                counts[block] = counts.get(block, 0) + 1
        assert pool.num_used == len(counts) <= pool.num_blocks
        assert all(pool.ref_counts[block] == count for block, count in counts.items())
    else:
        cache = kv.cache
        private = sum(r.kv_state.private_tokens for r in held if r.kv_state is not None)
        assert cache.private_tokens == private
        assert cache.tree_tokens + cache.private_tokens <= cache.capacity
        assert 0 <= cache.evictable_tokens <= cache.tree_tokens


def assert_drained(framework: Any) -> None:
    """Every KV block (token) is free once nothing is in flight (tests/test_frameworks.assert_no_kv_leak)."""
    kv = getattr(framework, "kv", None)
    if kv is None:
        assert framework.used_tokens == 0
    elif hasattr(kv, "pool"):
        assert kv.pool.num_used == 0 and all(count == 0 for count in kv.pool.ref_counts)
    else:
        assert kv.cache.private_tokens == 0 and kv.cache.evictable_tokens == kv.cache.tree_tokens


def check_run(config: dict) -> dict:
    """Run with a per-step KV check and assert every invariant; returns the summary."""
    orchestrator = ExperimentOrchestrator(config)
    orchestrator.setup_simulation()
    framework = orchestrator.llm_framework_instances[0]
    collector = orchestrator.metrics_collector
    record_step, record_steps = collector.record_step, collector.record_steps

    def checked_step(*args, **kwargs):
        kv_consistent(framework)
        record_step(*args, **kwargs)

    def checked_steps(*args, **kwargs):
        kv_consistent(framework)
        record_steps(*args, **kwargs)

    collector.record_step, collector.record_steps = checked_step, checked_steps
    orchestrator.setup_simulation = lambda: None  # run() must use the instances checked above
    with contextlib.redirect_stdout(io.StringIO()):
        summary = orchestrator.run(show_progress=False, print_table=False)
    errors = summary.get("framework_errors", {})
    assert not errors, errors  # no framework may get stuck on a valid workload
    requests = collector.get_all_request_metrics_df()
    generator = orchestrator.workload_generator
    now = orchestrator.sim_env_wrapper.now()
    unsent = sum(1 for r in generator._on_network.values() if r.send_time > now)  # follow-up turns not yet due
    assert len(requests) == generator.requests_sent - unsent  # every request sent is accounted for, once
    assert requests["status"].isin(["completed", "rejected", "incomplete"]).all()
    assert all(requests.loc[requests["status"] == "rejected", "reason"])  # a reason for every rejection
    drained = not summary["stopped_by_time_limit"]
    if drained:
        assert (requests["status"] != "incomplete").all()
    done = requests[requests["status"] == "completed"]
    assert (done["output_tokens"] == done["max_output_tokens"]).all()
    assert (
        (requests["cached_prompt_tokens"] >= 0) & (requests["cached_prompt_tokens"] <= requests["prompt_tokens"])
    ).all()
    order = ["send_time_s", "arrival_time_s", "first_scheduled_time_s", "first_token_time_s", "completion_time_s"]
    for earlier, later in itertools.pairwise(order):
        assert (done[earlier] <= done[later]).all(), (earlier, later)
    rejected = requests[requests["status"] == "rejected"]
    assert (rejected["completion_time_s"] >= rejected["arrival_time_s"]).all()
    steps = collector.get_step_series_df()
    assert (steps["kv_blocks_used"] >= 0).all() and (steps["kv_blocks_used"] <= steps["kv_blocks_total"]).all()
    assert (steps["duration_s"] > 0).all()
    metrics = summary["frameworks"][framework.framework_id]
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics
    if drained and not errors:
        assert_drained(framework)
    return summary


@st.composite
def workloads(draw) -> dict:
    """Small random workloads: offline, open-loop or closed-loop; conversations and shared prefixes."""
    low, high = sorted([draw(st.integers(1, 1200)), draw(st.integers(1, 1200))])
    out_low, out_high = sorted([draw(st.integers(1, 200)), draw(st.integers(1, 200))])
    profile = constant_profile(1, 1, streaming=draw(st.sampled_from([0.0, 0.5, 1.0])))
    profile["prompt_tokens_dist_config"] = {"type": "Uniform", "low": low, "high": high, "is_int": True}
    profile["max_output_tokens_dist_config"] = {"type": "Uniform", "low": out_low, "high": out_high, "is_int": True}
    profile["conversational_probability"] = draw(st.sampled_from([0.0, 0.0, 0.5]))
    profile["conversation_think_time_dist_config"] = {"type": "Exponential", "rate": 5.0}
    if draw(st.booleans()):
        profile["shared_prefix_groups"] = draw(st.integers(1, 3))
        profile["shared_prefix_tokens_dist_config"] = {"type": "Constant", "value": draw(st.integers(1, 500))}
    kind = draw(st.sampled_from(["offline", "open_loop", "closed_loop"]))
    count = draw(st.integers(0, 16))
    if kind == "offline":
        workload = {"kind": "offline", "num_requests": count}
    elif kind == "open_loop":
        workload = {"kind": "open_loop", "rate": draw(st.sampled_from([2.0, 20.0, 200.0])), "total_duration": 1.0}
    else:
        workload = {"kind": "closed_loop", "concurrency": draw(st.integers(1, 4)), "num_requests": count}
    workload["client_profiles"] = [profile]
    workload["stream_chunk_tokens"] = draw(st.sampled_from([1, 1, 3]))
    limit = draw(st.sampled_from([1e6, 1e6, 2.0]))
    return make_config(workload=workload, simulation={"max_simulation_time": limit})


PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SMALL_BLOCKS = st.one_of(st.none(), st.integers(6, 150))  # paged caches: blocks of 16/32 tokens
SMALL_TOKENS = st.one_of(st.none(), st.integers(120, 3000))  # token pools (SGLang, static)


# ---- properties ------------------------------------------------------------------------------------
@PROPERTY
@given(
    config=workloads(),
    blocks=SMALL_BLOCKS,
    knobs=st.sampled_from(
        [
            {},
            {"enable_prefix_caching": False},
            {"max_num_seqs": 3, "max_num_batched_tokens": 64},
            {"enable_chunked_prefill": False, "max_model_len": 4096, "max_num_batched_tokens": 4096},
            {"engine_version": "v0", "max_model_len": 8192},
            {"engine_version": "v0", "preemption_mode": "swap", "swap_space": 0.002, "max_model_len": 8192},
            {"engine_version": "v0", "enable_chunked_prefill": True, "max_num_batched_tokens": 128},
        ]
    ),
)
def test_vllm_invariants_hold_over_random_workloads_and_small_caches(config, blocks, knobs):
    check_run(with_framework(config, "vllm", num_gpu_blocks_override=blocks, **knobs))


@PROPERTY
@given(
    config=workloads(),
    blocks=SMALL_BLOCKS,
    knobs=st.sampled_from(
        [
            {},
            {"capacity_scheduler_policy": "MAX_UTILIZATION"},
            {"capacity_scheduler_policy": "MAX_UTILIZATION", "enable_chunked_prefill": True, "max_num_tokens": 96},
            {"enable_chunked_prefill": True, "max_num_tokens": 200, "enable_block_reuse": False},
            {"capacity_scheduler_policy": "STATIC_BATCH", "max_batch_size": 3},
        ]
    ),
)
def test_trtllm_invariants_hold_over_random_workloads_and_small_caches(config, blocks, knobs):
    check_run(with_framework(config, "trtllm", num_gpu_blocks_override=blocks, **knobs))


@PROPERTY
@given(
    config=workloads(),
    tokens=SMALL_TOKENS,
    knobs=st.sampled_from(
        [
            {},
            {"schedule_policy": "lpm"},
            {"schedule_policy": "dfs-weight"},
            {"schedule_policy": "lof"},
            {"schedule_policy": "random"},
            {"chunked_prefill_size": 64},
            {"chunked_prefill_size": 128, "disable_radix_cache": True, "max_running_requests": 3},
        ]
    ),
)
def test_sglang_invariants_hold_over_random_workloads_and_small_caches(config, tokens, knobs):
    check_run(with_framework(config, "sglang", num_gpu_blocks_override=tokens, **knobs))


@PROPERTY
@given(config=workloads(), tokens=SMALL_TOKENS, batch=st.integers(1, 6), wait=st.sampled_from([0.0, 0.05]))
def test_static_batching_invariants_hold_over_random_workloads_and_small_caches(config, tokens, batch, wait):
    check_run(
        with_framework(
            config, "static", num_gpu_blocks_override=tokens, max_batch_size=batch, batch_wait_timeout_s=wait
        )
    )


# ---- edge cases ------------------------------------------------------------------------------------
FRAMEWORK_FILES = ("vllm", "trtllm", "sglang", "static")


def no_nan(summary: dict) -> None:
    for metrics in summary["frameworks"].values():
        for key, value in metrics.items():
            assert not (isinstance(value, float) and math.isnan(value)), key


@pytest.mark.parametrize(
    "workload",
    [
        pytest.param({"kind": "offline", "num_requests": 0}, id="offline-zero"),
        pytest.param({"kind": "closed_loop", "concurrency": 4, "num_requests": 0}, id="closed-loop-zero"),
        pytest.param({"kind": "open_loop", "rate": 0.01, "total_duration": 0.001}, id="nothing-arrives"),
    ],
)
def test_zero_requests_give_a_summary_of_zeros_and_every_output(tmp_path, workload):
    config = several(
        make_config(
            workload=workload,
            metrics={
                "output_summary_json_path": "summary.json",
                "output_requests_parquet_path": "requests.parquet",
                "output_steps_parquet_path": "steps.parquet",
            },
        ),
        **{name: {} for name in FRAMEWORK_FILES},
    )
    orchestrator, summary = run(config, tmp_path)
    assert orchestrator.workload_generator.num_sessions == 0
    for metrics in summary["frameworks"].values():
        assert metrics["completed"] == metrics["failed"] == metrics["incomplete"] == metrics["num_steps"] == 0
        assert metrics["output_throughput"] == 0.0 and metrics["mean_ttft_ms"] == 0.0
    no_nan(summary)
    assert not summary["stopped_by_time_limit"]
    for name in ("summary.json", "requests.parquet", "steps.parquet"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "summary.json").read_text().count("NaN") == 0


@pytest.mark.parametrize("name", FRAMEWORK_FILES)
def test_a_single_request_completes_with_ordered_timestamps_and_all_its_tokens(name):
    config = with_framework(
        make_config(workload={"kind": "offline", "num_requests": 1, "client_profiles": [constant_profile(300, 20)]}),
        name,
    )
    summary = check_run(config)
    metrics = summary["frameworks"][name]
    assert metrics["completed"] == 1 and metrics["total_output_tokens"] == 20 and metrics["mean_ttft_ms"] > 0


@pytest.mark.parametrize("name", FRAMEWORK_FILES)
def test_a_prompt_longer_than_the_context_is_rejected_with_its_reason_and_counted_failed(name):
    config = with_framework(
        make_config(workload={"kind": "offline", "num_requests": 3, "client_profiles": [constant_profile(5000, 10)]}),
        name,
        max_model_len=4096,
        **({"enable_chunked_prefill": True} if name == "trtllm" else {}),
    )
    orchestrator, summary = run(config)
    requests = orchestrator.metrics_collector.get_all_request_metrics_df()
    assert summary["frameworks"][name]["failed"] == 3 and summary["frameworks"][name]["completed"] == 0
    assert requests["reason"].str.contains("max_model_len 4096").all()
    no_nan(summary)


@pytest.mark.parametrize(("name", "size"), [("vllm", 8), ("trtllm", 4), ("sglang", 100), ("static", 100)])
def test_a_request_whose_kv_can_never_fit_is_rejected_not_deadlocked(time_limit, name, size):
    fits, too_big = constant_profile(40, 20), {**constant_profile(400, 200), "profile_name": "big", "weight": 1.0}
    config = with_framework(
        make_config(workload={"kind": "offline", "num_requests": 6, "client_profiles": [fits, too_big]}),
        name,
        num_gpu_blocks_override=size,
    )
    orchestrator, summary = run(config)
    requests = orchestrator.metrics_collector.get_all_request_metrics_df()
    big = requests[requests["profile"] == "big"]
    assert len(big) > 0 and (big["status"] == "rejected").all()
    assert big["reason"].str.contains("cache").all()
    assert (requests.loc[requests["profile"] != "big", "status"] == "completed").all()
    assert not summary["stopped_by_time_limit"]


def test_an_overload_stops_at_max_simulation_time_with_the_backlog_reported_incomplete_and_memory_bounded(time_limit):
    config = make_config(
        workload={"rate": 5000.0, "total_duration": 1e6, "client_profiles": [constant_profile(200, 50)]},
        simulation={"max_simulation_time": 1.0},
    )
    orchestrator, summary = run(config)
    metrics = summary["frameworks"]["vllm"]
    assert summary["stopped_by_time_limit"] and summary["simulated_time_s"] == pytest.approx(1.0)
    assert metrics["incomplete"] > 2000 and metrics["completed"] < metrics["incomplete"]
    # only what can start before the stop is ever drawn: not rate x total_duration sessions
    assert orchestrator.workload_generator.num_sessions < 6000
    no_nan(summary)


@pytest.mark.parametrize("name", FRAMEWORK_FILES)
def test_max_simulation_time_shorter_than_one_step_reports_everything_incomplete(name):
    config = with_framework(
        make_config(workload={"kind": "offline", "num_requests": 4}, simulation={"max_simulation_time": 1e-6}), name
    )
    _, summary = run(config)
    metrics = summary["frameworks"][name]
    assert summary["stopped_by_time_limit"]
    assert metrics["incomplete"] == 4 and metrics["completed"] == metrics["failed"] == 0
    no_nan(summary)


def same_results(together: tuple, alone: tuple, name: str) -> None:
    """A framework's requests and summary in a multi-framework run equal those of it running alone."""
    (run_together, summary_together), (run_alone, summary_alone) = together, alone
    requests_together = run_together.metrics_collector.get_all_request_metrics_df()
    requests_alone = run_alone.metrics_collector.get_all_request_metrics_df()
    mine = requests_together[requests_together["framework"] == name].reset_index(drop=True)
    assert mine.equals(requests_alone)
    assert summary_together["frameworks"][name] == summary_alone["frameworks"][name]


MIXED = make_config(workload={"kind": "offline", "num_requests": 6, "client_profiles": [constant_profile(400, 30)]})


def test_a_framework_that_rejects_every_request_leaves_the_others_results_complete_and_unchanged():
    alone = run(with_framework(copy.deepcopy(MIXED), "vllm"))
    together = run(several(MIXED, vllm={}, sglang={"num_gpu_blocks_override": 200}, static={}))
    summary = together[1]
    assert summary["frameworks"]["sglang"]["failed"] == 6 and summary["frameworks"]["sglang"]["completed"] == 0
    assert summary["frameworks"]["static"]["completed"] == 6
    same_results(together, alone, "vllm")
    assert "framework_errors" not in summary


def test_a_framework_that_fails_at_set_up_is_named_in_the_error():
    config = several(MIXED, vllm={}, sglang={"mem_fraction_static": 0.05})
    with pytest.raises(LLMSimError, match=r"frameworks\.sglang"):
        run(config)


# ---- broken frameworks: the guard stops them, the others finish ---------------------------------------
class LivelockFramework(VLLMFramework):
    """Admits everything, then schedules steps that compute nothing, forever."""

    type_name = "LIVELOCK"

    def schedule(self) -> StepPlan:
        while self.waiting:
            self.start_running(self.waiting.popleft(), 0)
        return StepPlan(scheduled=[(request, 0) for request in self.running])


class DeadlockFramework(VLLMFramework):
    """Parks what it cannot schedule (nothing) outside its queues, then waits for arrivals."""

    type_name = "DEADLOCK"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parked: list[Request] = []

    def schedule(self) -> StepPlan:
        return StepPlan()

    def unblock(self) -> None:
        self.parked.extend(self.waiting)
        self.waiting.clear()

    def in_flight(self) -> list[Request]:
        return [*super().in_flight(), *self.parked]


class CrashingFramework(VLLMFramework):
    """A bug three steps in."""

    type_name = "CRASHING"

    def schedule(self) -> StepPlan:
        if self.num_steps >= 3:
            raise ZeroDivisionError("a bug in the scheduler")
        return super().schedule()


BROKEN = {"LIVELOCK": LivelockFramework, "DEADLOCK": DeadlockFramework, "CRASHING": CrashingFramework}


@pytest.fixture
def broken_frameworks(monkeypatch):
    for name, cls in BROKEN.items():
        register_framework(name, cls)
    monkeypatch.setattr(llmsim.engine, "STALL_EVENTS", 20_000)
    yield
    for name in BROKEN:
        framework_class_map.pop(name, None)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("LIVELOCK", "livelock"), ("DEADLOCK", "deadlock"), ("CRASHING", "ZeroDivisionError: a bug in the scheduler")],
)
def test_a_stuck_or_failing_framework_is_stopped_with_a_reason_while_the_others_finish_unchanged(
    time_limit, broken_frameworks, kind, message
):
    workload = {
        "kind": "closed_loop",
        "concurrency": 2,
        "num_requests": 8,
        "client_profiles": [constant_profile(300, 40)],
    }
    base = make_config(workload=workload)
    alone = run(with_framework(copy.deepcopy(base), "trtllm"))
    together = run(several(base, broken={"file": "vllm", "type": kind}, trtllm={}))
    orchestrator, summary = together
    error = summary["framework_errors"]["broken"]
    assert message in error and "broken" in error and "\n" not in error
    assert summary["frameworks"]["broken"]["error"] == error
    same_results(together, alone, "trtllm")
    requests = orchestrator.metrics_collector.get_all_request_metrics_df()
    broken = requests[requests["framework"] == "broken"]
    assert len(broken) == 8 and (broken["status"] != "incomplete").all()  # every session ran its course
    assert all(
        reason.startswith("framework stopped:") for reason in broken.loc[broken["status"] == "rejected", "reason"]
    )
    assert not summary["stopped_by_time_limit"]
    no_nan(summary)


def test_without_a_stall_the_guard_changes_nothing():
    config = make_config(workload={"rate": 20.0, "total_duration": 5, "client_profiles": [constant_profile(500, 100)]})
    orchestrator = ExperimentOrchestrator(config)
    orchestrator.setup_simulation()
    framework = orchestrator.llm_framework_instances[0]
    env = orchestrator.sim_env_wrapper
    env.schedule_process(framework.processing_loop)  # unguarded, as before the guard existed
    env.schedule_process(orchestrator.workload_generator.generate_requests_process)
    env.run()
    unguarded = orchestrator.metrics_collector.get_all_request_metrics_df()
    guarded = run(config)[0].metrics_collector.get_all_request_metrics_df()
    assert unguarded.equals(guarded)


# ---- scheduler bugs this battery found (fixed; kept as regressions) ------------------------------------------------------------
def _sglang_with_a_decoder_and_a_chunked_prefill_filling_the_cache():
    from scenario import framework_for

    config = with_framework(make_config(), "sglang", num_gpu_blocks_override=1000, chunked_prefill_size=100)
    framework = framework_for(config)

    def request(rid: int, prompt: int, output: int) -> Request:
        spec = RequestSpec(rid, rid, 0, "p", prompt, output, True, ((2 * rid + 1, prompt),), 2 * rid + 2)
        return Request(spec, framework.framework_id, 0.0, 0.0)

    decoder, chunked = request(0, 500, 10), request(1, 900, 5)
    for item, computed in ((decoder, 500), (chunked, 500)):
        framework.start_running(item, framework.kv.start(item))
        assert framework.kv.allocate(item, computed)
        item.num_computed_tokens = computed
        framework.kv.cache_full_blocks(item)
    decoder.num_output_tokens = 1  # its prompt is done: it decodes; the other is half-way through its prompt
    framework.chunked = chunked
    assert framework.kv.cache.available_tokens == 0
    return framework


def test_sglang_retracts_a_stuck_chunked_prefill_instead_of_deadlocking():
    framework = _sglang_with_a_decoder_and_a_chunked_prefill_filling_the_cache()
    plan = framework.schedule()
    assert plan.scheduled or plan.evicted


def test_the_sglang_run_that_deadlocked_on_a_chunked_prefill_now_completes(time_limit, tmp_path):
    """The workload hypothesis found the deadlock with (a decoder and a chunked prefill filling the cache).

    Its five requests, in the order they reached the server then (shortest prompt first), as a trace.
    """
    trace = tmp_path / "deadlock.csv"
    trace.write_text("arrival_time,input_tokens,output_tokens\n0,149,89\n0,296,66\n0,366,70\n0,437,86\n0,481,11\n")
    workload = {
        "kind": "trace",
        "path": str(trace),
        "total_duration": None,
        "num_requests": None,
        "client_profiles": [{"profile_name": "trace", "streaming_response_probability": 0.0}],
    }
    config = with_framework(
        make_config(workload=workload), "sglang", chunked_prefill_size=64, num_gpu_blocks_override=574
    )
    summary = check_run(config)
    assert summary["frameworks"]["sglang"]["completed"] == 5 and summary["frameworks"]["sglang"]["num_retracted"] > 0


@pytest.mark.parametrize("name", ["vllm", "trtllm", "sglang"])
def test_fast_forward_keeps_the_kv_usage_series_exact(name):
    workload = {
        "kind": "closed_loop",
        "concurrency": 2,
        "num_requests": 8,
        "client_profiles": [constant_profile(300, 40)],
    }
    results = []
    for fast_forward in (True, False):
        config = with_framework(make_config(workload=workload, simulation={"fast_forward": fast_forward}), name)
        orchestrator, summary = run(config)
        results.append((orchestrator.metrics_collector.get_step_series_df(), summary["frameworks"][name]))
    (steps_ff, metrics_ff), (steps, metrics) = results
    assert metrics_ff == metrics
    assert steps_ff["kv_blocks_used"].tolist() == steps["kv_blocks_used"].tolist()


@pytest.mark.parametrize("policy", ["GUARANTEED_NO_EVICT", "STATIC_BATCH"])
def test_trtllm_requests_that_fit_only_one_at_a_time_run_one_after_another_without_a_hang(time_limit, policy):
    # 40 blocks of 32 tokens; each request reserves 24 of them (600 + 150 tokens): never two beside each other
    config = with_framework(
        make_config(workload={"kind": "offline", "num_requests": 4, "client_profiles": [constant_profile(600, 150)]}),
        "trtllm",
        capacity_scheduler_policy=policy,
        num_gpu_blocks_override=40,
    )
    summary = check_run(config)
    metrics = summary["frameworks"]["trtllm"]
    assert metrics["completed"] == 4 and metrics["max_batch_size"] == 1 and metrics["num_paused"] == 0
