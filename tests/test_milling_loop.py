"""Closed-loop milling end to end on the twin at 50 Hz (oracle perception, ideal trajectory),
and the loop's stop conditions: complete, timeout, lost perception, safety fault."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.completion_sensing import CompletionFilter
from controllers.milling import MillingSettings, MillingSetupError, mill_window
from controllers.pipeline import open_session
from controllers.planning import StopReason
from hw_bridge.errors import CommandRejected
from hw_bridge.registry import make_hardware
from scenes.spec import load_scene
from scenarios.scoring import ideal_trajectory, score_milling
from twin.completion_oracle import OracleCompletionSensor, OracleErrorModel

SMALL = {"control.period_s": 0.02}


def _session(seed=0, **overrides):
    hw = make_hardware("twin", load_scene("default", {**SMALL, **overrides}), seed=seed)
    return hw, open_session(hw), ideal_trajectory(hw.ground_truth)


def _oracle(hw, mae=0.0, dropout=0.0):
    return OracleCompletionSensor(hw.ground_truth, OracleErrorModel(mae=mae, dropout=dropout),
                                  np.random.default_rng(0))


def test_whole_window_with_perfect_perception():
    hw, s, traj = _session(seed=1, **{"skull.seed": 11})
    try:
        rep = mill_window(s.loop, s.pc, traj, _oracle(hw))
        m = score_milling(hw.ground_truth, rep)
        assert rep.stop_reason is StopReason.COMPLETE and rep.done.all()
        assert m["success"] == 1.0 and m["breaches"] == 0 and m["detachable"] == 1.0
        assert m["max_bridge_um"] <= 20.0
        assert 20.0 < rep.duration_s < 150.0
        assert not hw.drill_state().on                                           # drill off at the stop
        assert np.all(rep.final_heights_m >= rep.floor_m - 1e-12)                # planner above its floor
        log = rep.log.arrays()
        # heights never rise; a point read through is never lowered again
        assert np.all(np.diff(log["heights_m"], axis=0) <= 1e-15)
        burr = hw.robot.tool_position(hw.read().position)
        assert rep.frame.to_window(burr)[2] > rep.final_heights_m.max() + 2e-3   # retracted
    finally:
        hw.close()


@pytest.mark.parametrize("dropout, settings_kw, reason, limit_s", [
    (0.0, {"timeout_s": 5.0}, StopReason.TIMEOUT, 5.0),
    (1.0, {"perception_timeout_s": 1.0}, StopReason.PERCEPTION_LOST, 1.0),   # no reading ever arrives
])
def test_stops_on_its_limits_and_switches_the_drill_off(dropout, settings_kw, reason, limit_s):
    hw, s, traj = _session()
    try:
        rep = mill_window(s.loop, s.pc, traj, _oracle(hw, dropout=dropout), MillingSettings(**settings_kw))
        assert rep.stop_reason is reason
        assert limit_s <= rep.duration_s < limit_s + 0.5 and not hw.drill_state().on
    finally:
        hw.close()


def test_stops_on_a_safety_fault_from_hw_bridge():
    """A command refused by hw_bridge mid-run: the loop stops at once, drill off, no retract."""
    hw, s, traj = _session()
    original = hw.write
    calls = {"n": 0}

    def failing_write(q):
        calls["n"] += 1
        if calls["n"] > 400:                   # the approach and ~2 s of milling pass first
            raise CommandRejected("injected: joint 3 beyond its velocity limit")
        original(q)

    hw.write = failing_write
    try:
        rep = mill_window(s.loop, s.pc, traj, _oracle(hw))
        assert rep.stop_reason is StopReason.SAFETY_FAULT and "injected" in rep.message
        assert not hw.drill_state().on
    finally:
        hw.close()


def test_a_watchdog_stop_mid_window_ends_the_loop_with_its_report():
    """NaN joint states from the robot mid-run: hw_bridge stops safely (drill off, inactive);
    mill_window returns its report with the reason instead of raising."""
    hw, s, traj = _session()
    original = hw.advance
    calls = {"n": 0}

    def advance_then_fault():
        calls["n"] += 1
        if calls["n"] == 400:
            hw.inject("nan_joint_states")
        original()

    hw.advance = advance_then_fault
    try:
        rep = mill_window(s.loop, s.pc, traj, _oracle(hw))
        assert rep.stop_reason is StopReason.SAFETY_FAULT and "non-finite" in rep.message
        assert hw.state.value == "inactive" and not hw.drill_state().on
        assert len(rep.log.t_s) > 0          # what was measured before the stop is kept
    finally:
        hw.close()


def test_bad_settings_are_refused_before_anything_moves():
    with pytest.raises(MillingSetupError, match="initialisation"):
        MillingSettings(initialisation="z0")
    with pytest.raises(MillingSetupError, match="traverse_speed_m_s"):
        MillingSettings(traverse_speed_m_s=-1.0)
    hw, s, traj = _session()
    try:
        q0 = hw.read().position
        with pytest.raises(MillingSetupError, match="drill_speed_rpm"):
            mill_window(s.loop, s.pc, traj, _oracle(hw), MillingSettings(drill_speed_rpm=1e6))
        np.testing.assert_array_equal(hw.read().position, q0)
    finally:
        hw.close()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.lists(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), min_size=4,
                                            max_size=4), min_size=1, max_size=12))
def test_completion_filter_is_the_median_of_the_last_valid_readings(window, readings):
    f = CompletionFilter(4, window)
    hist = [[] for _ in range(4)]
    for row in readings:
        out = f.update(np.array(row))
        for i, v in enumerate(row):
            if np.isfinite(v):
                hist[i] = (hist[i] + [v])[-window:]
            expected = np.median(hist[i]) if hist[i] else np.nan
            np.testing.assert_allclose(out[i], expected, equal_nan=True)


def test_virtual_floor_lies_a_skull_and_the_fits_error_below_the_fitted_surface():
    """floor_i = fitted surface height - max plausible thickness - fit margin + burr radius, along
    the window axis; checked on a flat fitted circle at z = 0 (axis +z), by hand."""
    from controllers.milling import plan_geometry
    from controllers.surface_fit import FittedTrajectory

    n, r = 8, 2e-3
    th = 2 * np.pi * np.arange(n) / n
    fit = np.stack([r * np.cos(th), r * np.sin(th), np.zeros(n)], axis=1)
    up = np.tile([0.0, 0.0, 1.0], (n, 1))
    ini = fit + 1e-3 * up
    traj = FittedTrajectory(np.zeros(2), np.zeros(3), r, 1e-3, fit, up, ini, fit, ini, up,
                            np.full(n, 50), np.zeros(n), np.eye(4))
    frame, radius, h_ini, floor, h_surface = plan_geometry(traj, MillingSettings(), 0.5e-3)
    np.testing.assert_allclose(h_surface, 0.0, atol=1e-15)
    np.testing.assert_allclose(h_ini, 1e-3, rtol=1e-12)
    np.testing.assert_allclose(floor, -0.65e-3 - 0.3e-3 + 0.5e-3, rtol=1e-12)
    no_margin = plan_geometry(traj, MillingSettings(floor_fit_margin_m=0.0), 0.5e-3)[3]
    np.testing.assert_allclose(no_margin, -0.65e-3 + 0.5e-3, rtol=1e-12)
    assert radius == pytest.approx(r, rel=1e-12)


def test_passes_over_counts_a_pass_once_the_burr_has_left_the_point():
    from controllers.milling import passes_over
    theta_i = np.array([0.0, np.pi / 2, 3 * np.pi / 2])
    w = 0.25                                                     # burr radius / circle radius (rad)
    np.testing.assert_array_equal(passes_over(0.0, theta_i, w), [0, 0, 0])
    np.testing.assert_array_equal(passes_over(0.25, theta_i, w), [1, 0, 0])
    np.testing.assert_array_equal(passes_over(np.pi / 2 + 0.2, theta_i, w), [1, 0, 0])
    np.testing.assert_array_equal(passes_over(np.pi / 2 + 0.3, theta_i, w), [1, 1, 0])
    np.testing.assert_array_equal(passes_over(2 * np.pi + 0.3, theta_i, w), [2, 1, 1])
    np.testing.assert_array_equal(passes_over(4 * np.pi + np.pi, theta_i, w), [3, 3, 2])


def test_the_first_readings_after_each_pass_are_left_out():
    from controllers.milling import AfterPassReadings
    skip = AfterPassReadings(2, 3)
    valid = np.array([True, True])
    # point 0: passed at the second update; point 1: never; a hidden reading does not count
    marks = [skip.update(np.array([p0, 0]), v) for p0, v in
             [(0, valid), (1, valid), (1, np.array([False, True])), (1, valid), (1, valid), (1, valid), (2, valid)]]
    np.testing.assert_array_equal([m[0] for m in marks], [True, True, False, True, True, False, True])
    np.testing.assert_array_equal([m[1] for m in marks], [True, True, True, False, False, False, False])
    none = AfterPassReadings(1, 0)
    assert not none.update(np.array([1]), np.array([True]))[0]
