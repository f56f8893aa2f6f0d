"""Milling trajectory planner (paper section IV-B): Kruger's closed spline, the velocity damper,
the planner's invariants and the stop logic."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.interpolate import PchipInterpolator

from controllers.planning import (ClosedConstrainedSpline, DamperParams, MillingPlanner,
                                  PlanningParameterError, StopMonitor, StopReason)

TWO_PI = 2.0 * np.pi
FAST = settings(max_examples=60, deadline=None)


# ----- strategies ------------------------------------------------------------------------------

@st.composite
def closed_knots(draw, equal: bool | None = None):
    """(theta, values): 3-24 knots in [0, 2 pi), gaps >= 2 pi / 2400; values on a drawn scale."""
    n = draw(st.integers(3, 24))
    if equal if equal is not None else draw(st.booleans()):
        theta = TWO_PI * np.arange(n) / n
    else:
        gaps = np.array(draw(st.lists(st.floats(1.0, 100.0), min_size=n, max_size=n)))
        gaps *= TWO_PI / gaps.sum()                    # gaps[i]: knot i -> i+1, the last wraps
        theta = draw(st.floats(0.0, 0.99)) * gaps[-1] + np.concatenate(([0.0],
                                                                         np.cumsum(gaps[:-1])))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    values = scale * np.array(draw(st.lists(
        st.one_of(st.floats(-1.0, 1.0).map(lambda v: round(v, 9)), st.sampled_from([0.0, 0.5])),
        min_size=theta.size, max_size=theta.size)))
    return theta, values


def kruger_literal(theta, y):
    """Kruger's slope formula, written as in the paper (reciprocal secants), wrapped."""
    n = len(theta)
    d = np.zeros(n)
    for i in range(n):
        xp, yp = theta[i - 1] - (TWO_PI if i == 0 else 0.0), y[i - 1]
        xn, yn = theta[(i + 1) % n] + (TWO_PI if i == n - 1 else 0.0), y[(i + 1) % n]
        s_prev, s_next = (y[i] - yp) / (theta[i] - xp), (yn - y[i]) / (xn - theta[i])
        if s_prev * s_next > 0:
            d[i] = 2.0 / ((xn - theta[i]) / (yn - y[i]) + (theta[i] - xp) / (y[i] - yp))
    return d


def segments(theta, y, d):
    """(x0, x1, y0, y1, d0, d1) for every segment of the closed curve, the wrap one included."""
    n = len(theta)
    for i in range(n):
        j = (i + 1) % n
        yield theta[i], theta[j] + (TWO_PI if j == 0 else 0.0), y[i], y[j], d[i], d[j]


# ----- spline ----------------------------------------------------------------------------------

@FAST
@given(closed_knots())
def test_spline_passes_through_knots_exactly(data):
    theta, y = data
    s = ClosedConstrainedSpline(theta, y)
    assert np.array_equal(s(theta), y)


@FAST
@given(closed_knots())
def test_spline_never_overshoots_a_segment(data):
    """Within 1e-12 of the values' scale: a sample angle near a knot may round (one ulp) into
    the neighbouring segment."""
    theta, y = data
    s = ClosedConstrainedSpline(theta, y)
    u = np.linspace(0.0, 1.0, 101)
    tol = 1e-12 * np.abs(y).max()
    for x0, x1, y0, y1, _, _ in segments(theta, y, s.slopes):
        vals = s(x0 + u * (x1 - x0))
        assert vals.min() >= min(y0, y1) - tol
        assert vals.max() <= max(y0, y1) + tol


