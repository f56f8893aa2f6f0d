"""Milling trajectory planner (paper section IV-B): Kruger's closed spline, the velocity damper,
the planner's invariants and the stop logic."""
import itertools
import math

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

def reference_speed(p: DamperParams, c: float, descended: float) -> float:
    """The documented law, one point at a time (m/s): mode 1 v_approach for the first
    approach_depth_m below the start, then v_cut_max; mode 2 linear in c from v_cut_max at
    contact_level to v_cut_min at through_level; mode 3 zero."""
    if c >= p.through_level:
        return 0.0
    if c < p.contact_level:
        return p.v_approach_m_s if descended < p.approach_depth_m else p.v_cut_max_m_s
    s = (c - p.contact_level) / (p.through_level - p.contact_level)
    return p.v_cut_max_m_s + s * (p.v_cut_min_m_s - p.v_cut_max_m_s)


def test_damper_defaults():
    """The documented defaults themselves."""
    p = DamperParams()
    assert (p.v_approach_m_s, p.approach_depth_m, p.v_cut_max_m_s, p.v_cut_min_m_s) == \
        (60e-6, 0.35e-3, 10e-6, 4e-6)
    assert (p.contact_level, p.through_level, p.latch_done, p.sync_level) == (0.05, 0.99, True, 0.9)


def test_damper_law_at_the_mode_boundaries():
    p = DamperParams()
    lo, hi = p.contact_level, p.through_level
    c = np.array([0.0, np.nextafter(lo, 0.0), lo, (lo + hi) / 2, np.nextafter(hi, 0.0), hi, 1.0])
    mid = (p.v_cut_max_m_s + p.v_cut_min_m_s) / 2
    cut = [p.v_cut_max_m_s, mid, p.v_cut_min_m_s, 0.0, 0.0]
    tol = dict(rtol=1e-9, atol=0.0)
    # not yet approach_depth_m below the start (the default descended_m is 0): mode 1 is fast
    np.testing.assert_allclose(p.speed_m_s(c), [p.v_approach_m_s] * 2 + cut, **tol)
    just_above = np.nextafter(p.approach_depth_m, 0.0)
    np.testing.assert_allclose(p.speed_m_s(c, just_above), [p.v_approach_m_s] * 2 + cut, **tol)
    # from approach_depth_m on, mode 1 runs at the cutting speed; modes 2 and 3 do not change
    for d in (p.approach_depth_m, 2 * p.approach_depth_m):
        np.testing.assert_allclose(p.speed_m_s(c, d), [p.v_cut_max_m_s] * 2 + cut, **tol)
    # descended_m broadcasts against c, one depth per point
    d = np.where(np.arange(c.size) % 2 == 0, 0.0, p.approach_depth_m)
    np.testing.assert_allclose(p.speed_m_s(c, d), [reference_speed(p, ci, di) for ci, di in zip(c, d)],
                               **tol)
    # approach_depth_m = 0: no fast part at all
    q = DamperParams(approach_depth_m=0.0)
    np.testing.assert_allclose(q.speed_m_s(c), [q.v_cut_max_m_s] * 2 + cut, **tol)


@st.composite
def damper_params(draw, latch: bool | None = None):
    v_min = draw(st.floats(1e-7, 1e-4))
    v_max = v_min * draw(st.floats(1.0, 10.0))
    v_app = v_max * draw(st.floats(1.0, 10.0))
    depth = draw(st.one_of(st.just(0.0), st.floats(0.0, 1.5e-3)))
    contact = draw(st.floats(0.0, 0.5))
    through = draw(st.floats(contact + 0.01, 1.0))
    sync = draw(st.one_of(st.just(1.0), st.floats(contact, through, exclude_min=True)))
    overcut = draw(st.one_of(st.just(0.0), st.floats(0.0, 50e-6)))
    return DamperParams(v_approach_m_s=v_app, approach_depth_m=depth, v_cut_max_m_s=v_max,
                        v_cut_min_m_s=v_min, contact_level=contact, through_level=through,
                        latch_done=draw(st.booleans()) if latch is None else latch, sync_level=sync,
                        overcut_m=overcut)


@st.composite
def completion_and_depth(draw, p: DamperParams):
    """(c, descended_m), concentrated on the mode boundaries and the approach depth."""
    c = draw(st.one_of(st.floats(0.0, 1.0),
                       st.sampled_from([0.0, p.contact_level, p.through_level, 1.0]),
                       st.sampled_from([p.contact_level, p.through_level]).map(
                           lambda x: float(np.nextafter(x, 0.0)))))
    d = draw(st.one_of(st.floats(0.0, 2e-3),
                       st.sampled_from([0.0, p.approach_depth_m,
                                        float(np.nextafter(p.approach_depth_m, 0.0))])))
    return c, d


@FAST
@given(st.data())
def test_speed_is_the_documented_law(data):
    p = data.draw(damper_params())
    c, d = data.draw(completion_and_depth(p))
    v = float(p.speed_m_s(c, d))
    assert v == pytest.approx(reference_speed(p, c, d), rel=1e-9, abs=0.0)
    if c < p.through_level:
        assert p.v_cut_min_m_s <= v <= p.v_approach_m_s     # > 0: a point always finishes
    else:
        assert v == 0.0


