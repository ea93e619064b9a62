"""Each framework's policies doing what the real scheduler does, seen through whole runs."""

from __future__ import annotations

import contextlib
import io

import pytest
from conftest import CONF, conf_file, constant_profile, make_config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from llmsim import ConfigError, ExperimentOrchestrator


def with_framework(config: dict, name: str, **knobs) -> dict:
    framework = conf_file("framework", name)
    framework.update(knobs)
    config["framework"] = framework
    return config


def run(config: dict):
    """Run; return (summary metrics of the only framework, requests, steps, the framework instance)."""
    orchestrator = ExperimentOrchestrator(config)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = orchestrator.run(show_progress=False)
    collector = orchestrator.metrics_collector
    framework = orchestrator.llm_framework_instances[0]
    metrics = summary["frameworks"][framework.framework_id]
    return metrics, collector.get_all_request_metrics_df(), collector.get_step_series_df(), framework


def assert_no_kv_leak(framework) -> None:
    kv = framework.kv
    if hasattr(kv, "pool"):
        assert kv.pool.num_used == 0
        assert all(count == 0 for count in kv.pool.ref_counts)
    else:
        cache = kv.cache
        assert cache.private_tokens == 0
        assert cache.evictable_tokens == cache.tree_tokens  # nothing locked once drained


SHARED_PREFIX = constant_profile(
    100, 40, shared_prefix_groups=2, shared_prefix_tokens_dist_config={"type": "Constant", "value": 1500}
)


# ---- prefix caches -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("framework", "off"),
    [
        ("vllm", {"enable_prefix_caching": False}),
        ("sglang", {"disable_radix_cache": True}),
        ("trtllm", {"enable_block_reuse": False}),
    ],
)
def test_shared_system_prompt_gives_cache_hits_and_lower_ttft_than_caching_off(framework, off):
    workload = {"rate": 4, "total_duration": 30, "client_profiles": [SHARED_PREFIX]}
    on_metrics, _, _, fw = run(with_framework(make_config(workload=workload), framework))
    off_metrics, _, _, _ = run(with_framework(make_config(workload=workload), framework, **off))
    assert on_metrics["prefix_cache_hit_rate"] > 0.8
    assert off_metrics["prefix_cache_hit_rate"] == 0.0
    assert on_metrics["mean_ttft_ms"] < 0.5 * off_metrics["mean_ttft_ms"]
    assert_no_kv_leak(fw)


# ---- TensorRT-LLM capacity policies ----------------------------------------------------------------
def _trt_pressure(policy: str):
    config = make_config(
        workload={"kind": "offline", "num_requests": 40, "client_profiles": [constant_profile(300, 200)]},
    )
    return run(with_framework(config, "trtllm", capacity_scheduler_policy=policy, num_gpu_blocks_override=100))


def test_guaranteed_no_evict_never_pauses_and_runs_fewer_requests_than_max_utilization():
    gne, gne_requests, gne_steps, gne_fw = _trt_pressure("GUARANTEED_NO_EVICT")
    mu, mu_requests, mu_steps, mu_fw = _trt_pressure("MAX_UTILIZATION")
    assert gne["num_paused"] == 0 and (gne_requests["preemptions"] == 0).all()
    # whole sequences need 16 blocks of 32 tokens: at most 6 fit in 100 blocks
    assert gne_steps["num_running"].max() <= 6
    assert mu_steps["num_running"].max() > gne_steps["num_running"].max()
    assert mu["num_paused"] > 0
    for metrics, requests, fw in ((gne, gne_requests, gne_fw), (mu, mu_requests, mu_fw)):
        assert metrics["completed"] == 40 and (requests["output_tokens"] == 200).all()
        assert_no_kv_leak(fw)


def test_static_batch_policy_runs_batches_in_lockstep_and_admits_nothing_mid_batch():
    config = make_config(
        workload={"kind": "offline", "num_requests": 12, "client_profiles": [constant_profile(64, 16)]}
    )
    metrics, _, steps, fw = run(
        with_framework(config, "trtllm", capacity_scheduler_policy="STATIC_BATCH", max_batch_size=5)
    )
    assert metrics["completed"] == 12
    prefills = steps[steps["num_prefill_tokens"] > 0]
    assert list(prefills["num_seqs"]) == [5, 5, 2]
    assert (steps["num_prefill_tokens"][steps["num_decode_seqs"] > 0] == 0).all()
    assert_no_kv_leak(fw)


