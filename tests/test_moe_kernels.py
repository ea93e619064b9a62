"""MoE kernel efficiency by framework release and GPU family (the engine's MOE_KERNELS table)."""

from __future__ import annotations

from conftest import conf_file, make_config
from scenario import framework_for

from llmsim.calibrate import MIN_CASES_PER_KERNEL_FACTOR, moe_kernel_factors
from llmsim.data import CASES_FILE
from llmsim.frameworks.trtllm import MOE_KERNELS
from llmsim.models import builtin_model_profiles
from llmsim.validate import load_cases


def trtllm_on(hardware: str, **knobs):
    config = make_config(hardware=hardware, model="mixtral_8x7b")
    config["framework"] = {**conf_file("framework", "trtllm"), "tensor_parallel_size": 2, **knobs}
    return framework_for(config)


def test_a_release_with_its_own_moe_kernels_uses_its_fitted_efficiency_on_that_gpu_family():
    assert trtllm_on("h100", version="0.17").perf_model.moe_gemm_scale == MOE_KERNELS.row("0.17").defaults["hopper"]
    assert trtllm_on("h200", version="1.0").perf_model.moe_gemm_scale == MOE_KERNELS.row("1.0").defaults["hopper"]


def test_otherwise_the_hardware_files_moe_efficiency_applies():
    hopper = conf_file("hardware", "h100")["efficiency"]["moe_gemm_relative"]
    ampere = conf_file("hardware", "a100")["efficiency"]["moe_gemm_relative"]
    assert trtllm_on("h100", version="0.9.0").perf_model.moe_gemm_scale == hopper
    assert trtllm_on("a100", version="0.17").perf_model.moe_gemm_scale == ampere


def test_a_set_moe_gemm_relative_wins():
    assert trtllm_on("h100", version="0.17", moe_gemm_relative=0.5).perf_model.moe_gemm_scale == 0.5


def test_kernel_factors_are_fitted_only_where_enough_cases_measured_them():
    cases = load_cases(CASES_FILE)
    moe = frozenset(name for name, p in builtin_model_profiles().items() if p.is_moe)
    factors = moe_kernel_factors(cases, moe)
    assert {f.label for f in factors} == {"trtllm.moe_kernels.0.15.0.hopper", "trtllm.moe_kernels.1.0.0.hopper"}
    for factor in factors:
        touched = sum(bool(factor.applies(row)) for _, row in cases.iterrows())
        assert touched >= MIN_CASES_PER_KERNEL_FACTOR
        assert 0.1 <= factor.low <= factor.value <= factor.high <= 1.0
