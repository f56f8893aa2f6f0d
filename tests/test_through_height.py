"""The depth limit from thickness readings (controllers.planning.through_height) and the planner's
``limit_depth``: hand-computed estimates, and the invariants the loop relies on."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from controllers.planning import MillingPlanner
from controllers.planning.through_height import ThroughHeightEstimator
from controllers.planning.validation import PlanningParameterError

R = 0.5e-3


def _points(n=8, r=2e-3):
    th = 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(th), r * np.sin(th)], axis=1)


def test_burr_passes_give_the_lowest_reach_over_each_point():
    est = ThroughHeightEstimator(_points(), R)
    p0 = _points()[0]
    est.observe_burr(np.array([p0[0], p0[1], -0.1e-3]))                 # right over point 0
    est.observe_burr(np.array([p0[0], p0[1] + 0.1e-3, -0.12e-3]))        # 0.1 mm beside it, 20 um lower
    reach = -0.12e-3 + R - np.sqrt(R**2 - 0.1e-3**2)                     # 10.1 um above the centre
    assert est.h_pass[0] == pytest.approx(min(-0.1e-3, reach))
    assert np.isnan(est.h_pass[1:]).all()                                 # 0.77 mm away: no pass


def test_through_height_is_the_median_of_informative_readings():
    est = ThroughHeightEstimator(_points(), R, overcut_m=5e-6, informative_m=(15e-6, 80e-6), window=3)
    est.h_pass[:] = 0.0
    t = np.full(8, np.nan)
    for value in (40e-6, 30e-6, 100e-6, 5e-6, 50e-6):      # 100 and 5 um are outside the informative range
        t[2] = value
        est.observe_thickness(t)
    assert est.through_height_m()[2] == pytest.approx(-40e-6)          # median of -40, -30, -50 um
    assert est.depth_limit_m()[2] == pytest.approx(-45e-6)
    assert np.isnan(np.delete(est.depth_limit_m(), 2)).all()


def test_readings_before_any_pass_give_no_estimate():
    est = ThroughHeightEstimator(_points(), R)
    est.observe_thickness(np.full(8, 30e-6))
    assert np.isnan(est.depth_limit_m()).all()


@pytest.mark.parametrize("kwargs", [{"reach_m": 0.0}, {"reach_m": 1e-3}, {"overcut_m": -1e-6}, {"window": 0},
                                    {"informative_m": (80e-6, 15e-6)}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        ThroughHeightEstimator(_points(), R, **kwargs)


def test_planner_stops_at_the_limit_and_never_rises():
    p = MillingPlanner(np.zeros(4), -1e-3)
    p.limit_depth(np.array([-20e-6, np.nan, 10e-6, -20e-6]))
    for _ in range(200):
        p.update(np.array([0.5, 0.5, 0.5, 0.5]), 0.1)
    h = p.heights_m
    assert h[0] == pytest.approx(-20e-6) and h[3] == pytest.approx(-20e-6)
    assert h[1] < -20e-6                     # no limit: descends further
    assert h[2] == 0.0                       # a limit above the point holds it, never lifts it
    with pytest.raises(PlanningParameterError):
        p.limit_depth(np.zeros(3))
    with pytest.raises(PlanningParameterError):
        p.limit_depth(np.array([0.0, np.inf, 0.0, 0.0]))


@settings(max_examples=60, deadline=None)
@given(limits=st.lists(st.one_of(st.just(float("nan")), st.floats(-1e-3, 1e-4)), min_size=4, max_size=4),
       levels=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4), steps=st.integers(1, 50))
def test_heights_never_rise_nor_pass_a_limit_below_them(limits, levels, steps):
    p = MillingPlanner(np.zeros(4), -2e-3)
    lim = np.array(limits)
    p.limit_depth(lim)
    prev = p.heights_m
    for _ in range(steps):
        p.update(np.array(levels), 0.5)
        h = p.heights_m
        assert np.all(h <= prev + 1e-15)
        bounded = np.isfinite(lim)
        assert np.all(h[bounded] >= np.minimum(0.0, lim[bounded]) - 1e-15)
        prev = h
