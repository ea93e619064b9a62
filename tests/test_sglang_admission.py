"""SGLang 0.5.6's admission (``schedule_policy.py`` PrefillAdder) and GPU-dependent defaults (``server_args.py``)."""

from __future__ import annotations

import pytest
from conftest import conf_file, constant_profile, make_config
from scenario import framework_for, run_quietly

from llmsim.frameworks.sglang import default_mem_fraction_static, gpu_memory_defaults
from llmsim.hardware.spec import GIB


def sglang_config(workload: dict | None = None, **knobs) -> dict:
    config = make_config(hardware="h100", workload=workload)
    config["framework"] = {**conf_file("framework", "sglang"), **knobs}
    return config


@pytest.mark.parametrize(
    ("gib", "tp", "expected"),
    [
        (24, 1, (2048, 24)),  # L4, A10G
        (48, 1, (4096, 32)),  # L40S
        (80, 1, (8192, 256)),  # H100, A100-80G
        (80, 4, (8192, 512)),
        (141, 8, (8192, 512)),  # H200
        (180, 1, (16384, 512)),  # B200
    ],
)
def test_chunked_prefill_size_and_cuda_graph_max_bs_follow_gpu_memory_and_tp(gib, tp, expected):
    assert gpu_memory_defaults(gib * GIB, tp) == expected


def test_mem_fraction_static_leaves_sglangs_reserve_for_activations_and_graphs():
    # one 80 GiB H100: 512 + 1.5 x 8192 + 2 x 256 + 1024 / 8 = 13440 MiB reserved of 81920
    assert default_mem_fraction_static(80 * GIB, 8192, 256, 1) == round((81920 - 13440) / 81920, 3) == 0.836
    # a small GPU reserves no 10 GiB floor: 24 GiB L4, 512 + 3072 + 48 + 128 = 3760 MiB
    assert default_mem_fraction_static(24 * GIB, 2048, 24, 1) == round((24576 - 3760) / 24576, 3)
    framework = framework_for(sglang_config())
    assert framework.describe()["mem_fraction_static"] == 0.836


def test_a_new_request_reserves_its_whole_output_while_running_ones_count_at_new_token_ratio():
    # 2,000 tokens of pool; two requests of 100 + 1,000. The first reserves 1,100, leaving 900: the
    # second (1,100) waits. Once the first runs, it counts 100 + 0.7 x 1,000 = 800: 1,200 left, room.
    workload = {"num_requests": 2, "client_profiles": [constant_profile(100, 1000)]}
    _, requests, steps = run_quietly(sglang_config(workload, num_gpu_blocks_override=2000))
    first, second = requests.sort_values("request_id")["first_scheduled_time_s"]
    assert list(steps["num_running"].iloc[:2]) == [1, 2]
    assert (first, second) == (0.0, steps["time_s"].iloc[1])  # the second joins in the second step
    _, roomy, _ = run_quietly(sglang_config(workload, num_gpu_blocks_override=20_000))
    assert list(roomy["first_scheduled_time_s"]) == [0.0, 0.0]


def test_new_token_ratio_resets_when_the_scheduler_idles():
    config = sglang_config({"num_requests": 1, "client_profiles": [constant_profile(100, 50)]})
    framework = framework_for(config)
    framework.new_token_ratio = 0.2  # as after many decode steps
    framework.on_idle()
    assert framework.new_token_ratio == 0.7


def test_schedule_conservativeness_scales_the_initial_ratio_and_its_floor():
    careful = framework_for(sglang_config(schedule_conservativeness=2.0))
    assert (careful.init_new_token_ratio, careful.min_new_token_ratio) == (1.0, 0.14)
    bold = framework_for(sglang_config(schedule_conservativeness=0.5))
    assert bold.init_new_token_ratio == pytest.approx(0.35)
    assert bold.min_new_token_ratio == pytest.approx(0.35 * 0.14)