@FAST
@given(closed_knots())
def test_spline_slopes_are_krugers_formula(data):
    theta, y = data
    s = ClosedConstrainedSpline(theta, y)
    expected = kruger_literal(theta, y)
    np.testing.assert_allclose(s.slopes, expected, rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(s.derivative(theta), expected, rtol=1e-12, atol=0.0)


@FAST
@given(closed_knots(equal=True))
def test_equal_spacing_slopes_equal_scipy_pchip_with_wrapped_data(data):
    """The docstring's claim: for equal spacing Kruger's slope is SciPy's PCHIP slope."""
    theta, y = data
    x3 = np.concatenate((theta - TWO_PI, theta, theta + TWO_PI))
    pchip = PchipInterpolator(x3, np.tile(y, 3))
    s = ClosedConstrainedSpline(theta, y)
    np.testing.assert_allclose(s.slopes, pchip.derivative()(theta), rtol=1e-9,
                               atol=1e-12 * np.abs(y).max())


@FAST
@given(closed_knots(), st.lists(st.floats(-20.0, 20.0), min_size=1, max_size=20),
       st.integers(-3, 3))
def test_spline_is_periodic(data, angles, k):
    theta, y = data
    s = ClosedConstrainedSpline(theta, y)
    a = np.array(angles)
    tol = 1e-9 * (np.abs(y).max() + np.abs(s.slopes).max())
    np.testing.assert_allclose(s(a + k * TWO_PI), s(a), rtol=0, atol=tol)
    np.testing.assert_allclose(s.derivative(a + k * TWO_PI), s.derivative(a), rtol=0,
                               atol=tol * 100)


@FAST
@given(closed_knots())
def test_spline_value_and_slope_continuous_across_the_closing_knot_and_2pi(data):
    """Left and right limits agree at theta_0 (where the wrap segment joins) and at 2 pi = 0,
    within what the segment's largest |f''| allows over 2 eps."""
    theta, y = data
    s = ClosedConstrainedSpline(theta, y)
    d = s.slopes
    m2 = max(max(abs(6 * (y1 - y0) / (x1 - x0) - 4 * d0 - 2 * d1),
                 abs(-6 * (y1 - y0) / (x1 - x0) + 2 * d0 + 4 * d1)) / (x1 - x0)
             for x0, x1, y0, y1, d0, d1 in segments(theta, y, d))
    m1 = np.abs(d).max() + m2 * max(x1 - x0 for x0, x1, *_ in segments(theta, y, d))
    eps = 1e-9
    rounding = 1e-10 * (np.abs(y).max() + np.abs(d).max())
    for at in (theta[0], TWO_PI):
        left, right = s(at - eps), s(at + eps)
        assert abs(left - right) <= 2 * eps * m1 + rounding
        dl, dr = s.derivative(at - eps), s.derivative(at + eps)
        assert abs(dl - dr) <= 2 * eps * m2 + rounding
    assert s(TWO_PI) == s(0.0)


@pytest.mark.parametrize("theta, values, field", [
    ([0.0, 1.0], [1.0, 2.0], "len(theta_knots_rad)"),
    ([0.0, 1.0, 2.0], [1.0, 2.0], "len(values)"),
    ([0.0, 1.0, np.nan], [1.0, 2.0, 3.0], "theta_knots_rad[2]"),
    ([0.0, 1.0, 2.0], [1.0, np.inf, 3.0], "values[1]"),
    ([-0.1, 1.0, 2.0], [1.0, 2.0, 3.0], "theta_knots_rad[0]"),
    ([0.0, 1.0, TWO_PI], [1.0, 2.0, 3.0], "theta_knots_rad[2]"),
    ([0.0, 2.0, 1.0], [1.0, 2.0, 3.0], "theta_knots_rad[2]"),
    ([0.0, 1.0, 1.0], [1.0, 2.0, 3.0], "theta_knots_rad[2]"),
    ([[0.0, 1.0, 2.0]], [1.0, 2.0, 3.0], "theta_knots_rad"),
])
def test_spline_rejects_bad_knots_naming_the_field(theta, values, field):
    with pytest.raises(PlanningParameterError) as e:
        ClosedConstrainedSpline(theta, values)
    assert e.value.field == field and field in str(e.value)


def test_spline_rejects_non_finite_angles():
    s = ClosedConstrainedSpline([0.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    with pytest.raises(PlanningParameterError, match=r"theta_rad\[1\]"):
        s([0.0, np.nan])


# ----- damper ----------------------------------------------------------------------------------

def test_damper_law_and_defaults():
    p = DamperParams()
    assert (p.v_approach_m_s, p.v_cut_max_m_s, p.v_cut_min_m_s) == (40e-6, 20e-6, 4e-6)
    assert (p.contact_level, p.through_level, p.latch_done) == (0.05, 0.95, True)
    c = np.array([0.0, 0.049, 0.05, 0.5, 0.9499999, 0.95, 1.0])
    np.testing.assert_allclose(p.speed_m_s(c),
                               [40e-6, 40e-6, 20e-6, 12e-6, 4e-6, 0.0, 0.0], rtol=1e-5, atol=0)


@st.composite
def damper_params(draw, latch: bool | None = None):
    v_min = draw(st.floats(1e-7, 1e-4))
    v_max = v_min * draw(st.floats(1.0, 10.0))
    v_app = v_max * draw(st.floats(1.0, 10.0))
    contact = draw(st.floats(0.0, 0.5))
    through = draw(st.floats(contact + 0.01, 1.0))
    return DamperParams(v_app, v_max, v_min, contact, through,
                        draw(st.booleans()) if latch is None else latch)


@FAST
@given(damper_params(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_descent_speed_is_non_increasing_in_completion(p, c1, c2):
    lo, hi = min(c1, c2), max(c1, c2)
    v_lo, v_hi = p.speed_m_s(lo), p.speed_m_s(hi)
    assert v_lo >= v_hi >= 0.0
    assert (p.speed_m_s(hi) == 0.0) == (hi >= p.through_level)
    if hi < p.through_level:
        assert v_hi >= p.v_cut_min_m_s                 # a point always finishes


@pytest.mark.parametrize("kwargs, field", [
    ({"v_approach_m_s": np.nan}, "v_approach_m_s"),
    ({"v_cut_max_m_s": np.inf}, "v_cut_max_m_s"),
    ({"v_cut_min_m_s": 0.0}, "v_cut_min_m_s"),
    ({"v_cut_min_m_s": -1e-6}, "v_cut_min_m_s"),
    ({"v_cut_max_m_s": 3e-6}, "v_cut_max_m_s"),
    ({"v_approach_m_s": 10e-6}, "v_approach_m_s"),
    ({"v_approach_m_s": -40e-6}, "v_approach_m_s"),
    ({"contact_level": -0.1}, "contact_level"),
    ({"contact_level": 0.95}, "through_level"),
    ({"through_level": 1.2}, "through_level"),
    ({"through_level": np.nan}, "through_level"),
    ({"latch_done": 1}, "latch_done"),
])
def test_damper_rejects_bad_parameters_naming_the_field(kwargs, field):
    with pytest.raises(PlanningParameterError) as e:
        DamperParams(**kwargs)
    assert e.value.field == field and field in str(e.value)


# ----- planner ---------------------------------------------------------------------------------

@st.composite
def planner_runs(draw, latch: bool | None = None):
    """A planner (either initialisation) and a sequence of (c, dt) updates."""
    n = draw(st.integers(3, 16))
    h_ini = 1e-3 + 1e-4 * np.array(draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n)))
    floor = h_ini - 1e-3 * np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    params = draw(damper_params(latch))
    make = draw(st.sampled_from([MillingPlanner.from_fitted, MillingPlanner.equal_height]))
    level = st.one_of(st.just(np.nan), st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0]),
                      st.just(params.through_level))
    steps = draw(st.lists(st.tuples(st.lists(level, min_size=n, max_size=n),
                                    st.floats(0.0, 60.0)), max_size=25))
    return make(h_ini, floor, params), [(np.array(c), dt) for c, dt in steps]


@FAST
@given(planner_runs())
def test_planner_invariants_for_any_sequence(run):
    planner, steps = run
    p = planner.params
    floor = planner.floor_m
    known = np.zeros(planner.n_points)
    reached = np.zeros(planner.n_points, dtype=bool)
    for c, dt in steps:
        before = planner.heights_m
        latched_before = planner.done if p.latch_done else np.zeros_like(reached)
        planner.update(c, dt)
        h = planner.heights_m
        known = np.where(np.isnan(c), known, c)
        reached = (reached | (known >= p.through_level)) if p.latch_done \
            else known >= p.through_level
        assert np.all(h >= floor)                                # never below the floor
        assert np.all(h <= before)                               # only descends
        assert np.array_equal(h[c >= p.through_level], before[c >= p.through_level])
        assert np.array_equal(h[latched_before], before[latched_before])
        np.testing.assert_array_equal(planner.completion, known)  # NaN keeps the last level
        np.testing.assert_array_equal(planner.done, reached)
        assert planner.all_done == bool(reached.all())
        expected = np.maximum(before - np.where(reached, 0.0, p.speed_m_s(known)) * dt, floor)
        np.testing.assert_array_equal(h, expected)


def test_latched_point_is_not_deepened_by_a_later_low_reading():
    planner = MillingPlanner.from_fitted(np.full(4, 1e-3), 0.0)
    planner.update([0.97, 0.5, 0.5, np.nan], 1.0)
    h = planner.heights_m
    planner.update([0.2, 0.5, 0.5, np.nan], 1.0)
    assert planner.heights_m[0] == h[0] and planner.done[0]
    assert np.all(planner.heights_m[1:] < h[1:])
    unlatched = MillingPlanner.from_fitted(np.full(4, 1e-3), 0.0, DamperParams(latch_done=False))
    unlatched.update([0.97, 0.5, 0.5, np.nan], 1.0)
    unlatched.update([0.2, 0.5, 0.5, np.nan], 1.0)
    assert not unlatched.done[0] and unlatched.heights_m[0] < 1e-3


def test_all_done_fires_exactly_when_the_last_point_reaches_through():
    planner = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0)
    planner.update([0.95, 0.99, 0.5], 1.0)
    assert not planner.all_done
    planner.update([np.nan, np.nan, 0.9499], 1.0)
    assert not planner.all_done
    planner.update([0.1, np.nan, 0.95], 1.0)                    # point 0 stays latched
    assert planner.all_done


