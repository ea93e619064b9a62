"""Lockstep conformance: llmsim's vLLM model against vLLM 0.33.0's own v1 scheduler.

Both sides run the same request stream (:mod:`lockstep_scenarios`):

* **real**: ``vllm.v1.core.sched.scheduler.Scheduler`` itself (CPU only, no model, no GPU), driven
  by a clock: add the requests that have arrived, ``schedule()``, price the step with llmsim's own
  cost of that batch (``batch_shape`` and ``step_duration`` of the framework llmsim builds for the
  same config), advance the clock, give every request whose prefill is complete its next token,
  ``update_from_output()``;
* **llmsim**: an ordinary run (``ExperimentOrchestrator``) of the stream written as a trace, with
  ``schedule()`` and ``finish()`` observed from outside to record each step's batch.

Both price steps with one function, so any difference is a difference in scheduling. A run is in
conformance when every step schedules the same requests with the same token counts, at
bit-identical times, and every request's first-token and finish times are bit-identical.

Run as a script for a table over scenarios and seeds::

    python tests/conformance/vllm_lockstep.py                  # every scenario, seed 0
    python tests/conformance/vllm_lockstep.py mixed --seed 3 --seed 4
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # no vllm._C on a CPU install: pick the CPU platform
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

from lockstep_scenarios import SCENARIOS, Scenario, token_ids, write_trace

#: a Llama-3-8B config.json (shapes as conf/model/llama3_8b.yaml): vLLM's ModelConfig reads one
MODEL_DIR = Path(__file__).resolve().parent / "llama3_8b"
#: the context length both sides use (llama3_8b's max_position_embeddings)
MAX_MODEL_LEN = 8192

#: one step: (request id, tokens computed before the step, new tokens), in schedule order
Step = tuple[tuple[int, int, int], ...]


@dataclass
class Schedule:
    """What one side did: every step's start time and batch, and each request's times."""

    step_times: list[float] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    first_token: dict[int, float] = field(default_factory=dict)
    finish: dict[int, float] = field(default_factory=dict)
    preemptions: int = 0

    def add_step(self, time: float, step: Step) -> None:
        self.step_times.append(time)
        self.steps.append(step)


@dataclass(frozen=True)
class Comparison:
    """The outcome of one scenario and seed."""

    scenario: str
    seed: int
    steps_real: int
    steps_llmsim: int
    first_differing_step: int | None  #: None: identical batches at every step
    first_differing_time_step: int | None  #: None: bit-identical step start times
    requests: int
    requests_with_time_differences: int
    preemptions_real: int
    preemptions_llmsim: int

    @property
    def conforms(self) -> bool:
        return (
            self.first_differing_step is None
            and self.first_differing_time_step is None
            and self.requests_with_time_differences == 0
        )


# ---- llmsim ------------------------------------------------------------------------------------
def llmsim_overrides(scenario: Scenario, trace: Path, *, fast_forward: bool, num_blocks: int | None) -> list[str]:
    """Hydra overrides of the llmsim run: the trace, the scenario's knobs, no client link."""
    overrides = [
        "hardware=a100",
        "model=llama3_8b",
        "framework=vllm",
        "framework.version=0.33.0",
        "framework.async_scheduling=false",  # vLLM on the CPU platform schedules synchronously
        "workload=trace",
        f"workload.path={trace}",
        "++workload.client_link=false",
        f"framework.max_num_seqs={scenario.max_num_seqs}",
        f"framework.max_num_batched_tokens={scenario.max_num_batched_tokens}",
        f"framework.block_size={scenario.block_size}",
        f"framework.enable_prefix_caching={str(scenario.enable_prefix_caching).lower()}",
        f"framework.enable_chunked_prefill={str(scenario.enable_chunked_prefill).lower()}",
        f"simulation.fast_forward={str(fast_forward).lower()}",
        "simulation.max_simulation_time=100000",
        "metrics.warm_up_duration_s=0",
    ]
    if num_blocks is not None:
        overrides.append(f"framework.num_gpu_blocks_override={num_blocks}")
    return overrides


def experiment(overrides: list[str]) -> dict[str, Any]:
    """The experiment config the CLI would build from these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from llmsim.cli import experiment_container
    from llmsim.models import CONF_DIR
    from llmsim.sweep.naming import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="conformance"):
        return experiment_container(compose(config_name="config", overrides=overrides))


def llmsim_framework(config: dict[str, Any]) -> Any:
    """llmsim's VLLMFramework for this config, set up but not run (its cost model prices the real steps)."""
    from llmsim.orchestrator import ExperimentOrchestrator

    orchestrator = ExperimentOrchestrator(config, output_dir=None)
    orchestrator.setup_simulation()
    return orchestrator.llm_framework_instances[0]


