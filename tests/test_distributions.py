"""Distributions built from ``*_dist_config`` dicts: sample moments, integer ranges, clipping, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmsim.distributions import parse_distribution
from llmsim.errors import ConfigError

KEY = "workload.client_profiles[0].prompt_tokens_dist_config"
N = 200_000


def draw(spec: dict, size: int = N, seed: int = 1234) -> np.ndarray:
    return parse_distribution(spec, KEY).sample(np.random.default_rng(seed), size)


# (spec, mean, standard deviation) of the unclipped distribution
MOMENTS = [
    pytest.param({"type": "Constant", "value": 7}, 7.0, 0.0, id="constant"),
    pytest.param({"type": "Exponential", "rate": 10.0}, 0.1, 0.1, id="exponential"),
    pytest.param({"type": "Uniform", "low": 2, "high": 6}, 4.0, 4 / math.sqrt(12), id="uniform"),
    pytest.param({"type": "Normal", "mean": 100, "sigma": 10}, 100.0, 10.0, id="normal"),
    pytest.param({"type": "LogNormal", "mean": 50, "sigma": 20}, 50.0, 20.0, id="lognormal-mean-sigma"),
    pytest.param(
        {"type": "LogNormal", "mu": 1.0, "sigma_log": 0.5},
        math.exp(1.0 + 0.125),
        math.sqrt((math.exp(0.25) - 1) * math.exp(2.0 + 0.25)),
        id="lognormal-mu-sigma_log",
    ),
    pytest.param({"type": "Gamma", "shape": 0.5, "scale": 4.0}, 2.0, math.sqrt(0.5) * 4.0, id="gamma-scale"),
    pytest.param({"type": "Gamma", "shape": 4.0, "rate": 2.0}, 2.0, 1.0, id="gamma-rate"),
    pytest.param({"type": "Gamma", "shape": 2.0, "mean": 10.0}, 10.0, 10 / math.sqrt(2), id="gamma-mean"),
    pytest.param({"type": "Poisson", "mean": 12.5}, 12.5, math.sqrt(12.5), id="poisson"),
    pytest.param(
        {"type": "Zipf", "s": 1.2, "n": 50},
        sum(k**-0.2 for k in range(1, 51)) / sum(k**-1.2 for k in range(1, 51)),
        math.sqrt(
            sum(k**0.8 for k in range(1, 51)) / sum(k**-1.2 for k in range(1, 51))
            - (sum(k**-0.2 for k in range(1, 51)) / sum(k**-1.2 for k in range(1, 51))) ** 2
        ),
        id="zipf",
    ),
    pytest.param(
        {"type": "Empirical", "values": [10, 20, 40], "weights": [1, 2, 1]}, 22.5, math.sqrt(118.75), id="empirical"
    ),
    pytest.param({"type": "Empirical", "values": [1, 2, 2, 3]}, 2.0, math.sqrt(0.5), id="empirical-unweighted"),
    pytest.param(
        {
            "type": "Mixture",
            "components": [
                {"type": "Constant", "value": 100, "weight": 3},
                {"type": "Exponential", "rate": 0.001, "weight": 1},
            ],
        },
        0.75 * 100 + 0.25 * 1000,
        # E[X^2] = 0.75 * 100^2 + 0.25 * 2 * 1000^2
        math.sqrt(0.75 * 100**2 + 0.25 * 2 * 1000**2 - 325.0**2),
        id="mixture",
    ),
]


@pytest.mark.parametrize(("spec", "mean", "std"), MOMENTS)
def test_sample_mean_matches_the_distribution_mean_within_sampling_error(spec, mean, std):
    values = draw(spec)
    assert values.dtype == np.float64
    assert values.shape == (N,)
    standard_error = std / math.sqrt(N)
    assert abs(values.mean() - mean) <= 5 * standard_error + 1e-12
    assert parse_distribution(spec, KEY).mean() == pytest.approx(mean, rel=1e-12)


@pytest.mark.parametrize(("spec", "mean", "std"), MOMENTS)
def test_sample_standard_deviation_matches_the_distribution(spec, mean, std):
    values = draw(spec)
    assert values.std() == pytest.approx(std, rel=0.03, abs=1e-12)
    assert math.sqrt(parse_distribution(spec, KEY).variance()) == pytest.approx(std, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "Gamma", "shape": 2, "scale": 50, "is_int": True, "min": 10, "max": 300},
        {"type": "Poisson", "mean": 40, "is_int": True, "min": 10, "max": 60},
        {"type": "Zipf", "s": 1.1, "n": 1000, "is_int": True, "min": 10, "max": 300},
        {"type": "Empirical", "values": [1.2, 5.5, 800], "is_int": True, "min": 10, "max": 300},
        {
            "type": "Mixture",
            "components": [{"type": "Constant", "value": 5}, {"type": "Constant", "value": 900}],
            "is_int": True,
            "min": 10,
            "max": 300,
        },
    ],
    ids=["gamma", "poisson", "zipf", "empirical", "mixture"],
)
def test_every_type_honours_is_int_min_and_max(spec):
    values = draw(spec, size=20_000)
    assert values.dtype == np.int64
    assert values.min() >= 10 and values.max() <= 300


def test_zipf_is_bounded_by_its_support_and_favours_small_values():
    values = draw({"type": "Zipf", "s": 1.0, "n": 100})
    assert set(np.unique(values).tolist()) <= set(range(1, 101))
    assert values.min() == 1 and values.max() == 100
    # P(1) / P(2) = 2^s
    assert np.mean(values == 1) / np.mean(values == 2) == pytest.approx(2.0, rel=0.03)


def test_zipf_support_may_be_given_by_max():
    assert draw({"type": "Zipf", "s": 2.0, "max": 7}, size=10_000).max() == 7


def test_empirical_draws_only_its_values_in_proportion_to_their_weights():
    values = draw({"type": "Empirical", "values": [3, 7], "weights": [1, 3]})
    assert set(np.unique(values).tolist()) == {3.0, 7.0}
    assert np.mean(values == 7) == pytest.approx(0.75, abs=0.005)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_empirical_reads_a_column_of_a_file(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame({"tokens": [100, 200, 200, 400], "other": [1, 2, 3, 4]})
    path = tmp_path / f"lengths{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path)}.get(
        suffix, lambda: frame.to_json(path, orient="records", lines=True)
    )()
    dist = parse_distribution({"type": "Empirical", "path": str(path), "column": "tokens"}, KEY)
    assert dist.mean() == pytest.approx(225.0)
    values = dist.sample(np.random.default_rng(0), 40_000)
    assert np.mean(values == 200) == pytest.approx(0.5, abs=0.01)


def test_empirical_file_with_a_weights_column(tmp_path):
    path = tmp_path / "hist.csv"
    path.write_text("tokens,count\n10,1\n20,3\n")
    dist = parse_distribution(
        {"type": "Empirical", "path": str(path), "column": "tokens", "weights_column": "count"}, KEY
    )
    assert dist.mean() == pytest.approx(17.5)


def test_mixture_draws_each_component_in_proportion_to_its_weight():
    spec = {
        "type": "Mixture",
        "components": [{"type": "Constant", "value": 1, "weight": 0.2}, {"type": "Uniform", "low": 10, "high": 20}],
    }
    values = draw(spec)
    assert np.mean(values == 1) == pytest.approx(0.2 / 1.2, abs=0.005)
    assert values[values != 1].min() >= 10


def test_lognormal_mean_and_sigma_describe_the_value_not_its_log():
    # the seed's prompt length: around 50 tokens with a spread of 20
    values = draw({"type": "LogNormal", "mean": 50, "sigma": 20, "is_int": True})
    assert values.dtype == np.int64
    assert values.mean() == pytest.approx(50, abs=0.3)
    assert values.std() == pytest.approx(20, rel=0.03)
    assert values.min() >= 1


def test_lognormal_mu_sigma_log_are_the_parameters_of_the_log():
    values = draw({"type": "LogNormal", "mu": 3.0, "sigma_log": 0.25})
    logs = np.log(values)
    assert logs.mean() == pytest.approx(3.0, abs=0.005)
    assert logs.std() == pytest.approx(0.25, rel=0.02)


def test_uniform_is_int_is_an_inclusive_integer_range():
    values = draw({"type": "Uniform", "low": 50, "high": 200, "is_int": True})
    assert values.dtype == np.int64
    assert set(np.unique(values).tolist()) == set(range(50, 201))
    assert values.mean() == pytest.approx(125, abs=0.5)


def test_uniform_is_int_with_fractional_bounds_keeps_the_integers_inside():
    values = draw({"type": "Uniform", "low": 1.5, "high": 3.5, "is_int": True}, size=10_000)
    assert set(np.unique(values).tolist()) == {2, 3}


def test_uniform_float_stays_within_its_bounds():
    values = draw({"type": "Uniform", "low": 2, "high": 6})
    assert values.min() >= 2 and values.max() <= 6
    assert values.min() < 2.01 and values.max() > 5.99


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "Constant", "value": 3, "is_int": True},
        {"type": "Exponential", "rate": 0.01, "is_int": True},
        {"type": "Normal", "mean": 100, "sigma": 30, "is_int": True},
        {"type": "LogNormal", "mean": 500, "sigma": 100, "is_int": True},
    ],
    ids=["constant", "exponential", "normal", "lognormal"],
)
def test_is_int_yields_int64(spec):
    values = draw(spec, size=1000)
    assert values.dtype == np.int64


def test_is_int_rounds_to_the_nearest_integer():
    values = draw({"type": "Constant", "value": 2.6, "is_int": True}, size=5)
    assert values.tolist() == [3] * 5


def test_min_and_max_clip_the_samples():
    values = draw({"type": "Normal", "mean": 0, "sigma": 10, "min": -5, "max": 5})
    assert values.min() == -5.0
    assert values.max() == 5.0
    # about 31.7% of a normal lies beyond one sigma on either side; half of it on each bound
    assert np.mean(values == 5.0) == pytest.approx(0.3085, abs=0.01)


def test_max_clips_a_uniform_is_int_range():
    values = draw({"type": "Uniform", "low": 1, "high": 100, "is_int": True, "max": 10}, size=10_000)
    assert values.max() == 10
    assert np.mean(values == 10) == pytest.approx(0.91, abs=0.02)


def test_normal_and_lognormal_are_never_negative_by_default():
    normal = draw({"type": "Normal", "mean": 0, "sigma": 1})
    assert normal.min() == 0.0
    normal_int = draw({"type": "Normal", "mean": 0, "sigma": 1, "is_int": True})
    assert normal_int.min() == 1  # integer lengths are at least one


def test_same_seed_draws_the_same_values():
    spec = {"type": "Exponential", "rate": 3.0}
    assert np.array_equal(draw(spec, size=100, seed=7), draw(spec, size=100, seed=7))
    assert not np.array_equal(draw(spec, size=100, seed=7), draw(spec, size=100, seed=8))


# ------------------------------------------------------------------------------------------------
# bad specs: a ConfigError naming the key path
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "bad_key"),
    [
        pytest.param({"type": "Weibull", "shape": 2}, f"{KEY}.type", id="unknown-type"),
        pytest.param({"rate": 2}, f"{KEY}.type", id="missing-type"),
        pytest.param({"type": "Exponential", "rate": -1.0}, f"{KEY}.rate", id="negative-rate"),
        pytest.param({"type": "Exponential", "rate": 0}, f"{KEY}.rate", id="zero-rate"),
        pytest.param({"type": "Exponential", "rate": float("nan")}, f"{KEY}.rate", id="nan-rate"),
        pytest.param({"type": "Exponential", "rate": "fast"}, f"{KEY}.rate", id="text-rate"),
        pytest.param({"type": "Uniform", "low": 200, "high": 50}, f"{KEY}.high", id="high-below-low"),
        pytest.param({"type": "Exponential", "rate": 1, "scale": 2}, f"{KEY}.scale", id="unknown-key"),
        pytest.param({"type": "Normal", "mean": 1, "sigma": 1, "rate": 2}, f"{KEY}.rate", id="key-of-another-type"),
        pytest.param({"type": "Uniform", "low": 1}, f"{KEY}.high", id="missing-parameter"),
        pytest.param({"type": "Constant"}, f"{KEY}.value", id="missing-constant-value"),
        pytest.param({"type": "LogNormal", "mu": 1.0}, f"{KEY}.sigma_log", id="missing-sigma_log"),
        pytest.param({"type": "LogNormal", "mean": 0, "sigma": 1}, f"{KEY}.mean", id="lognormal-zero-mean"),
        pytest.param({"type": "Normal", "mean": 1, "sigma": -1}, f"{KEY}.sigma", id="negative-sigma"),
        pytest.param({"type": "Normal", "mean": 5, "sigma": 1, "min": 10, "max": 2}, f"{KEY}.min", id="min-above-max"),
        pytest.param({"type": "Constant", "value": 3, "is_int": "yes"}, f"{KEY}.is_int", id="is_int-not-bool"),
        pytest.param([1, 2], KEY, id="not-a-mapping"),
        pytest.param({"type": "Gamma", "shape": 2, "scale": -1}, f"{KEY}.scale", id="gamma-negative-scale"),
        pytest.param({"type": "Gamma", "shape": 0, "scale": 1}, f"{KEY}.shape", id="gamma-zero-shape"),
        pytest.param({"type": "Gamma", "shape": 2}, f"{KEY}.scale", id="gamma-without-scale"),
        pytest.param({"type": "Gamma", "shape": 2, "scale": 1, "rate": 1}, f"{KEY}.rate", id="gamma-scale-and-rate"),
        pytest.param({"type": "Poisson", "mean": -3}, f"{KEY}.mean", id="poisson-negative-mean"),
        pytest.param({"type": "Zipf", "s": 1.1}, f"{KEY}.n", id="zipf-unbounded"),
        pytest.param({"type": "Zipf", "s": -1, "n": 10}, f"{KEY}.s", id="zipf-negative-exponent"),
        pytest.param({"type": "Zipf", "s": 1, "n": 2.5}, f"{KEY}.n", id="zipf-fractional-support"),
        pytest.param({"type": "Zipf", "s": 1, "n": 10**9}, f"{KEY}.n", id="zipf-huge-support"),
        pytest.param({"type": "Empirical", "values": []}, f"{KEY}.values", id="empirical-empty"),
        pytest.param({"type": "Empirical"}, f"{KEY}.values", id="empirical-nothing"),
        pytest.param({"type": "Empirical", "values": [1, "x"]}, f"{KEY}.values[1]", id="empirical-text-value"),
        pytest.param({"type": "Empirical", "values": [1, 2], "weights": [1]}, f"{KEY}.weights", id="weights-length"),
        pytest.param({"type": "Empirical", "values": [1, 2], "weights": [1, -1]}, f"{KEY}.weights[1]", id="neg-weight"),
        pytest.param({"type": "Empirical", "values": [1], "weights": [0]}, f"{KEY}.weights", id="zero-weights"),
        pytest.param({"type": "Empirical", "path": "no/such/file.csv"}, f"{KEY}.path", id="empirical-missing-file"),
        pytest.param({"type": "Empirical", "values": [1], "path": "x.csv"}, f"{KEY}.values", id="values-and-path"),
        pytest.param({"type": "Mixture", "components": []}, f"{KEY}.components", id="mixture-empty"),
        pytest.param(
            {"type": "Mixture", "components": [{"type": "Constant", "value": 1}, {"type": "Exponential", "rate": -2}]},
            f"{KEY}.components[1].rate",
            id="mixture-bad-component",
        ),
        pytest.param(
            {"type": "Mixture", "components": [{"type": "Constant", "value": 1, "weight": 0}]},
            f"{KEY}.components[0].weight",
            id="mixture-zero-weight",
        ),
        pytest.param({"type": "LogNormal", "mean": 50, "sigma": 20, "mu": 3}, f"{KEY}.mean", id="lognormal-both-forms"),
        pytest.param({"type": "Poisson", "mean": 5, "min": 9, "max": 3}, f"{KEY}.min", id="poisson-min-above-max"),
    ],
)
def test_bad_spec_raises_config_error_naming_the_key_path(spec, bad_key):
    with pytest.raises(ConfigError) as info:
        parse_distribution(spec, KEY)
    assert info.value.key == bad_key
    assert str(info.value).startswith(f"{bad_key}=")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty"),
        ("tokens\n", "no rows"),
        ("tokens\n5\nmany\n", "line 3"),
        ("tokens\n5\n\xff\xfe\n", "line 3"),
    ],
    ids=["empty-file", "header-only", "text-value", "undecodable"],
)
def test_a_bad_empirical_file_names_the_key_the_file_and_the_line(tmp_path, content, problem):
    path = tmp_path / "lengths.csv"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        parse_distribution({"type": "Empirical", "path": str(path)}, KEY)
    assert info.value.key == f"{KEY}.path"
    assert "lengths.csv" in str(info.value) and problem in str(info.value)
    assert "\n" not in str(info.value)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError, match=r"inter_arrival_time_dist_config\.rate"):
        parse_distribution({"type": "Exponential", "rate": -3}, "workload.inter_arrival_time_dist_config")