def test_speed_never_rounds_below_the_slowest_cut():
    """Found by hypothesis: np.interp rounded one ulp below v_cut_min just below through_level."""
    p = DamperParams(v_approach_m_s=9.963486575215397e-05, approach_depth_m=0.0, v_cut_max_m_s=9.963486575215397e-05,
                     v_cut_min_m_s=3.3211621917384654e-05, contact_level=0.0625, through_level=1.0, latch_done=False)
    assert float(p.speed_m_s(0.9999999999999999, 0.0)) >= p.v_cut_min_m_s


@FAST
@given(st.data())
def test_descent_speed_is_non_increasing_in_completion_at_fixed_depth(data):
    p = data.draw(damper_params())
    c1, d = data.draw(completion_and_depth(p))
    c2, _ = data.draw(completion_and_depth(p))
    lo, hi = min(c1, c2), max(c1, c2)
    v_lo, v_hi = p.speed_m_s(lo, d), p.speed_m_s(hi, d)
    assert v_lo >= v_hi >= 0.0
    assert (v_hi == 0.0) == (hi >= p.through_level)


@FAST
@given(st.data())
def test_descent_speed_is_non_increasing_in_depth_at_fixed_completion(data):
    p = data.draw(damper_params())
    c, d1 = data.draw(completion_and_depth(p))
    _, d2 = data.draw(completion_and_depth(p))
    shallow, deep = min(d1, d2), max(d1, d2)
    assert p.speed_m_s(c, shallow) >= p.speed_m_s(c, deep) >= 0.0


@pytest.mark.parametrize("kwargs, field", [
    ({"v_approach_m_s": np.nan}, "v_approach_m_s"),
    ({"v_cut_max_m_s": np.inf}, "v_cut_max_m_s"),
    ({"v_cut_min_m_s": 0.0}, "v_cut_min_m_s"),
    ({"v_cut_min_m_s": -1e-6}, "v_cut_min_m_s"),
    ({"v_cut_max_m_s": np.nextafter(DamperParams().v_cut_min_m_s, 0.0)}, "v_cut_max_m_s"),
    ({"v_approach_m_s": np.nextafter(DamperParams().v_cut_max_m_s, 0.0)}, "v_approach_m_s"),
    ({"v_approach_m_s": -40e-6}, "v_approach_m_s"),
    ({"approach_depth_m": -1e-6}, "approach_depth_m"),
    ({"approach_depth_m": -np.finfo(float).tiny}, "approach_depth_m"),
    ({"approach_depth_m": np.nan}, "approach_depth_m"),
    ({"approach_depth_m": np.inf}, "approach_depth_m"),
    ({"contact_level": -0.1}, "contact_level"),
    ({"contact_level": DamperParams().through_level}, "through_level"),
    ({"through_level": DamperParams().contact_level}, "through_level"),
    ({"through_level": 1.2}, "through_level"),
    ({"through_level": np.nan}, "through_level"),
    ({"latch_done": 1}, "latch_done"),
    ({"sync_level": DamperParams().contact_level}, "sync_level"),
    ({"sync_level": 1.1}, "sync_level"),
    ({"sync_level": np.nan}, "sync_level"),
    ({"settle_below_m": -1e-6}, "settle_below_m"),
    ({"settle_readings": 0}, "settle_readings"),
    ({"resettle_below_m": 150e-6}, "resettle_below_m"),        # not below settle_below_m
    ({"resettle_drop_m": -1e-6}, "resettle_drop_m"),
    ({"settle_max_s": 0.0}, "settle_max_s"),
    ({"settle_drop_m": np.nan}, "settle_drop_m"),
    ({"overcut_m": -1e-6}, "overcut_m"),
    ({"overcut_m": 1e-3}, "overcut_m"),                          # more than the 20 um tolerance allows
    ({"overcut_margin_m": np.nan}, "overcut_margin_m"),
])
def test_damper_rejects_bad_parameters_naming_the_field(kwargs, field):
    with pytest.raises(PlanningParameterError) as e:
        DamperParams(**kwargs)
    assert e.value.field == field and field in str(e.value)


@pytest.mark.parametrize("kwargs", [
    {"approach_depth_m": 0.0},                                  # no fast part
    {"v_approach_m_s": DamperParams().v_cut_max_m_s},           # the equalities are allowed
    {"v_cut_max_m_s": DamperParams().v_cut_min_m_s},
    {"through_level": 1.0},
    {"sync_level": 1.0},                                        # the rule switched off
])
def test_damper_accepts_the_edges_of_the_allowed_ranges(kwargs):
    DamperParams(**kwargs)


# ----- planner ---------------------------------------------------------------------------------

@st.composite
def planner_runs(draw, latch: bool | None = None):
    """A planner (either initialisation) and a sequence of (c, dt) updates; short steps as well as
    long ones, so that runs cross the approach depth part way as well as in one step."""
    n = draw(st.integers(3, 16))
    h_ini = 1e-3 + 1e-4 * np.array(draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n)))
    floor = h_ini - 1e-3 * np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    params = draw(damper_params(latch))
    make = draw(st.sampled_from([MillingPlanner.from_fitted, MillingPlanner.equal_height]))
    level = st.one_of(st.just(np.nan), st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0]),
                      st.just(params.contact_level), st.just(params.through_level),
                      st.just(params.sync_level))
    dt = st.one_of(st.floats(0.0, 60.0), st.floats(0.0, 2.0))
    steps = draw(st.lists(st.tuples(st.lists(level, min_size=n, max_size=n), dt), max_size=25))
    return make(h_ini, floor, params), [(np.array(c), dt) for c, dt in steps]