def test_initialisations_and_path():
    h_ini = np.array([1.0e-3, 1.2e-3, 0.9e-3, 1.1e-3])
    fitted = MillingPlanner.from_fitted(h_ini, 0.5e-3)
    equal = MillingPlanner.equal_height(h_ini, 0.5e-3)
    np.testing.assert_array_equal(fitted.heights_m, h_ini)
    np.testing.assert_array_equal(equal.heights_m, np.full(4, 1.2e-3))
    np.testing.assert_array_equal(fitted.floor_m, np.full(4, 0.5e-3))
    np.testing.assert_allclose(fitted.theta_rad, [0, np.pi / 2, np.pi, 3 * np.pi / 2])
    np.testing.assert_array_equal(fitted.completion, 0.0)
    assert not fitted.done.any() and not fitted.all_done
    path = fitted.path()
    np.testing.assert_array_equal(path(fitted.theta_rad), h_ini)
    fitted.update(np.zeros(4), 2.0)                              # approach: 40 um/s for 2 s
    np.testing.assert_allclose(fitted.heights_m, h_ini - 80e-6, rtol=1e-12)
    np.testing.assert_array_equal(path(fitted.theta_rad), h_ini)  # a snapshot, not a view


@pytest.mark.parametrize("h, floor, field", [
    ([1e-3, 1e-3], 0.0, "len(heights_m)"),
    ([1e-3, np.nan, 1e-3], 0.0, "heights_m[1]"),
    ([1e-3, 1e-3, 1e-3], [0.0, 0.0], "len(floor_m)"),
    ([1e-3, 1e-3, 1e-3], [0.0, np.inf, 0.0], "floor_m[1]"),
    ([1e-3, 0.5e-3, 1e-3], 0.6e-3, "floor_m[1]"),
    ([1e-3, 1e-3, 1e-3], [0.0, 0.0, 2e-3], "floor_m[2]"),
])
@pytest.mark.parametrize("make", [MillingPlanner.from_fitted, MillingPlanner.equal_height])
def test_planner_rejects_bad_construction_naming_the_field(make, h, floor, field):
    with pytest.raises(PlanningParameterError) as e:
        make(h, floor)
    assert e.value.field == field and field in str(e.value)


