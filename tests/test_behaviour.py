"""Physically sensible behaviour of whole runs: low load, saturation, KV pressure, determinism."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from conftest import constant_profile, make_config
from scenario import framework_for, run_quietly, step_time


def test_at_very_low_load_ttft_is_one_prefill_step_plus_network_and_tpot_one_decode_step():
    config = make_config(
        workload={"rate": 0.05, "total_duration": 200, "client_profiles": [constant_profile(200, 50)]},
    )
    fw = framework_for(config)
    prefill = step_time(fw, prefill=[(200, 0, True)])
    decode = step_time(fw, decode=[225])  # mid-answer context
    summary, _requests, _ = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    assert metrics["completed"] >= 5
    network = 2 * 1e-4  # upload + first token download latency
    assert metrics["median_ttft_ms"] == pytest.approx((prefill + network) * 1e3, rel=0.02)
    assert metrics["median_tpot_ms"] == pytest.approx(decode * 1e3, rel=0.02)
    assert metrics["mean_batch_size"] < 1.1


def test_a100_llama3_8b_batch_one_decode_step_is_near_weights_over_bandwidth():
    fw = framework_for(make_config())
    gpu_time = fw.perf_model.step_time(_decode_batch(fw, 1, 512))
    weights = 8.03e9 * 2
    floor = weights / 2039e9
    assert floor < gpu_time < 1.4 * floor  # ~8 ms of weight streaming plus kernels, before CPU overhead


def _decode_batch(fw, size, context):
    batch = fw.perf_model.new_batch()
    for _ in range(size):
        batch.add_decode(context)
    return batch


def test_throughput_rises_then_flattens_while_p99_ttft_climbs_past_saturation():
    results = []
    for rate in (1, 3, 12, 24):
        config = make_config(
            workload={"rate": rate, "total_duration": 40, "client_profiles": [constant_profile(2000, 200)]}
        )
        metrics = run_quietly(config)[0]["frameworks"]["vllm"]
        results.append((rate, metrics["output_throughput"], metrics["p99_ttft_ms"]))
    throughput = [r[1] for r in results]
    ttft = [r[2] for r in results]
    assert throughput[1] > 2.5 * throughput[0]  # well below saturation: throughput follows the rate
    assert throughput[3] < 1.1 * throughput[2]  # past saturation: flat
    assert ttft[2] > 10 * ttft[1]  # queueing makes p99 TTFT climb steeply past saturation
    assert ttft[3] > 2 * ttft[2]


def test_kv_pressure_causes_preemption_and_recomputation_but_no_request_is_lost():
    config = make_config(
        framework={"num_gpu_blocks_override": 200, "max_num_seqs": 64},
        workload={"kind": "offline", "num_requests": 60, "client_profiles": [constant_profile(300, 200)]},
    )
    summary, requests, steps = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    assert metrics["preemptions"] > 0
    assert metrics["completed"] == 60 and metrics["failed"] == 0 and metrics["incomplete"] == 0
    assert (requests["output_tokens"] == 200).all()
    assert steps["kv_blocks_used"].max() <= 200
    assert steps["kv_blocks_used"].iloc[-1] == 0 or steps["num_running"].iloc[-1] == 0


def test_same_config_and_seed_give_identical_summaries_and_a_new_seed_changes_them():
    base = {"rate": 8, "total_duration": 30, "client_profiles": [_chat_profile()]}
    first = run_quietly(make_config(workload=base))[0]
    second = run_quietly(make_config(workload=base))[0]
    other = run_quietly(make_config(workload={**base, "random_seed": 7}))[0]
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert json.dumps(first, sort_keys=True) != json.dumps(other, sort_keys=True)


def _chat_profile():
    return {
        "profile_name": "chat",
        "weight": 1.0,
        "prompt_tokens_dist_config": {"type": "LogNormal", "mean": 300, "sigma": 150, "is_int": True},
        "max_output_tokens_dist_config": {"type": "Uniform", "low": 20, "high": 120, "is_int": True},
        "conversational_probability": 0.3,
        "streaming_response_probability": 0.8,
    }


def test_workload_rate_is_split_over_profiles_by_weight():
    heavy = {**constant_profile(50, 5), "profile_name": "heavy", "weight": 3.0}
    light = {**constant_profile(50, 5), "profile_name": "light", "weight": 1.0}
    config = make_config(workload={"rate": 20, "total_duration": 100, "client_profiles": [heavy, light]})
    _, requests, _ = run_quietly(config)
    counts = requests["profile"].value_counts()
    assert counts["heavy"] / 100 == pytest.approx(15, rel=0.1)
    assert counts["light"] / 100 == pytest.approx(5, rel=0.2)


def test_warm_up_requests_are_left_out_of_the_statistics():
    workload = {"rate": 5, "total_duration": 40, "client_profiles": [constant_profile(100, 20)]}
    all_requests = run_quietly(make_config(workload=workload))[0]["frameworks"]["vllm"]
    warm = run_quietly(make_config(workload=workload, metrics={"warm_up_duration_s": 20}))
    summary, requests, _ = warm
    measured = (requests["send_time_s"] >= 20).sum()
    assert summary["frameworks"]["vllm"]["completed"] == measured < all_requests["completed"]


def test_percentiles_given_as_fractions_and_as_percents_name_the_same_metrics():
    workload = {"rate": 5, "total_duration": 20, "client_profiles": [constant_profile(100, 20)]}
    as_fractions = run_quietly(make_config(workload=workload, metrics={"percentiles_to_calculate": [0.5, 0.99]}))[0]
    as_percents = run_quietly(make_config(workload=workload, metrics={"percentiles_to_calculate": [50, 99]}))[0]
    assert as_fractions["frameworks"] == as_percents["frameworks"]
    assert "p99_ttft_ms" in as_percents["frameworks"]["vllm"]


def test_closed_loop_keeps_at_most_concurrency_requests_in_flight_and_obeys_littles_law():
    config = make_config(
        workload={
            "kind": "closed_loop",
            "concurrency": 8,
            "num_requests": 120,
            "client_profiles": [constant_profile(200, 64)],
        }
    )
    summary, _requests, steps = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    assert metrics["completed"] == 120
    assert steps["num_running"].max() + steps["num_waiting"].max() <= 8
    in_flight = metrics["request_throughput"] * metrics["mean_e2el_ms"] / 1e3
    assert in_flight == pytest.approx(8, rel=0.05)


def test_itl_pools_every_streamed_gap_and_matches_tpot_for_steady_decode():
    config = make_config(workload={"kind": "offline", "num_requests": 4, "client_profiles": [constant_profile(64, 33)]})
    summary, _, _ = run_quietly(config)
    metrics = summary["frameworks"]["vllm"]
    # gaps are pooled at 1 us resolution: the means agree to within half a microsecond
    assert metrics["mean_itl_ms"] == pytest.approx(metrics["mean_tpot_ms"], abs=5e-4)
    assert np.isfinite(metrics["p99_itl_ms"])


def test_long_runs_spill_the_step_series_to_disk_without_changing_anything(monkeypatch, tmp_path):
    import llmsim.metrics.step_series as step_series_module

    workload = {"rate": 6, "total_duration": 20, "client_profiles": [_chat_profile()]}
    whole, _, whole_steps = run_quietly(make_config(workload=workload))
    monkeypatch.setattr(step_series_module, "STEP_CHUNK", 50)
    spilled, _, spilled_steps = run_quietly(make_config(workload=workload))
    assert json.dumps(whole, sort_keys=True) == json.dumps(spilled, sort_keys=True)
    assert whole_steps.equals(spilled_steps) and len(spilled_steps) > 200


def test_bucketed_step_series_aggregates_every_step_of_the_per_step_series(monkeypatch):
    import llmsim.metrics.step_series as step_series_module

    workload = {"rate": 6, "total_duration": 20, "client_profiles": [_chat_profile()]}
    summary, _, steps = run_quietly(make_config(workload=workload))
    monkeypatch.setattr(step_series_module, "STEP_CHUNK", 50)  # buckets straddle chunks: partials merge
    bucketed_summary, _, buckets = run_quietly(make_config(workload=workload, metrics={"step_series_bucket_s": 2.0}))
    assert json.dumps(summary, sort_keys=True) == json.dumps(bucketed_summary, sort_keys=True)
    assert len(steps) > 200 and len(buckets) < len(steps) / 10

    steps["bucket"] = np.floor(steps["time_s"] / 2.0)
    by_bucket = steps.groupby("bucket")
    weight = steps["duration_s"]
    expected_kv_mean = (steps["kv_blocks_used"] * weight).groupby(steps["bucket"]).sum() / by_bucket["duration_s"].sum()
    assert buckets["time_s"].tolist() == [2.0 * b for b in by_bucket.groups]
    assert buckets["steps"].tolist() == by_bucket.size().tolist()
    assert buckets["num_tokens"].tolist() == by_bucket["num_tokens"].sum().tolist()
    assert buckets["kv_blocks_used_max"].tolist() == by_bucket["kv_blocks_used"].max().tolist()
    np.testing.assert_allclose(buckets["busy_s"], by_bucket["duration_s"].sum(), rtol=1e-12)
    np.testing.assert_allclose(buckets["kv_blocks_used_mean"], expected_kv_mean, rtol=1e-12)
    assert (buckets["num_seqs_mean"] <= buckets["num_seqs_max"]).all()


def test_a_run_with_a_long_per_step_series_suggests_buckets_and_a_bucketed_one_does_not(monkeypatch, caplog):
    import llmsim.orchestrator as orchestrator_module

    monkeypatch.setattr(orchestrator_module, "LONG_STEP_SERIES", 20)
    workload = {"kind": "offline", "num_requests": 8, "client_profiles": [constant_profile(64, 40)]}
    with caplog.at_level("INFO", logger="llmsim.orchestrator"):
        run_quietly(make_config(workload=workload))
    assert "metrics.step_series_bucket_s=1" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="llmsim.orchestrator"):
        run_quietly(make_config(workload=workload, metrics={"step_series_bucket_s": 1.0}))
    assert "step_series_bucket_s" not in caplog.text


def test_request_table_is_sorted_by_framework_and_id_and_leaves_the_records_free_to_grow():
    from conftest import conf_file

    from llmsim import ExperimentOrchestrator

    config = make_config(workload={"rate": 10, "total_duration": 10, "client_profiles": [_chat_profile()]})
    config.pop("framework")
    config["frameworks"] = {name: conf_file("framework", name) for name in ("vllm", "sglang")}
    orchestrator = ExperimentOrchestrator(config)
    with contextlib.redirect_stdout(io.StringIO()):
        orchestrator.run()
    collector = orchestrator.metrics_collector
    table = collector.get_all_request_metrics_df()
    expected = table.sort_values(["framework", "request_id"], kind="stable", ignore_index=True)
    assert table["framework"].iloc[0] == "sglang" and table["framework"].iloc[-1] == "vllm"
    assert table.equals(expected)
    for record in collector.requests.values():  # a column still viewed by the table could not grow
        record.append(record[-1])
    assert len(collector.get_all_request_metrics_df()) == len(table) + 1
