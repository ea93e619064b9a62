"""Overlapped CPU scheduling: vLLM's async scheduling (AsyncScheduler) prepares step n+1 while the
GPU runs step n, so a step takes the longer of its GPU and CPU work plus the token hand-over."""

from __future__ import annotations

import pytest
from conftest import conf_file, make_config
from scenario import framework_for

from llmsim.frameworks.vllm import VLLMFramework


def vllm(**knobs):
    return framework_for(make_config(framework=knobs))


def test_async_scheduling_is_the_default_from_vllm_0_14_and_off_before():
    assert vllm().overlaps_cpu  # the newest release modelled
    assert vllm(version="0.14.0").overlaps_cpu
    assert not vllm(version="0.11.0").overlaps_cpu
    assert not vllm(version="0.33.0", async_scheduling=False).overlaps_cpu
    assert vllm(version="0.11.0", async_scheduling=True).overlaps_cpu


def test_a_step_takes_the_longer_of_gpu_and_cpu_work_plus_the_hand_over():
    fw = vllm(step_overhead_s=2.5e-3, per_seq_overhead_s=1.0e-5, async_scheduling=True)
    gap = VLLMFramework.sync_gap_s
    # 8 sequences: CPU 2.5 ms + 8 x 10 us = 2.58 ms
    assert fw.with_overheads(5.0e-3, 8) == pytest.approx(5.0e-3 + gap)  # GPU-bound: the CPU work is hidden
    assert fw.with_overheads(1.0e-3, 8) == pytest.approx(2.58e-3 + gap)  # CPU-bound: the GPU waits for it


def test_without_async_scheduling_cpu_work_follows_the_gpu_work():
    fw = vllm(step_overhead_s=2.5e-3, per_seq_overhead_s=1.0e-5, async_scheduling=False)
    assert fw.with_overheads(5.0e-3, 8) == pytest.approx(7.58e-3)


def test_overlap_applies_to_fast_forwarded_decode_stretches_alike():
    import numpy as np

    fw = vllm(step_overhead_s=2.5e-3, per_seq_overhead_s=0.0, async_scheduling=True)
    times = fw.with_overheads(np.array([1.0e-3, 5.0e-3]), 4)
    assert times.tolist() == [fw.with_overheads(1.0e-3, 4), fw.with_overheads(5.0e-3, 4)]


def test_the_v0_engine_has_no_async_scheduler():
    assert not vllm(engine_version="v0").overlaps_cpu
    assert not vllm(engine_version="v0", async_scheduling=True).overlaps_cpu


def trtllm(**knobs):
    config = make_config()
    config["framework"] = {**conf_file("framework", "trtllm"), **knobs}
    return framework_for(config)


def test_tensorrt_llm_overlaps_cpu_work_on_its_pytorch_backend_unless_disabled():
    assert trtllm(backend="pytorch").overlaps_cpu
    assert not trtllm(backend="pytorch", disable_overlap_scheduler=True).overlaps_cpu
    assert not trtllm(backend="tensorrt").overlaps_cpu  # TensorRT engines keep the fitted serial remainder
    overlapped = trtllm(backend="pytorch", step_overhead_s=2.0e-3, per_seq_overhead_s=0.0)
    assert overlapped.with_overheads(10.0e-3, 8) == pytest.approx(10.0e-3 + overlapped.sync_gap_s)


def test_sglang_overlap_scheduler_hides_the_cpu_work_unless_disabled():
    def sglang(**knobs):
        config = make_config()
        config["framework"] = {**conf_file("framework", "sglang"), **knobs}
        return framework_for(config)

    cpu = {"step_overhead_s": 2.5e-3, "per_seq_overhead_s": 1.0e-5}
    overlapped, serial = sglang(**cpu), sglang(disable_overlap_schedule=True, **cpu)
    assert overlapped.overlaps_cpu and not serial.overlaps_cpu
    # a 10 ms GPU step of 8 sequences: 2.58 ms of CPU work hidden, or paid after it
    assert overlapped.with_overheads(10.0e-3, 8) == pytest.approx(10.0e-3 + overlapped.sync_gap_s)
    assert serial.with_overheads(10.0e-3, 8) == pytest.approx(12.58e-3)
