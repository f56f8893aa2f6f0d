"""The SIM-ONLY completion oracle's error models (twin/completion_oracle.py): the absolute model
draws what it always drew, the relative model has the paper's MAPE over uniformly spread levels
and falls towards c = 1 as documented, and its AR(1) errors correlate from reading to reading."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import integrate

from twin.completion_oracle import OracleCompletionSensor, OracleErrorModel


class _FakeMill:
    def __init__(self, c: float):
        self.c = c

    def true_completion(self, x, y):
        return np.full(np.shape(x), self.c)


class _FakeWorld:
    """A world whose true completion is ``c`` everywhere ({S} = {R})."""

    def __init__(self, c: float):
        self.T_s_to_r = np.eye(4)
        self.mill = _FakeMill(c)


def _probes(n: int) -> np.ndarray:
    return np.zeros((n, 1, 3))


def test_absolute_model_draws_the_same_numbers_as_before():
    """c + N(0, mae sqrt(pi/2)), clipped, from the same generator calls (reproducible suites)."""
    err = OracleErrorModel(mae=0.1)
    sensor = OracleCompletionSensor(_FakeWorld(0.5), err, np.random.default_rng(3))
    got = sensor.estimate(None, _probes(50), np.eye(4))
    rng = np.random.default_rng(3)
    expected = np.clip(0.5 + rng.normal(0.0, 0.1 * np.sqrt(np.pi / 2), 50), 0.0, 1.0)
    assert np.allclose(got, expected, rtol=0, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.01, 0.5), st.floats(0.0, 4.0))
def test_relative_model_has_the_mape_over_uniform_levels(mape, q):
    """E|c_hat - c| / c = sd(c) / c * sqrt(2 / pi) averaged over c uniform in (0, 1) is the
    MAPE (before clipping), computed here by quadrature from the documented s(c)."""
    err = OracleErrorModel(mae=mape, kind="relative", end_exponent=q)
    mean, _ = integrate.quad(lambda c: float(err.sd(np.array(c))) / c * np.sqrt(2 / np.pi), 0.0, 1.0)
    assert mean == pytest.approx(mape, rel=1e-6)
    assert float(err.sd(np.array(1.0))) == (0.0 if q > 0 else pytest.approx(mape * np.sqrt(np.pi / 2) * (1 + q)))


def test_relative_error_falls_towards_through():
    """At end_exponent 2 the error near c = 1 is a small fraction of the mid-range error."""
    err = OracleErrorModel(mae=0.2432, kind="relative", end_exponent=2.0)
    assert float(err.sd(np.array(0.95))) < 0.05 * float(err.sd(np.array(0.4)))


def test_ar1_errors_correlate_from_reading_to_reading():
    """With rho the lag-1 correlation of one point's errors is rho (white at 0)."""
    for rho in (0.0, 0.9):
        err = OracleErrorModel(mae=0.05, rho=rho)
        sensor = OracleCompletionSensor(_FakeWorld(0.5), err, np.random.default_rng(11))
        e = np.array([sensor.estimate(None, _probes(200), np.eye(4)) - 0.5 for _ in range(300)])
        r = np.mean([np.corrcoef(e[:-1, i], e[1:, i])[0, 1] for i in range(200)])
        assert r == pytest.approx(rho, abs=0.03)
        assert np.mean(np.abs(e)) == pytest.approx(0.05, rel=0.05)      # the marginal error is kept


def test_bad_error_models_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="kind='percent'"):
        OracleErrorModel(kind="percent")
    with pytest.raises(ValueError, match="rho=1.0"):
        OracleErrorModel(rho=1.0)
    with pytest.raises(ValueError, match="end_exponent=-1"):
        OracleErrorModel(kind="relative", end_exponent=-1.0)