@FAST
@given(planner_runs())
def test_planner_invariants_for_any_sequence(run):
    planner, steps = run
    p = planner.params
    floor = planner.floor_m
    start = planner.initial_heights_m
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
        # no thickness readings: no over-cut, whatever overcut_m (a point read through stops)
        assert np.array_equal(h[c >= p.through_level], before[c >= p.through_level])
        assert np.array_equal(h[latched_before], before[latched_before])
        np.testing.assert_array_equal(planner.initial_heights_m, start)
        np.testing.assert_array_equal(planner.completion, known)  # NaN keeps the last level
        np.testing.assert_array_equal(planner.done, reached)
        assert planner.all_done == bool(reached.all())
        # the synchronised finish: a point at sync_level waits while a point not done is below it
        at_sync = ~reached & (known >= p.sync_level)
        waiting = at_sync & np.any(~reached & ~at_sync)
        np.testing.assert_array_equal(planner.waiting, waiting)
        # the step model: the speed at the step's start (level and depth below the start), held
        # for dt, then the floor
        speed = np.where(reached | waiting, 0.0, p.speed_m_s(known, start - before))
        np.testing.assert_array_equal(h, np.maximum(before - speed * dt, floor))
        ref = [0.0 if r or w else reference_speed(p, ci, di)
               for r, w, ci, di in zip(reached, waiting, known, start - before)]
        np.testing.assert_allclose(speed, ref, rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("make", [MillingPlanner.from_fitted, MillingPlanner.equal_height])
def test_approach_depth_switch(make):
    """c = 0 throughout: each point descends at v_approach until it is approach_depth_m below
    its own start (for equal_height, the common start), then at v_cut_max. The step that crosses
    the depth runs wholly at v_approach (the speed is taken at the step's start), so the fast
    descent overshoots the depth by less than one step."""
    p = DamperParams()
    h_ini = np.array([1.0e-3, 1.2e-3, 0.9e-3, 1.1e-3])
    floor = h_ini - 10 * p.approach_depth_m                      # far below: never reached here
    planner = make(h_ini, floor, p)
    start = planner.initial_heights_m
    dt = 0.3 * p.approach_depth_m / p.v_approach_m_s / 7         # not a divisor of the depth
    fast_step, slow_step = p.v_approach_m_s * dt, p.v_cut_max_m_s * dt
    n_steps = int(np.ceil(p.approach_depth_m / fast_step)) + 10
    phases = []
    for _ in range(n_steps):
        before = planner.heights_m
        planner.update(np.zeros(4), dt)
        step = before - planner.heights_m
        fast = start - before < p.approach_depth_m
        np.testing.assert_allclose(step, np.where(fast, fast_step, slow_step), rtol=1e-6)
        phases.append(fast)
    phases = np.array(phases)                                    # (step, point)
    assert phases[0].all() and not phases[-1].any()              # both phases happen
    assert np.all(phases[:-1] >= phases[1:])                     # fast, then slow, never back
    n_fast = phases.sum(axis=0)                                  # fast steps per point
    np.testing.assert_array_equal(n_fast, n_fast[0])             # depth counted from each start
    depth_after_fast = n_fast[0] * fast_step
    assert p.approach_depth_m <= depth_after_fast < p.approach_depth_m + fast_step
    np.testing.assert_allclose(start - planner.heights_m,
                               depth_after_fast + (n_steps - n_fast) * slow_step, rtol=1e-9)


def test_first_contact_after_the_approach_depth_keeps_the_speed():
    """Past the approach depth mode 1 runs at v_cut_max, the speed mode 2 starts at, so the first
    contact reading does not change a point's speed; before the depth it slows the point."""
    p = DamperParams()
    fresh = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0, p)
    dt = 0.1 * p.approach_depth_m / p.v_approach_m_s
    fresh.update([0.0, p.contact_level, np.nextafter(p.contact_level, 0.0)], dt)
    np.testing.assert_allclose(fresh.initial_heights_m - fresh.heights_m,
                               np.array([p.v_approach_m_s, p.v_cut_max_m_s, p.v_approach_m_s]) * dt,
                               rtol=1e-12)
    deep = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0, p)
    deep.update(np.zeros(3), 1.5 * p.approach_depth_m / p.v_approach_m_s)   # one step past it
    h = deep.heights_m
    assert np.all(deep.initial_heights_m - h >= p.approach_depth_m)
    deep.update([0.0, p.contact_level, np.nextafter(p.contact_level, 0.0)], dt)
    np.testing.assert_allclose(h - deep.heights_m, np.full(3, p.v_cut_max_m_s * dt), rtol=1e-9)


