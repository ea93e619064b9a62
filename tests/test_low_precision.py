"""FP4 (NVFP4) tensor cores: FP4 GEMMs at the FP4 dense peak where the GPU has one, weight-only elsewhere."""

from __future__ import annotations

from conftest import conf_file
from test_perf_model import EFF, LINK, tiny_model

from llmsim.hardware.perf_model import PerformanceModel
from llmsim.hardware.spec import GIB, ComputeDevice

B200_PEAKS = conf_file("hardware", "b200")["gpu"]["peak_tflops"]


def gpu(peaks: dict) -> ComputeDevice:
    return ComputeDevice(name="gpu", peak_tflops=peaks, memory_gbps=8000, memory_capacity_bytes=180 * GIB)


def test_b200_lists_its_dense_fp4_peak_twice_its_fp8_peak():
    assert B200_PEAKS["fp4"] == 9000 == 2 * B200_PEAKS["fp8"]


def test_fp4_weights_compute_at_the_fp4_peak_on_blackwell():
    pm = PerformanceModel(tiny_model(), gpu(B200_PEAKS), EFF, LINK, dtype="fp4")
    assert pm.peak_flops == 9000e12


def test_fp4_weights_without_fp4_tensor_cores_compute_in_16_bit():
    hopper = {"bf16": 989, "fp16": 989, "fp8": 1979}
    pm = PerformanceModel(tiny_model(), gpu(hopper), EFF, LINK, dtype="fp4")
    assert pm.peak_flops == 989e12
    assert pm.weight_bytes == 0.53125  # still read as 4-bit weights with their block scales
