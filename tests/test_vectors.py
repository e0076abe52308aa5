"""The rule for vectors that enter a comparison (embedserve.vectors.prepare)."""

from __future__ import annotations

import numpy as np
import pytest

from embedserve.errors import InvalidArgument
from embedserve.metric import Metric, l2_normalize
from embedserve.vectors import MAX_COMPONENT, prepare


@pytest.mark.parametrize("metric", list(Metric))
@pytest.mark.parametrize("shape", [(1, 128), (64, 128), (300, 384)])
def test_good_rows_come_back_as_the_metric_compares_them(metric, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
    out = prepare(x, shape[1], metric, "collection 'c'")
    want = l2_normalize(x) if metric is Metric.COSINE else x
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out, want)  # bit for bit what l2_normalize gives


def test_rows_the_one_pass_screen_does_not_clear_are_still_judged_by_each_rule():
    # squared norm 4e30 > MAX_COMPONENT**2, yet no component is over the limit: accepted
    long = np.zeros((2, 8), np.float32)
    long[:, :4] = MAX_COMPONENT
    assert np.array_equal(prepare(long, 8, Metric.IP, "c"), long)
    assert np.allclose(prepare(long, 8, Metric.COSINE, "c")[:, :4], 0.5)
    # subnormal components: their squares vanish in float32 but not in float64
    tiny = np.full((1, 8), 1e-45, np.float32)
    assert np.allclose(prepare(tiny, 8, Metric.COSINE, "c"), 8**-0.5)


def rejected(x: np.ndarray, metric: Metric) -> str:
    with pytest.raises(InvalidArgument) as err:
        prepare(x, x.shape[1], metric, "collection 'c'", noun="query")
    return err.value.message


def test_each_broken_rule_names_its_first_row():
    x = np.ones((4, 8), np.float32)
    for bad, message in (
        (np.nan, "query 2: vector contains NaN or Inf"),
        (-np.inf, "query 2: vector contains NaN or Inf"),
        (-2e15, "query 2: vector has a component of magnitude 2e+15, limit 1e+15"),
    ):
        y = x.copy()
        y[2, 5] = bad
        y[3, 0] = bad
        assert rejected(y, Metric.L2) == message
    zero = x.copy()
    zero[1] = 0
    assert rejected(zero, Metric.COSINE) == "query 1: vector is all zeros, which has no cosine direction"
    assert np.array_equal(prepare(zero, 8, Metric.IP, "c"), zero)  # a zero row is fine for ip and l2
    # NaN is named before a larger component in an earlier row, as the rules are ordered
    both = x.copy()
    both[1, 0], both[3, 0] = 5e15, np.nan
    assert rejected(both, Metric.IP) == "query 3: vector contains NaN or Inf"


def test_shapes_are_checked_before_values():
    with pytest.raises(InvalidArgument, match="2-D array"):
        prepare(np.ones(8, np.float32), 8, Metric.IP, "c")
    with pytest.raises(InvalidArgument, match="dimension 9, c expects 8"):
        prepare(np.ones((2, 9), np.float32), 8, Metric.IP, "c")