def test_latched_point_is_not_deepened_by_a_later_low_reading():
    p = DamperParams(overcut_m=0.0)   # done at the first through reading
    through, low, mid = p.through_level, p.contact_level / 2, (p.contact_level + p.through_level) / 2
    planner = MillingPlanner.from_fitted(np.full(4, 1e-3), 0.0, p)
    planner.update([through, mid, mid, np.nan], 1.0)
    assert planner.done[0] and not planner.done[1:].any()
    h = planner.heights_m
    planner.update([low, mid, mid, np.nan], 1.0)
    assert planner.heights_m[0] == h[0] and planner.done[0]
    assert np.all(planner.heights_m[1:] < h[1:])
    unlatched = MillingPlanner.from_fitted(np.full(4, 1e-3), 0.0, DamperParams(latch_done=False, overcut_m=0.0))
    unlatched.update([through, mid, mid, np.nan], 1.0)
    assert unlatched.done[0] and unlatched.heights_m[0] == 1e-3
    unlatched.update([low, mid, mid, np.nan], 1.0)
    assert not unlatched.done[0] and unlatched.heights_m[0] < 1e-3


def test_all_done_fires_exactly_when_the_last_point_reaches_through():
    p = DamperParams(overcut_m=0.0)   # done at the first through reading
    through = p.through_level
    below = float(np.nextafter(through, 0.0))
    mid = (p.contact_level + p.through_level) / 2
    planner = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0, p)
    planner.update([through, 1.0, mid], 1.0)
    assert not planner.all_done
    planner.update([np.nan, np.nan, below], 1.0)                # a hair short is not through
    assert not planner.all_done
    planner.update([p.contact_level, np.nan, through], 1.0)     # point 0 stays latched
    assert planner.all_done


def test_initialisations_and_path():
    p = DamperParams()
    h_ini = np.array([1.0e-3, 1.2e-3, 0.9e-3, 1.1e-3])
    fitted = MillingPlanner.from_fitted(h_ini, 0.5e-3, p)
    equal = MillingPlanner.equal_height(h_ini, 0.5e-3, p)
    np.testing.assert_array_equal(fitted.heights_m, h_ini)
    np.testing.assert_array_equal(fitted.initial_heights_m, h_ini)
    np.testing.assert_array_equal(equal.heights_m, np.full(4, 1.2e-3))
    np.testing.assert_array_equal(equal.initial_heights_m, np.full(4, 1.2e-3))
    np.testing.assert_array_equal(fitted.floor_m, np.full(4, 0.5e-3))
    np.testing.assert_allclose(fitted.theta_rad, [0, np.pi / 2, np.pi, 3 * np.pi / 2])
    np.testing.assert_array_equal(fitted.completion, 0.0)
    assert not fitted.done.any() and not fitted.all_done
    assert MillingPlanner(h_ini, 0.5e-3).params == DamperParams()   # the default damper
    path = fitted.path()
    np.testing.assert_array_equal(path(fitted.theta_rad), h_ini)
    dt = 0.5 * p.approach_depth_m / p.v_approach_m_s             # within the fast approach
    fitted.update(np.zeros(4), dt)
    np.testing.assert_allclose(fitted.heights_m, h_ini - p.v_approach_m_s * dt, rtol=1e-12)
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


def test_value_and_derivative_equal_the_ppoly_bit_for_bit():
    """The one-angle evaluation (the milling loop's, every period) gives PPoly's very floats,
    at random angles, at the knots and at wrapped angles."""
    rng = np.random.default_rng(3)
    for n in (3, 8, 24):
        theta = np.sort(rng.uniform(0.0, 2 * np.pi, n))
        spline = ClosedConstrainedSpline(theta, rng.uniform(-1e-3, 1e-3, n))
        for t in np.concatenate([rng.uniform(-10.0, 20.0, 2000), theta, theta + 2 * np.pi, [0.0, 2 * np.pi]]):
            assert spline.value_and_derivative(t) == (float(spline(t)), float(spline.derivative(t)))


def test_synchronised_finish_holds_the_points_ahead_until_every_point_catches_up():
    """Issue 13: points at sync_level wait for the points below it; done points and unseen (NaN)
    readings count with their last known level; sync_level = 1 never holds a point."""
    p = DamperParams(overcut_m=0.0)   # done at the first through reading                                  # contact 0.05, sync 0.9, through 0.99
    planner = MillingPlanner.from_fitted(np.full(4, 1e-3), 0.0, p)
    dt = 0.2
    planner.update(np.array([0.95, 0.5, 0.92, 0.99]), dt)   # 0 and 2 ahead, 1 behind, 3 done
    np.testing.assert_array_equal(planner.waiting, [True, False, True, False])
    np.testing.assert_allclose(1e-3 - planner.heights_m, [0.0, reference_speed(p, 0.5, 0.0) * dt, 0.0, 0.0],
                               rtol=1e-9, atol=0.0)
    planner.update(np.array([np.nan, 0.85, np.nan, np.nan]), dt)  # 1 still behind: 0 and 2 wait on
    np.testing.assert_array_equal(planner.waiting, [True, False, True, False])
    before = planner.heights_m
    planner.update(np.array([np.nan, 0.9, np.nan, np.nan]), dt)   # 1 caught up: all descend together
    assert not planner.waiting.any()
    step = before - planner.heights_m
    np.testing.assert_allclose(step, [reference_speed(p, c, 1e-3 - h) * dt for c, h in
                                      zip([0.95, 0.9, 0.92, 1.0], before)], rtol=1e-9, atol=0.0)
    assert step[3] == 0.0 and np.all(step[:3] > 0.0)
    off = MillingPlanner.from_fitted(np.full(4, 1e-3), 0.0, DamperParams(sync_level=1.0, overcut_m=0.0))
    off.update(np.array([0.95, 0.5, 0.92, 0.99]), dt)
    assert not off.waiting.any() and np.all(off.heights_m[:3] < 1e-3)