def test_trtllm_rejects_prompts_over_max_num_tokens_without_chunking_and_chunks_with_it():
    config = make_config(
        workload={"kind": "offline", "num_requests": 1, "client_profiles": [constant_profile(3000, 4)]}
    )
    metrics, requests, _, _ = run(with_framework(config, "trtllm", max_num_tokens=2048))
    assert metrics["failed"] == 1 and "max_num_tokens 2048" in requests.iloc[0]["reason"]
    config = make_config(
        workload={"kind": "offline", "num_requests": 1, "client_profiles": [constant_profile(3000, 4)]}
    )
    metrics, _, steps, _ = run(with_framework(config, "trtllm", max_num_tokens=2048, enable_chunked_prefill=True))
    assert metrics["completed"] == 1 and list(steps["num_prefill_tokens"][:2]) == [2048, 952]


# ---- SGLang ---------------------------------------------------------------------------------------
def test_lpm_serves_cache_sharing_requests_ahead_of_fcfs_order():
    shared = {**SHARED_PREFIX, "profile_name": "shared", "shared_prefix_groups": 1}
    unique = {**constant_profile(1600, 40), "profile_name": "unique"}
    workload = {"kind": "offline", "num_requests": 60, "client_profiles": [shared, unique]}

    def shared_lead(policy: str) -> float:
        config = with_framework(
            make_config(workload=workload), "sglang", schedule_policy=policy, max_running_requests=4
        )
        _, requests, _, fw = run(config)
        assert_no_kv_leak(fw)
        by_profile = requests.groupby("profile")["first_scheduled_time_s"].mean()
        return by_profile["unique"] - by_profile["shared"]

    assert shared_lead("lpm") > shared_lead("fcfs") + 0.2


def test_sglang_prefill_batches_do_not_mix_with_decode_and_long_prompts_are_chunked():
    config = make_config(
        workload={"kind": "offline", "num_requests": 3, "client_profiles": [constant_profile(5000, 8)]}
    )
    _, _, steps, fw = run(with_framework(config, "sglang", chunked_prefill_size=2048))
    assert ((steps["num_prefill_tokens"] == 0) | (steps["num_decode_seqs"] == 0)).all()
    assert steps["num_prefill_tokens"].max() <= 2048
    assert steps["num_prefill_tokens"].sum() == 3 * 5000
    assert_no_kv_leak(fw)


def test_sglang_retracts_under_memory_pressure_and_loses_no_request():
    config = make_config(
        workload={"kind": "offline", "num_requests": 30, "client_profiles": [constant_profile(200, 300)]}
    )
    metrics, requests, _, fw = run(with_framework(config, "sglang", num_gpu_blocks_override=3000))
    assert metrics["num_retracted"] > 0
    assert metrics["completed"] == 30 and (requests["output_tokens"] == 300).all()
    assert_no_kv_leak(fw)


# ---- vLLM v0 ---------------------------------------------------------------------------------------
def test_vllm_v0_steps_are_prefill_only_or_decode_only():
    workload = {"rate": 10, "total_duration": 20, "client_profiles": [constant_profile(300, 50)]}
    metrics, _, steps, fw = run(with_framework(make_config(workload=workload), "vllm", engine_version="v0"))
    assert metrics["completed"] > 100
    assert ((steps["num_prefill_tokens"] == 0) | (steps["num_decode_seqs"] == 0)).all()
    assert_no_kv_leak(fw)


# 40 requests of 300 + 200 tokens into 200 blocks of 16: the cache overflows and requests are swapped out
SWAP_WORKLOAD = {"kind": "offline", "num_requests": 40, "client_profiles": [constant_profile(300, 200)]}


def v0_on_swap_workload(**knobs) -> dict:
    """vLLM v0 on :data:`SWAP_WORKLOAD` with 200 blocks (the cache overflows), plus ``knobs``."""
    return with_framework(
        make_config(workload=SWAP_WORKLOAD), "vllm", engine_version="v0", num_gpu_blocks_override=200, **knobs
    )


def test_vllm_v0_swap_preemption_moves_kv_to_host_and_resumes_without_recompute():
    swap, _, swap_steps, fw = run(v0_on_swap_workload(preemption_mode="swap"))
    recompute, _, recompute_steps, _ = run(v0_on_swap_workload())
    assert swap["num_swapped_out"] > 0 and swap["num_preempted"] == 0
    assert recompute["num_preempted"] > 0 and recompute["num_swapped_out"] == 0
    assert swap["completed"] == recompute["completed"] == 40
    # recompute re-prefills prompt + generated tokens; swapping never prefills a request twice
    assert swap_steps["num_prefill_tokens"].sum() == 40 * 300
    assert recompute_steps["num_prefill_tokens"].sum() > 40 * 300
    assert_no_kv_leak(fw)