@contextlib.contextmanager
def observed_llmsim(schedule: Schedule) -> Iterator[None]:
    """Record llmsim's vLLM steps and request times into ``schedule`` while the block runs."""
    from llmsim.frameworks.vllm import VLLMFramework

    original_schedule, original_finish = VLLMFramework.schedule, VLLMFramework.finish

    def observe_schedule(self: Any) -> Any:
        plan = original_schedule(self)
        if plan.scheduled:
            step = tuple((r.spec.request_id, r.num_computed_tokens, n) for r, n in plan.scheduled)
            schedule.add_step(self.env.now, step)
            schedule.preemptions += plan.evicted
        return plan

    def observe_finish(self: Any, request: Any, now: float) -> None:
        schedule.first_token[request.spec.request_id] = request.first_token_time
        schedule.finish[request.spec.request_id] = now
        original_finish(self, request, now)

    VLLMFramework.schedule = observe_schedule  # type: ignore[method-assign]
    VLLMFramework.finish = observe_finish  # type: ignore[method-assign]
    try:
        yield
    finally:
        VLLMFramework.schedule = original_schedule  # type: ignore[method-assign]
        VLLMFramework.finish = original_finish  # type: ignore[method-assign]


def run_llmsim(config: dict[str, Any]) -> Schedule:
    """An ordinary llmsim run of the config, observed."""
    from llmsim.orchestrator import ExperimentOrchestrator

    schedule = Schedule()
    with tempfile.TemporaryDirectory() as out, observed_llmsim(schedule), contextlib.redirect_stdout(io.StringIO()):
        ExperimentOrchestrator(config, output_dir=Path(out)).run(show_progress=False, print_table=False)
    return schedule


# ---- the real scheduler -------------------------------------------------------------------------
@dataclass
class _Priced:
    """A scheduled vLLM request as llmsim's ``batch_shape`` reads one (computed, prompt and output tokens)."""

    num_computed_tokens: int
    num_output_tokens: int
    spec: Any


@dataclass(frozen=True)
class _Spec:
    prompt_tokens: int


def make_vllm_scheduler(scenario: Scenario, num_blocks: int) -> tuple[Any, Any]:
    """vLLM 0.33's v1 scheduler with the scenario's knobs, synchronous (as on the CPU platform), and
    one full-attention KV group of ``num_blocks`` blocks; and the request block hasher (None without
    prefix caching)."""
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    model = ModelConfig(
        model=str(MODEL_DIR), skip_tokenizer_init=True, dtype="bfloat16", seed=0, max_model_len=MAX_MODEL_LEN
    )
    scheduler_config = SchedulerConfig(
        max_num_seqs=scenario.max_num_seqs,
        max_num_batched_tokens=scenario.max_num_batched_tokens,
        max_model_len=MAX_MODEL_LEN,
        enable_chunked_prefill=scenario.enable_chunked_prefill,
        async_scheduling=False,
        is_encoder_decoder=False,
    )
    cache = CacheConfig(
        block_size=scenario.block_size,
        gpu_memory_utilization=0.9,
        cache_dtype="auto",
        enable_prefix_caching=scenario.enable_prefix_caching,
    )
    config = VllmConfig(scheduler_config=scheduler_config, model_config=model, cache_config=cache)
    spec = FullAttentionSpec(block_size=scenario.block_size, num_kv_heads=8, head_size=128, dtype=torch.bfloat16)
    kv_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["model.layers.*.self_attn.attn"], spec)],
    )
    config.cache_config.num_gpu_blocks = num_blocks
    scheduler = Scheduler(
        vllm_config=config,
        kv_cache_config=kv_config,
        structured_output_manager=StructuredOutputManager(config),
        block_size=scenario.block_size,
        log_stats=False,
    )
    hasher = None
    if scenario.enable_prefix_caching:
        hash_fn = get_hash_fn_by_name(config.cache_config.prefix_caching_hash_algo)
        init_none_hash(hash_fn)
        hasher = get_request_block_hasher(scenario.block_size, hash_fn)
    return scheduler, hasher