# ----- the settle (issue 13: a plan ahead of the cut is drained while bone is left) ---------------

def settle_run(readings, p: DamperParams, c: float = 0.5, dt: float = 0.2, n: int = 3):
    """Point 0 reads ``readings``, (thickness um (NaN: hidden), passes so far) per update of
    ``dt`` s; the others never read a thickness; every point reads completion ``c``. Returns the
    planner and, per update, (settling, height of point 0)."""
    planner = MillingPlanner.from_fitted(np.full(n, 1e-3), 0.0, p)
    trace = []
    for r, k in readings:
        remaining = np.full(n, np.nan)
        remaining[0] = r * 1e-6
        planner.update(np.full(n, c), dt, remaining, np.full(n, k))
        trace.append((bool(planner.settling[0]), float(planner.heights_m[0])))
    return planner, trace


def laps(levels_um, seen: int = 14, hidden: int = 2, before=()):
    """(reading, passes) of a point the burr passes once a lap: ``before`` (um, passes 0) first,
    then per level ``seen`` readings of it (um) and ``hidden`` NaN readings (the burr over it); the
    pass, counted from the first update after the hidden readings, lowers the point to the next
    level."""
    out = [(r, 0) for r in before]
    for k, level in enumerate(levels_um):
        out += [(level, k)] * seen + [(np.nan, k)] * hidden
    return out


def test_settle_defaults():
    p = DamperParams()
    assert (p.settle_below_m, p.resettle_below_m, p.settle_drop_m, p.resettle_drop_m, p.settle_readings,
            p.settle_max_s) == (150e-6, 80e-6, 15e-6, 8e-6, 3, 20.0)
    assert p.settle_levels_m == (150e-6, 80e-6) and DamperParams(resettle_below_m=0.0).settle_levels_m == (150e-6,)
    assert DamperParams(settle_below_m=0.0).settle_levels_m == ()


#: after a pass, the settle compares the median of the first three readings
JUDGED = 3


def test_a_point_behind_its_plan_holds_until_a_pass_no_longer_thins_it():
    """Worked example: once the point reads <= 150 um, each pass of the burr thins it by 20, 12,
    then 5 um (the burr catching up with a plan ~37 um ahead of the cut). With a 8 um threshold it
    holds (its height does not move) until three readings after the 5 um pass have been read
    and their median compared with that of the readings before the pass."""
    p = DamperParams(resettle_below_m=0.0, settle_drop_m=8e-6)
    readings = laps([140.0, 120.0, 108.0, 103.0], before=[200.0] * 3) + [(103.0, 4)] * 20
    planner, trace = settle_run(readings, p)
    enter = 3                                        # the first reading <= 150 um
    assert not any(s for s, _ in trace[:enter]) and trace[enter][0]
    held = [k for k, (s, _) in enumerate(trace) if s]
    end = held[-1] + 1
    assert held == list(range(enter, end))
    assert end == enter + 3 * 16 + JUDGED - 1         # judged on the 3rd reading after the third pass
    h_hold = trace[enter][1]
    assert all(h == h_hold for _, h in trace[enter:end]) and trace[end][1] < h_hold
    assert planner.settles[0] == 1 and not planner.settling[0]
    assert not planner.settles[1:].any() and not planner.settling[1:].any()
    # the default first settle ends on a pass that thins by <= 15 um: here the 12 um one
    planner, trace = settle_run(readings, DamperParams(resettle_below_m=0.0))
    assert max(k for k, (s, _) in enumerate(trace) if s) + 1 == enter + 2 * 16 + JUDGED - 1


def test_a_point_that_keeps_up_settles_after_one_pass():
    planner, trace = settle_run(laps([140.0, 136.0, 136.0]), DamperParams())
    held = [k for k, (s, _) in enumerate(trace) if s]
    assert held[0] == 0 and len(held) == 16 + JUDGED - 1   # one lap and the readings after its pass
    assert planner.settles[0] == 1


def test_a_single_reading_before_a_pass_does_not_judge_it():
    """A settle begun on the last reading before a pass waits for the next pass: one reading (here
    a low outlier, 120 um over 160 um bone) is too noisy to compare."""
    readings = [(160.0, 0)] * 13 + [(120.0, 0)] + [(np.nan, 0)] * 2 + laps([125.0, 124.0])
    readings = [(r, k + (1 if j >= 16 else 0)) for j, (r, k) in enumerate(readings)]
    planner, trace = settle_run(readings, DamperParams())
    held = [k for k, (s, _) in enumerate(trace) if s]
    assert held[0] == 13 and held[-1] == 13 + 2 + 16 + JUDGED - 1   # judged at the second pass
    assert planner.settles[0] == 1