def test_vllm_v0_with_chunked_prefill_swaps_requests_back_in():
    """The chunked-prefill scheduler serves running, then swapped, then new requests (it used to strand them)."""
    metrics, requests, steps, fw = run(v0_on_swap_workload(enable_chunked_prefill=True, preemption_mode="swap"))
    assert metrics["num_swapped_out"] > 0 and metrics["num_preempted"] == 0
    assert metrics["completed"] == 40 and (requests["output_tokens"] == 200).all()
    assert steps["num_prefill_tokens"].sum() == 40 * 300  # swapped back, never recomputed
    assert not fw.swapped
    assert_no_kv_leak(fw)


def test_swap_preemption_is_refused_for_the_v1_engine():
    config = with_framework(make_config(), "vllm", preemption_mode="swap")
    with pytest.raises(ConfigError, match="exists only in engine_version v0"):
        ExperimentOrchestrator(config)


# ---- static batching ---------------------------------------------------------------------------------
def test_static_batch_returns_with_its_longest_member():
    short = {**constant_profile(100, 10, streaming=0.0), "profile_name": "short"}
    long = {**constant_profile(100, 200, streaming=0.0), "profile_name": "long"}
    workload = {"kind": "offline", "num_requests": 20, "client_profiles": [short, long]}
    _, static_requests, _, _ = run(with_framework(make_config(workload=workload), "static", max_batch_size=32))
    _, vllm_requests, _, _ = run(with_framework(make_config(workload=workload), "vllm"))
    completion = static_requests["completion_time_s"]
    assert completion.max() - completion.min() < 1e-5  # one batch: everyone returns at its end (+ transfer)
    static_short = static_requests[static_requests["profile"] == "short"]["e2el_ms"].mean()
    vllm_short = vllm_requests[vllm_requests["profile"] == "short"]["e2el_ms"].mean()
    assert static_short > 5 * vllm_short


def test_static_batching_has_worse_ttft_and_throughput_than_continuous_batching_at_the_same_load():
    profile = {
        **constant_profile(200, 100),
        "max_output_tokens_dist_config": {"type": "Uniform", "low": 20, "high": 400, "is_int": True},
    }
    workload = {"rate": 12, "total_duration": 60, "client_profiles": [profile]}
    static, _, _, _ = run(with_framework(make_config(workload=workload), "static"))
    continuous, _, _, _ = run(with_framework(make_config(workload=workload), "vllm"))
    assert static["mean_ttft_ms"] > 3 * continuous["mean_ttft_ms"]
    assert static["output_throughput"] < 0.9 * continuous["output_throughput"]


# ---- several frameworks in one experiment --------------------------------------------------------
def compose_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def test_compare_frameworks_preset_gives_one_summary_where_every_framework_saw_the_same_requests():
    config = compose_config("experiment=compare_frameworks", "workload.total_duration=20")
    for key in ("output_summary_json_path", "output_requests_parquet_path", "output_steps_parquet_path"):
        config["metrics"][key] = None
    orchestrator = ExperimentOrchestrator(config)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        summary = orchestrator.run(show_progress=False)
    assert list(summary["frameworks"]) == ["vllm", "trtllm", "sglang"]
    header = next(line for line in output.getvalue().splitlines() if "metric" in line and "vllm" in line)
    assert "trtllm" in header and "sglang" in header  # one table, a column each
    assert [d["gpus"] for d in summary["deployments"].values()] == [["gpu0"], ["gpu1"], ["gpu2"]]
    requests = orchestrator.metrics_collector.get_all_request_metrics_df()
    first_turns = requests[requests["turn"] == 0]
    columns = ["request_id", "send_time_s", "prompt_tokens", "max_output_tokens", "streaming"]
    per_framework = [g[columns].reset_index(drop=True) for _, g in first_turns.groupby("framework", sort=False)]
    assert len(per_framework) == 3
    for other in per_framework[1:]:
        assert other.equals(per_framework[0])


def test_two_frameworks_on_the_same_gpu_are_rejected_clearly():
    config = compose_config("experiment=compare_frameworks", "frameworks.trtllm.gpu_ids=[gpu0]")
    with pytest.raises(
        ConfigError, match=r"frameworks.trtllm.gpu_ids='gpu0' is not valid: a GPU not already used by vllm"
    ):
        ExperimentOrchestrator(config).setup_simulation()