def run_real(scenario: Scenario, num_blocks: int, framework: Any, seed: int) -> Schedule:
    """Drive vLLM's scheduler through the stream, each step priced by llmsim's ``framework``."""
    from vllm.sampling_params import SamplingParams
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request

    scheduler, hasher = make_vllm_scheduler(scenario, num_blocks)
    prompts, outputs = token_ids(scenario, seed)
    pending = deque(sorted(scenario.requests, key=lambda r: (r.arrival, r.rid)))
    schedule = Schedule()
    clock = 0.0
    while True:
        while pending and pending[0].arrival <= clock:
            r = pending.popleft()
            params = SamplingParams(max_tokens=r.output, ignore_eos=True, temperature=0.0)
            scheduler.add_request(
                Request(
                    request_id=str(r.rid),
                    prompt_token_ids=prompts[r.rid],
                    sampling_params=params,
                    pooling_params=None,
                    arrival_time=r.arrival,
                    block_hasher=hasher,
                )
            )
        if scheduler.get_num_unfinished_requests() == 0:
            if not pending:
                return schedule
            clock = max(clock, pending[0].arrival)  # idle until the next request
            continue
        out = scheduler.schedule()
        tokens = out.num_scheduled_tokens
        if not tokens:
            scheduler.update_from_output(out, ModelRunnerOutput(req_ids=[], req_id_to_index={}))
            if not pending:
                raise RuntimeError(f"{scenario.name}: vLLM scheduled nothing at t={clock} with nothing left to arrive")
            clock = max(clock, pending[0].arrival)
            continue
        req_ids = list(tokens)
        priced, step, sampled = [], [], []
        for rid in req_ids:
            request = scheduler.requests[rid]
            n = tokens[rid]
            computed = request.num_computed_tokens - n  # schedule() has advanced it already
            priced.append((_Priced(computed, request.num_output_tokens, _Spec(request.num_prompt_tokens)), n))
            step.append((int(rid), computed, n))
            done = computed + n >= request.num_tokens
            sampled.append([outputs[int(rid)][request.num_output_tokens]] if done else [])
        schedule.add_step(clock, tuple(step))
        schedule.preemptions += len(out.preempted_req_ids or ())
        clock += framework.step_duration(framework.batch_shape(priced), len(req_ids))
        result = ModelRunnerOutput(
            req_ids=req_ids, req_id_to_index={rid: i for i, rid in enumerate(req_ids)}, sampled_token_ids=sampled
        )
        for engine_output in scheduler.update_from_output(out, result).values():
            for o in engine_output.outputs:
                rid = int(o.request_id)
                if o.new_token_ids:
                    schedule.first_token.setdefault(rid, clock)
                if o.finish_reason is not None:
                    schedule.finish[rid] = clock


# ---- comparison ---------------------------------------------------------------------------------
def compare(scenario: Scenario, seed: int, real: Schedule, sim: Schedule) -> Comparison:
    """Where the two schedules first differ, if anywhere."""
    common = min(len(real.steps), len(sim.steps))
    differing = next((k for k in range(common) if real.steps[k] != sim.steps[k]), None)
    if differing is None and len(real.steps) != len(sim.steps):
        differing = common
    timing = next((k for k in range(common) if real.step_times[k] != sim.step_times[k]), None)
    rids = {r.rid for r in scenario.requests}
    mismatched = sum(
        1
        for rid in rids
        if real.first_token.get(rid) != sim.first_token.get(rid) or real.finish.get(rid) != sim.finish.get(rid)
    )
    return Comparison(
        scenario=scenario.name,
        seed=seed,
        steps_real=len(real.steps),
        steps_llmsim=len(sim.steps),
        first_differing_step=differing,
        first_differing_time_step=timing,
        requests=len(rids),
        requests_with_time_differences=mismatched,
        preemptions_real=real.preemptions,
        preemptions_llmsim=sim.preemptions,
    )


def run_both(scenario: Scenario, seed: int, *, fast_forward: bool = False) -> tuple[Schedule, Schedule]:
    """The real scheduler's and llmsim's schedules of one scenario (both with the same KV block count)."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.csv"
        write_trace(scenario, trace)
        blocks = scenario.num_gpu_blocks
        if blocks is None:  # llmsim's memory plan for the GPU, pinned so both sides get the same count
            probe = llmsim_framework(experiment(llmsim_overrides(scenario, trace, fast_forward=False, num_blocks=None)))
            blocks = probe.memory_plan.num_blocks
        config = experiment(llmsim_overrides(scenario, trace, fast_forward=fast_forward, num_blocks=blocks))
        real = run_real(scenario, blocks, llmsim_framework(config), seed)
        sim = run_llmsim(config)
    return real, sim


def conformance(name: str, seed: int) -> Comparison:
    """Run one scenario on both sides and compare."""
    scenario = SCENARIOS[name](seed)
    real, sim = run_both(scenario, seed)
    return compare(scenario, seed, real, sim)


def table(rows: list[Comparison]) -> str:
    """A Markdown table of comparisons."""
    lines = [
        "| scenario | seed | steps (vLLM / llmsim) | first step with another batch | first step at another time "
        "| requests with other times | preemptions (vLLM / llmsim) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        first = "-" if c.first_differing_step is None else str(c.first_differing_step)
        timing = "-" if c.first_differing_time_step is None else str(c.first_differing_time_step)
        lines.append(
            f"| {c.scenario} | {c.seed} | {c.steps_real} / {c.steps_llmsim} | {first} | {timing} | "
            f"{c.requests_with_time_differences}/{c.requests} | {c.preemptions_real} / {c.preemptions_llmsim} | "
            f"{'identical' if c.conforms else 'DIVERGES'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the conformance table; exit 1 if any scenario diverges."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--seed", type=int, action="append", help="repeatable (default: 0)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    rows = [conformance(name, seed) for seed in args.seed or [0] for name in args.scenarios or SCENARIOS]
    print(table(rows))
    return 0 if all(c.conforms for c in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