@pytest.mark.parametrize("c, dt, field", [
    ([0.1, 0.1], 1.0, "completion"),
    ([0.1, 1.2, 0.1], 1.0, "completion[1]"),
    ([0.1, 0.1, -0.1], 1.0, "completion[2]"),
    ([np.inf, 0.1, 0.1], 1.0, "completion[0]"),
    ([0.1, 0.1, 0.1], -1.0, "dt_s"),
    ([0.1, 0.1, 0.1], np.nan, "dt_s"),
])
def test_update_rejects_bad_input_naming_the_field_and_leaves_state(c, dt, field):
    planner = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0)
    with pytest.raises(PlanningParameterError) as e:
        planner.update(c, dt)
    assert e.value.field == field and field in str(e.value)
    np.testing.assert_array_equal(planner.heights_m, 1e-3)
    np.testing.assert_array_equal(planner.completion, 0.0)


# ----- stop monitor ----------------------------------------------------------------------------

@pytest.mark.parametrize("fault, all_done, stale, timed_out",
                         list(itertools.product([None, "force limit"], [False, True],
                                                [False, True], [False, True])))
def test_stop_monitor_priority(fault, all_done, stale, timed_out):
    m = StopMonitor(timeout_s=300.0, perception_timeout_s=1.0, start_s=10.0)
    now = 10.0 + (300.0 if timed_out else 100.0)
    last = now - (1.0 if stale else 0.5)
    expected = (StopReason.SAFETY_FAULT if fault is not None else
                StopReason.COMPLETE if all_done else
                StopReason.PERCEPTION_LOST if stale else
                StopReason.TIMEOUT if timed_out else None)
    assert m.check(now, last, all_done, fault) is expected