def test_a_settle_never_lasts_longer_than_settle_max_s():
    p = DamperParams(resettle_below_m=0.0, settle_max_s=10.0)
    dt = 0.2
    planner, trace = settle_run(laps([150.0, 125.0, 100.0, 75.0, 50.0]), p, dt=dt)   # 25 um a pass, never flat
    held = [k for k, (s, _) in enumerate(trace) if s]
    assert len(held) == round(10.0 / dt) and planner.settles[0] == 1


def test_no_settle_without_thickness_readings_or_when_switched_off():
    p = DamperParams()
    a = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0, p)
    b = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0, p)
    off = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0, DamperParams(settle_below_m=0.0))
    for _ in range(10):
        a.update(np.full(3, 0.5), 0.2)
        b.update(np.full(3, 0.5), 0.2, np.full(3, np.nan), np.zeros(3))
        off.update(np.full(3, 0.5), 0.2, np.full(3, 50e-6), np.zeros(3))
    np.testing.assert_array_equal(a.heights_m, b.heights_m)
    np.testing.assert_array_equal(a.heights_m, off.heights_m)
    assert not off.settling.any() and not off.settles.any() and np.all(a.heights_m < 1e-3)


def test_a_point_read_through_during_its_settle_is_done_and_no_longer_settling():
    p = DamperParams(overcut_m=0.0)   # done at the first through reading
    planner = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0, p)
    planner.update(np.full(3, 0.6), 0.2, np.array([100e-6, np.nan, np.nan]), np.zeros(3))
    assert planner.settling[0]
    planner.update(np.array([1.0, 0.6, 0.6]), 0.2, np.array([0.0, np.nan, np.nan]), np.ones(3))
    assert planner.done[0] and not planner.settling[0]


@pytest.mark.parametrize("remaining, passes, field", [
    (np.zeros(2), np.zeros(3), "remaining_m"),
    (np.array([1e-4, -1e-6, 0.0]), np.zeros(3), r"remaining_m\[1\]"),
    (np.array([1e-4, np.inf, 0.0]), np.zeros(3), r"remaining_m\[1\]"),
    (np.zeros(3), np.zeros(2), "passes"),
    (np.zeros(3), np.array([0.0, 0.5, 0.0]), r"passes\[1\]"),
    (np.zeros(3), np.array([0.0, 0.0, -1.0]), r"passes\[2\]"),
    (np.zeros(3), None, "passes"),
    (None, np.zeros(3), "remaining_m"),
])
def test_planner_rejects_bad_thickness_readings_naming_the_field(remaining, passes, field):
    planner = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0)
    with pytest.raises(PlanningParameterError, match=field):
        planner.update(np.full(3, 0.5), 0.2, remaining, passes)


def test_pass_counts_never_go_back():
    planner = MillingPlanner.from_fitted(np.full(3, 1e-3), 0.0)
    planner.update(np.full(3, 0.5), 0.2, np.full(3, np.nan), np.array([2, 1, 1]))
    with pytest.raises(PlanningParameterError, match=r"passes\[0\]=1.0: must be a whole number >= the last count, 2"):
        planner.update(np.full(3, 0.5), 0.2, np.full(3, np.nan), np.array([1, 1, 1]))


def test_a_gap_in_the_readings_that_is_not_a_pass_does_not_end_a_settle():
    """The drill's shank hides points the burr is not cutting: a gap without a pass compares nothing."""
    p = DamperParams()
    shank_gap = [(140.0, 0)] * 5 + [(np.nan, 0)] * 3 + [(140.0, 0)] * 10
    planner, trace = settle_run(shank_gap + laps([140.0, 120.0, 119.0])[16:], p)
    assert all(s for s, _ in trace[:len(shank_gap) + 16])        # held through the gap and the 140 -> 120 pass
    assert planner.settles[0] == 1


def test_a_point_found_behind_its_plan_settles_again_at_resettle_below_m():
    """The first settle's 140 -> 125 um pass (> resettle_drop_m, 8 um) shows the point was behind
    its plan: it settles again at 80 um. A point whose first settle found it keeping up does not."""
    p = DamperParams()                                       # settles at 150 um, then at 80 um
    readings = laps([140.0, 125.0, 123.0]) + [(100.0, 3)] * 5 + [(75.0, 3)] * 3
    planner, trace = settle_run(readings, p)
    assert planner.settles[0] == 1 and planner.settling[0]   # the second settle has begun at 75 um
    assert not any(s for s, _ in trace[len(readings) - 8:len(readings) - 3])   # free in between
    planner.update(np.full(3, 0.5), 0.2, np.array([np.nan] * 3), np.full(3, 4))
    for _ in range(JUDGED):
        planner.update(np.full(3, 0.5), 0.2, np.array([74e-6, np.nan, np.nan]), np.full(3, 4))
    assert planner.settles[0] == 2 and not planner.settling[0]
    off, _ = settle_run(readings, DamperParams(resettle_below_m=0.0))
    assert off.settles[0] == 1 and not off.settling[0]
    kept_up = laps([140.0, 136.0, 135.0]) + [(100.0, 3)] * 5 + [(75.0, 3)] * 3
    planner, _ = settle_run(kept_up, p)
    assert planner.settles[0] == 1 and not planner.settling[0]


