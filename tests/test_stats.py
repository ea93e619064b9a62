"""Weighted statistics equal numpy's on the expanded sample (np.repeat(values, counts))."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.metrics.stats import weighted_mean_std, weighted_percentiles

PERCENTS = [0.0, 1.0, 25.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0]


def tolerance(values: np.ndarray) -> float:
    return 1e-9 * max(1.0, float(np.max(np.abs(values))))


samples = st.integers(min_value=1, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=n, max_size=n
        ),
        st.lists(st.integers(min_value=0, max_value=20), min_size=n, max_size=n).filter(lambda c: sum(c) > 0),
    )
)
percent_lists = st.lists(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(samples, percent_lists)
def test_weighted_percentiles_equal_numpy_linear_percentile_on_the_expanded_sample(sample, percents):
    values, counts = np.array(sample[0], dtype=np.float64), np.array(sample[1], dtype=np.int64)
    expected = np.percentile(np.repeat(values, counts), percents)
    got = weighted_percentiles(values, counts, percents)
    assert len(got) == len(percents)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=tolerance(values))


@settings(max_examples=200, deadline=None)
@given(samples)
def test_weighted_mean_std_equal_numpy_mean_and_population_std(sample):
    values, counts = np.array(sample[0], dtype=np.float64), np.array(sample[1], dtype=np.int64)
    expanded = np.repeat(values, counts)
    mean, std = weighted_mean_std(values, counts)
    assert mean == pytest.approx(np.mean(expanded), rel=1e-9, abs=tolerance(values))
    assert std == pytest.approx(np.std(expanded), rel=1e-9, abs=tolerance(values))


def test_weighted_percentiles_of_unsorted_values_with_repeats():
    values = np.array([30.0, 10.0, 20.0, 40.0])
    counts = np.array([1, 2, 3, 4])
    # expanded and sorted: 10 10 20 20 20 30 40 40 40 40
    expanded = np.repeat(values, counts)
    assert weighted_percentiles(values, counts, PERCENTS) == pytest.approx(np.percentile(expanded, PERCENTS))
    # position 0.5 * 9 = 4.5 sits between the 5th (20) and 6th (30) values
    assert weighted_percentiles(values, counts, [50.0]) == [25.0]
    assert weighted_percentiles(values, counts, [0.0, 100.0]) == [10.0, 40.0]


def test_zero_counts_are_left_out_of_percentiles_and_moments():
    values = np.array([-1000.0, 1.0, 2.0, 3.0, 1000.0])
    counts = np.array([0, 1, 1, 1, 0])
    assert weighted_percentiles(values, counts, [0.0, 50.0, 100.0]) == [1.0, 2.0, 3.0]
    mean, std = weighted_mean_std(values, counts)
    assert mean == pytest.approx(2.0)
    assert std == pytest.approx(np.std([1.0, 2.0, 3.0]))


def test_single_value_has_that_value_as_every_percentile_and_zero_spread():
    values = np.array([7.5])
    counts = np.array([12])
    assert weighted_percentiles(values, counts, PERCENTS) == [7.5] * len(PERCENTS)
    assert weighted_mean_std(values, counts) == (7.5, 0.0)


def test_integer_values_match_numpy():
    values = np.array([5, 1, 9, 3], dtype=np.int64)
    counts = np.array([3, 1, 2, 5], dtype=np.int64)
    expanded = np.repeat(values, counts)
    assert weighted_percentiles(values, counts, PERCENTS) == pytest.approx(np.percentile(expanded, PERCENTS))
    mean, std = weighted_mean_std(values, counts)
    assert mean == pytest.approx(np.mean(expanded))
    assert std == pytest.approx(np.std(expanded))