def test_stop_monitor_without_any_reading_counts_from_start():
    m = StopMonitor(timeout_s=300.0, perception_timeout_s=2.0, start_s=5.0)
    assert m.check(6.9, None, False, None) is None
    assert m.check(7.0, None, False, None) is StopReason.PERCEPTION_LOST


@pytest.mark.parametrize("kwargs, field", [
    ({"timeout_s": 0.0, "perception_timeout_s": 1.0}, "timeout_s"),
    ({"timeout_s": np.nan, "perception_timeout_s": 1.0}, "timeout_s"),
    ({"timeout_s": 10.0, "perception_timeout_s": -1.0}, "perception_timeout_s"),
    ({"timeout_s": 10.0, "perception_timeout_s": 1.0, "start_s": np.inf}, "start_s"),
])
def test_stop_monitor_rejects_bad_parameters_naming_the_field(kwargs, field):
    with pytest.raises(PlanningParameterError) as e:
        StopMonitor(**kwargs)
    assert e.value.field == field and field in str(e.value)


@pytest.mark.parametrize("now, last, field", [
    (np.nan, None, "now_s"), (-1.0, None, "now_s"), (5.0, 6.0, "last_perception_s"),
    (5.0, np.nan, "last_perception_s"),
])
def test_stop_monitor_rejects_bad_times(now, last, field):
    with pytest.raises(PlanningParameterError) as e:
        StopMonitor(10.0, 1.0).check(now, last, False, None)
    assert e.value.field == field