def overcut_run(readings_um, descent_um: float = 0.0, floor_m: float = 0.0, **kwargs):
    """Point 0 reads ``readings_um`` (thickness, no time passing) at 1 mm, descends
    ``descent_um`` unseen, then reads through; the planner (no settle, no sync) and the height
    (m) of point 0 after each further second."""
    p = DamperParams(settle_below_m=0.0, sync_level=1.0, v_cut_min_m_s=4e-6, **kwargs)
    planner = MillingPlanner.from_fitted(np.full(3, 1e-3), np.array([floor_m, 0.0, 0.0]), p)
    hidden = np.full(3, np.nan)
    for r in readings_um:
        planner.update(np.full(3, 0.5), 0.0, np.array([r * 1e-6, np.nan, np.nan]), np.zeros(3))
    if descent_um:
        dt = descent_um * 1e-6 / p.speed_m_s(np.array([0.5]))[0]
        planner.update(np.full(3, 0.5), dt, hidden, np.zeros(3))
    heights = []
    for c0 in [1.0] + [np.nan] * 6:
        planner.update(np.array([c0, 0.5, 0.5]), 1.0, np.array([0.0 if c0 == 1.0 else np.nan, np.nan, np.nan]),
                       np.zeros(3))
        heights.append(float(planner.heights_m[0]))
    return planner, np.array(heights)


def test_the_over_cut_is_the_bone_read_before_through_less_the_descent_and_the_margin():
    """Issue 13: a point read through cuts on at v_cut_min_m_s (4 um/s here) by the median of the
    last three readings before, less the descent since them, less overcut_margin_m (10 um),
    clipped to [0, overcut_m] (10 um), then is done and stays put."""
    assert (DamperParams().overcut_m, DamperParams().overcut_margin_m) == (10e-6, 10e-6)
    top = 1e-3
    for readings, descent, overcut in [([30.0] * 3, 0.0, 10.0),          # 20 um clipped to 10
                                       ([12.0, 18.0, 40.0], 0.0, 8.0),   # median 18 - 10
                                       ([30.0] * 3, 15.0, 5.0),          # 30 - 15 - 10
                                       ([8.0] * 3, 0.0, 0.0),            # cut through: none
                                       ([30.0] * 2, 0.0, 0.0)]:          # too few readings: none
        planner, h = overcut_run(readings, descent)
        start = top - descent * 1e-6
        assert h[-1] == pytest.approx(start - overcut * 1e-6, abs=1e-12), (readings, descent)
        assert planner.done[0]
        n_cut = int(np.ceil(overcut / 4.0 - 1e-9))                   # seconds of cutting at 4 um/s
        assert h[n_cut:].max() == pytest.approx(h[-1], abs=1e-12)   # then done, and put
    planner, h = overcut_run([30.0] * 3, floor_m=top - 3e-6)         # the floor ends it early
    assert planner.done[0] and h[-1] == pytest.approx(top - 3e-6, abs=1e-12)
    planner, h = overcut_run([30.0] * 3, overcut_m=0.0)              # the paper's rule
    assert planner.done[0] and np.all(h == top)


def test_a_point_its_settle_found_behind_gets_no_over_cut():
    """Behind at its settle (a 15 um pass, > resettle_drop_m): the head is pressed down by the
    lag, so the 30 um read before through is no clearance; a point that kept up (4 um) gets the
    over-cut (30 um less the 10 um margin, clipped to 10 um)."""
    p = DamperParams(resettle_below_m=0.0, sync_level=1.0)
    for levels, overcut in [([140.0, 125.0, 123.0], 0.0), ([140.0, 136.0, 135.0], p.overcut_m)]:
        planner, _ = settle_run(laps(levels) + [(30.0, 3)] * 3, p)
        assert planner.settles[0] == 1 and not planner.settling[0]
        through_h = float(planner.heights_m[0])          # the height at the through reading
        for c0 in [1.0] + [np.nan] * 5:
            planner.update(np.array([c0, 0.5, 0.5]), 1.0, np.full(3, np.nan), np.full(3, 3))
        assert planner.done[0]
        assert planner.heights_m[0] == pytest.approx(through_h - overcut, abs=1e-12), levels


def lag_run(levels_per_point_um, p: DamperParams, n: int = 8):
    """Points 0.. read the ``laps`` of their levels (the rest never read a thickness); all
    read completion 0.5. Returns the planner after the last reading."""
    runs = [laps(levels) for levels in levels_per_point_um]
    planner = MillingPlanner.from_fitted(np.full(n, 1e-3), 0.0, p)
    for step in range(max(len(r) for r in runs)):
        remaining, passes = np.full(n, np.nan), np.zeros(n)
        for i, r in enumerate(runs):
            reading, k = r[min(step, len(r) - 1)]
            remaining[i], passes[i] = reading * 1e-6, k
        planner.update(np.full(n, 0.5), 0.2, remaining, passes)
    return planner


def test_the_first_settles_lags_scale_every_cutting_speed():
    """Issue 13, slow bone: a point's first settle thinned it by 20, 12 and 5 um (the pass that
    ended it): its lag was 37 um. Once 3 points have measured theirs, every cutting speed is
    scaled by sqrt(lag_target_m / the upper quartile of the lags): sqrt(8 / 37) here. Before
    that, and where the lags are <= 8 um (a point that kept up settles on its first pass, here
    thinned by 6 um), the speeds are the damper's."""
    p = DamperParams(resettle_below_m=0.0, settle_drop_m=8e-6, sync_level=1.0)
    assert (DamperParams().lag_target_m, DamperParams().min_speed_scale) == (8e-6, 0.25)
    behind = [140.0, 120.0, 108.0, 103.0, 103.0]
    two = lag_run([behind, behind], p)
    assert two.lag_m[:2] == pytest.approx([37e-6, 37e-6], abs=1e-12) and two.speed_scale == 1.0
    three = lag_run([behind] * 3, p)
    assert np.all(np.isnan(three.lag_m[3:])) and three.speed_scale == pytest.approx(math.sqrt(8.0 / 37.0))
    before = three.heights_m
    three.update(np.full(8, 0.5), 1.0, np.full(8, np.nan), np.full(8, 5))
    law = p.speed_m_s(np.array([0.5]))[0]
    np.testing.assert_allclose(before[3:] - three.heights_m[3:], law * math.sqrt(8.0 / 37.0), rtol=1e-9)
    kept_up = lag_run([[140.0, 134.0, 134.0]] * 3, p)
    assert kept_up.lag_m[:3] == pytest.approx([6e-6] * 3, abs=1e-12) and kept_up.speed_scale == 1.0
    off = lag_run([behind] * 3, DamperParams(resettle_below_m=0.0, settle_drop_m=8e-6, lag_target_m=0.0))
    assert off.speed_scale == 1.0


def test_the_speed_scale_is_set_by_the_upper_quartile_and_never_below_min_speed_scale():
    p = DamperParams(resettle_below_m=0.0, settle_drop_m=8e-6, sync_level=1.0, min_speed_scale=0.4)
    slow = [140.0, 60.0, 20.0, 18.0, 18.0]                                           # 80 + 40 + 2 um
    lags = lag_run([[140.0, 136.0, 136.0]] * 3 + [slow], p)                           # 4, 4, 4, 122 um
    assert lags.lag_m[:4] == pytest.approx([4e-6, 4e-6, 4e-6, 122e-6], abs=1e-12)
    q75 = float(np.quantile([4.0, 4.0, 4.0, 122.0], 0.75))                           # 33.5 um
    assert lags.speed_scale == pytest.approx(math.sqrt(8.0 / q75))
    slowest = lag_run([slow] * 3, p)                                                  # sqrt(8/122) < 0.4
    assert slowest.speed_scale == 0.4


def test_the_approach_through_air_is_never_scaled():
    p = DamperParams(resettle_below_m=0.0, settle_drop_m=8e-6, sync_level=1.0)
    behind = [140.0, 120.0, 108.0, 103.0, 103.0]
    planner = lag_run([behind] * 3, p)
    assert planner.speed_scale < 1.0
    before = planner.heights_m
    planner.update(np.array([0.5] * 7 + [0.0]), 1.0, np.full(8, np.nan), np.full(8, 5))
    assert before[7] - planner.heights_m[7] == pytest.approx(p.v_approach_m_s, rel=1e-9)


@FAST
@given(st.data())
def test_settle_invariants_for_any_sequence_of_readings_and_passes(data):
    """With thickness readings and passes, whatever they are: heights only descend and never
    below the floor, a point holding in a settle does not move, no point settles more often than
    there are levels, a done point never holds in a settle, and a point read through goes at most
    overcut_m below its height at the first through reading."""
    n = data.draw(st.integers(3, 8))
    p = DamperParams(settle_max_s=data.draw(st.floats(0.5, 30.0)), sync_level=data.draw(st.sampled_from([0.9, 1.0])))
    planner = MillingPlanner.from_fitted(np.full(n, 1e-3), 0.0, p)
    passes = np.zeros(n, dtype=int)
    reading = st.one_of(st.just(np.nan), st.floats(0.0, 400e-6))
    through_h = np.full(n, np.nan)        # the height at the first through reading
    for _ in range(data.draw(st.integers(1, 60))):
        c = np.array(data.draw(st.lists(st.one_of(st.just(np.nan), st.floats(0.0, 1.0)), min_size=n, max_size=n)))
        r = np.array(data.draw(st.lists(reading, min_size=n, max_size=n)))
        passes = passes + np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
        before = planner.heights_m
        through_h = np.where(np.isnan(through_h) & (c >= p.through_level), before, through_h)
        planner.update(c, data.draw(st.floats(0.0, 2.0)), r, passes)
        h = planner.heights_m
        read = ~np.isnan(through_h)       # the over-cut: never more than overcut_m below it
        assert np.all(h[read] >= through_h[read] - p.overcut_m - 1e-12)
        assert np.all(h <= before) and np.all(h >= planner.floor_m)
        assert np.array_equal(h[planner.settling], before[planner.settling])
        assert np.all(planner.settles <= len(p.settle_levels_m))
        assert not (planner.settling & planner.done).any()
        assert p.min_speed_scale <= planner.speed_scale <= 1.0
        assert np.all(np.isnan(planner.lag_m) | (planner.lag_m >= 0.0))
