"""The safety layer (hw_bridge.interface + hw_bridge.safety) on the mock backend (the twin's servo
model without a world: the rules are the point, not the skull or the images): every violation
stops the run (refused command not sent, drill off, robot holding, interface inactive, a reason);
arming; the watchdog. The same rules run on every backend (they live in the base class);
tests/test_hw_contract.py runs them on the twin too, and tests/test_coppeliasim_backend.py and
tests/test_sas_backend.py over the wire."""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_bridge.backends.mock import MockHardware
from hw_bridge.backends.twin import TwinHardware
from hw_bridge.errors import CommandRejected, HardwareError, LifecycleError, SafetyStop
from hw_bridge.interface import Lifecycle
from hw_bridge.safety import ArmingError, WorkspaceBox
from scenes.frames import apply, invert
from scenes.spec import load_scene
from event_recorder import EventRecorder

FAST = {"control.period_s": 0.01}
#: a fixed stereo pair for the mock's cameras (the frame watchdog needs frames, not their content)
IMAGES = (np.full((48, 64, 3), 90, np.uint8), np.full((48, 64, 3), 110, np.uint8))


def _active(overrides=None, cls=MockHardware, **kwargs):
    hw = cls(load_scene("default", {**FAST, **(overrides or {})}), 0, **kwargs)
    hw.configure()
    hw.activate()
    return hw


def _assert_stopped_safely(hw, q_before, words):
    assert hw.state is Lifecycle.INACTIVE
    assert hw.fault and all(w in hw.fault for w in words), hw.fault
    with pytest.raises(LifecycleError, match="safety layer"):
        hw.write(q_before)
    for _ in range(20):
        hw.advance()
    assert not hw.drill_state().on
    assert np.max(np.abs(hw.read().position - q_before)) < 1e-5      # held where it was


def _bad_commands(hw, q):
    n = q.size
    lim = hw.limits
    return {
        "nan": np.where(np.arange(n) == 2, np.nan, q),
        "inf": np.where(np.arange(n) == 5, -np.inf, q),
        "shape": q[:5],
        "above_limit": np.where(np.arange(n) == 1, lim.position_max[1] + 1e-3, q),
        "below_limit": np.where(np.arange(n) == 1, lim.position_min[1] - 1e-3, q),
        "too_fast": q + np.where(np.arange(n) == 3, 3 * lim.velocity_max[3] * hw.period_s, 0.0),
    }


def test_every_bad_command_stops_the_run():
    """One session: each bad command in turn stops it safely; a deliberate re-activation resumes."""
    hw = _active()
    try:
        q = hw.read().position
        for kind, bad in _bad_commands(hw, q).items():
            hw.set_drill(True, 20000.0)
            with pytest.raises(CommandRejected):
                hw.write(bad)
            _assert_stopped_safely(hw, q, ["rejected"])
            hw.activate()
    finally:
        hw.close()


def test_leaving_the_workspace_box_stops_the_run_before_the_tool_leaves():
    """Box top 0.2 mm above the home tool: rising at the stage's speed is refused at the edge."""
    home_z_s = 2.98868e-3                                            # home burr centre in {S}, default scene
    hw = _active({"safety.workspace_max_mm_s": [40.0, 40.0, home_z_s * 1e3 + 0.2]})
    try:
        T_r_to_s = invert(hw._scene.T_s_to_r)
        hw.set_drill(True, 20000.0)
        q = hw.read().position
        step = np.zeros(8)
        step[1] = -hw.limits.velocity_max[1] * hw.period_s           # the linear stage; which way is up?
        z0 = apply(T_r_to_s, hw.robot.tool_position(q))[2]
        if apply(T_r_to_s, hw.robot.tool_position(q + step))[2] < z0:
            step = -step
        with pytest.raises(CommandRejected, match="workspace box"):
            for _ in range(1000):
                q = q + step
                hw.write(q)
                hw.advance()
        last_sent = q - step
        z_last = apply(T_r_to_s, hw.robot.tool_position(last_sent))[2]
        assert z_last <= hw._scene.safety.workspace_max_s[2]         # the refused command was never sent
        for _ in range(30):
            hw.advance()
        z_now = apply(T_r_to_s, hw.robot.tool_position(hw.true_state()[0]))[2]
        assert z_now <= hw._scene.safety.workspace_max_s[2] + 1e-6
        assert hw.state is Lifecycle.INACTIVE and not hw.drill_state().on and "workspace" in hw.fault
    finally:
        hw.close()


def test_a_bad_drill_command_stops_the_run():
    hw = _active()
    try:
        hw.set_drill(True, 20000.0)
        q = hw.read().position
        with pytest.raises(CommandRejected, match="speed_rpm"):
            hw.set_drill(True, 1e9)
        _assert_stopped_safely(hw, q, ["speed_rpm"])
    finally:
        hw.close()


def test_watchdog_on_joint_states():
    """One session: each joint-state fault stops it within 0.5 s, safely; after the fault is gone a
    deliberate re-activation resumes. (tests/test_hw_contract.py runs the same faults on every backend.)"""
    hw = _active()
    try:
        for fault, words in [("nan_joint_states", ["non-finite"]), ("freeze_joint_states", ["stale"]),
                             ("delay_joint_states", ["stale"]), ("disconnect", ["connection lost"])]:
            hw.set_drill(True, 20000.0)
            q = hw.read().position
            t0 = hw.now()
            hw.inject(fault)
            with pytest.raises(SafetyStop):
                for _ in range(100):                     # 1 s: the stop must come well before
                    hw.read()
                    hw.write(q)
                    hw.advance()
            assert hw.now() - t0 < 0.5, fault
            if fault == "disconnect":                    # the stop could not reach the robot yet: retried
                with pytest.raises(SafetyStop, match="not reached the robot"):
                    hw.activate()
            hw.clear()
            _assert_stopped_safely(hw, q, words)
            hw.activate()
            hw.write(hw.read().position)
    finally:
        hw.close()


def test_watchdog_on_frozen_and_missing_frames():
    hw = _active(images=IMAGES)
    try:
        t_end = hw.now() + 0.2
        while hw.now() < t_end:
            hw.write(hw.read().position)
            hw.advance()
        assert hw.grab_stereo() is not None
        hw.inject("freeze_frames")
        with pytest.raises(SafetyStop, match="stereo frames are stale"):
            for _ in range(100):
                hw.write(hw.read().position)
                hw.advance()
                hw.grab_stereo()
    finally:
        hw.close()
    late = {"sensors.cameras.delay_s": 1.0}          # the first frame comes after max_image_age_s = 0.5 s
    hw = _active(late, images=IMAGES)
    try:
        with pytest.raises(SafetyStop, match="no stereo frame"):
            for _ in range(100):
                hw.grab_stereo()
                hw.write(hw.read().position)
                hw.advance()
    finally:
        hw.close()


class _RealtimeMock(MockHardware):
    """The mock with the real-time rule switched on (the deadline applies to real-time backends)."""

    realtime = True


def test_missed_control_deadline_stops_a_realtime_backend():
    hw = _active({"safety.control_deadline_s": 0.05}, cls=_RealtimeMock)
    try:
        q = hw.read().position
        for _ in range(5):                           # fast cycles are fine
            hw.write(q)
            hw.advance()
        hw.write(q)
        time.sleep(0.08)                             # a controller that took too long
        with pytest.raises(SafetyStop, match="deadline"):
            hw.advance()
        assert hw.state is Lifecycle.INACTIVE
    finally:
        hw.close()
    hw = _active({"safety.control_deadline_s": 0.05})  # a lockstep backend has no wall-clock deadline
    try:
        hw.write(hw.read().position)
        time.sleep(0.08)
        hw.advance()
        assert hw.state is Lifecycle.ACTIVE
    finally:
        hw.close()


class _PretendRealRobot(MockHardware):
    """The mock treated like a robot that really moves, so the arming rule applies."""

    moves_real_robot = True


def test_an_unarmed_real_robot_is_a_dry_run():
    hw = _active({"safety.armed": True}, cls=_PretendRealRobot)          # config says yes, no --arm flag
    try:
        assert not hw.armed
        q0 = hw.true_state()[0]
        q = hw.read().position
        hw.set_drill(True, 20000.0)
        for k in range(50):
            q = q + np.where(np.arange(8) == 7, 0.5 * hw.limits.velocity_max[7] * hw.period_s, 0.0)
            hw.write(q)
            hw.advance()
        assert hw.dry_run_commands == 50
        assert np.max(np.abs(hw.true_state()[0] - q0)) < 1e-9                  # nothing moved
        assert not hw.drill_state().on
        with pytest.raises(CommandRejected):       # the rules still apply in a dry run
            hw.write(np.full(8, np.nan))
    finally:
        hw.close()


def test_arming_needs_the_flag_and_the_config():
    scene = load_scene("default", FAST)
    with pytest.raises(ArmingError, match="safety.armed"):
        _PretendRealRobot(scene, 0, armed=True)
    hw = _active({"safety.armed": True}, cls=_PretendRealRobot, armed=True)
    try:
        assert hw.armed
        q = hw.read().position
        q1 = q + np.where(np.arange(8) == 3, hw.limits.velocity_max[3] * hw.period_s, 0.0)
        hw.write(q1)
        for _ in range(20):
            hw.write(q1)
            hw.advance()
        assert np.max(np.abs(hw.read().position - q1)) < 1e-5                  # armed: it moved
    finally:
        hw.close()
    assert TwinHardware(scene, 0).armed          # the embedded twin needs no arming
    assert MockHardware(scene, 0).armed          # nor the mock


SCENE = load_scene("default")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-60.0, 60.0), min_size=3, max_size=3))
def test_workspace_box_is_exactly_the_configured_box(p_mm_s):
    scene = SCENE
    box = WorkspaceBox(scene.safety, scene.T_s_to_r)
    p_s = np.array(p_mm_s) * 1e-3
    inside = bool(np.all(p_s >= scene.safety.workspace_min_s) and np.all(p_s <= scene.safety.workspace_max_s))
    problem = box.violation(apply(scene.T_s_to_r, p_s))
    assert (problem is None) == inside or np.min(np.abs(np.concatenate(
        [p_s - scene.safety.workspace_min_s, p_s - scene.safety.workspace_max_s]))) < 1e-12


class _FutureStamps(MockHardware):
    """Joint states stamped 1 s ahead of the backend clock (a robot whose clock runs ahead)."""

    def _read(self):
        s = super()._read()
        return type(s)(s.stamp_s + 1.0, s.position, s.velocity)


def test_states_from_the_future_are_refused():
    hw = _FutureStamps(load_scene("default", FAST), 0)
    try:
        hw.configure()
        with pytest.raises(SafetyStop, match="in the future"):
            hw.activate()
    finally:
        hw.close()


class _OperatorDrill(_RealtimeMock):
    """A real-time backend whose drill waits 0.2 s for an operator (like hw_bridge.drill.ManualDrill)."""

    def _set_drill(self, on, speed_rpm):
        time.sleep(0.2)
        super()._set_drill(on, speed_rpm)


def test_waiting_for_the_operator_is_not_a_missed_deadline():
    hw = _active({"safety.control_deadline_s": 0.1}, cls=_OperatorDrill)
    try:
        q = hw.read().position
        hw.write(q)
        hw.advance()
        hw.set_drill(True, 20000.0)              # 0.2 s with the operator
        hw.write(q)
        hw.advance()                             # not counted against the 0.1 s deadline
        assert hw.state is Lifecycle.ACTIVE and hw.drill_state().on
    finally:
        hw.close()


class _InterruptedDrill(MockHardware):
    """The operator interrupts (Ctrl-C) while the safe stop asks for the drill to go off."""

    def _set_drill(self, on, speed_rpm):
        if not on and self.state is Lifecycle.ACTIVE and self.fault is None:
            raise KeyboardInterrupt
        super()._set_drill(on, speed_rpm)


def test_a_safe_stop_interrupted_by_the_operator_still_ends_commanding():
    hw = _active(cls=_InterruptedDrill)
    try:
        q = hw.read().position
        with pytest.raises(KeyboardInterrupt):
            hw.write(np.full(8, np.nan))
        assert hw.state is Lifecycle.INACTIVE
        with pytest.raises(LifecycleError):
            hw.write(q)
    finally:
        hw.close()


def test_stop_asked_by_the_supervisor_holds_with_the_drill_off():
    """``Hardware.stop(reason)``: what the demo calls when a controller raises. Fails if the run
    stays active, the drill stays on, the robot keeps moving or the reason is lost."""
    from hw_bridge.backends.mock import MockHardware
    from hw_bridge.interface import Lifecycle
    from scenes.spec import load_scene

    hw = MockHardware(load_scene(None), 0)
    hw.configure()
    hw.activate()
    q = hw.read().position
    hw.set_drill(True, 1000.0)
    hw.write(q)
    hw.advance()
    hw.stop("CalibrationError: too few tip detections")
    assert hw.state is Lifecycle.INACTIVE
    assert not hw.drill_state().on
    assert hw.fault == "CalibrationError: too few tip detections"
    held = hw.read().position
    for _ in range(5):
        hw.advance()
    assert np.max(np.abs(hw.read().position - held)) < 1e-9
    hw.stop("again")                 # inactive: nothing to do, the first reason stays
    assert hw.fault == "CalibrationError: too few tip detections"
    hw.close()


def test_ignore_commands_fault_keeps_the_mock_arm_still():
    from hw_bridge.backends.mock import MockHardware
    from scenes.spec import load_scene

    hw = MockHardware(load_scene(None), 0)
    hw.configure()
    hw.activate()
    q0 = hw.read().position
    hw.inject("ignore_commands")
    step = hw.limits.velocity_max * hw.period_s * 0.5
    q = q0.copy()
    for _ in range(10):
        q = q + step
        hw.write(q)
        hw.advance()
    assert np.max(np.abs(hw.read().position - q0)) < 1e-12
    hw.clear()
    for _ in range(10):
        hw.write(q)
        hw.advance()
    assert np.all(hw.read().position > q0)
    hw.close()


def test_a_joint_that_does_not_follow_its_commands_stops_an_armed_run():
    """A stuck or passive joint (the ignore_commands fault) is noticed by tracking, with the joint,
    its command, its measured position and for how long, well before the tool could leave the box."""
    hw = _active()
    q0 = hw.read().position
    hw.set_drill(True, 20000.0)
    hw.inject("ignore_commands")
    q = q0.copy()
    spec = hw._scene.safety
    with pytest.raises(SafetyStop) as exc:
        for _ in range(200):
            q[7] = min(q[7] + 0.5 * hw.limits.velocity_max[7] * hw.period_s, q0[7] + 0.3 * hw.limits.velocity_max[7])
            hw.read()
            hw.write(q)
            hw.advance()
    msg = str(exc.value)
    assert "joint 7 does not follow its commands: commanded" in msg and "measured" in msg, msg
    assert "safety.tracking_lag_s" in msg and "safety.tracking_timeout_s" in msg
    # noticed once the error exceeded the tolerance (0.5 vmax * t > vmax * lag) for the timeout
    assert hw.now() <= 2 * spec.tracking_lag_s + spec.tracking_timeout_s + 0.05
    hw.clear()
    for _ in range(50):                            # the joint follows again: it settles on the held command
        hw.advance()
    _assert_stopped_safely(hw, q, ["does not follow"])
    hw.close()


def test_tracking_is_not_checked_in_a_dry_run():
    hw = _active({"safety.armed": True}, cls=_PretendRealRobot)          # not armed: nothing is sent
    try:
        q = hw.read().position
        for _ in range(100):
            q = q + np.where(np.arange(8) == 7, 0.5 * hw.limits.velocity_max[7] * hw.period_s, 0.0)
            hw.read()
            hw.write(q)
            hw.advance()
        assert hw.state is Lifecycle.ACTIVE
    finally:
        hw.close()


class _ErrorReply(MockHardware):
    """A backend whose robot answers one read with an error (e.g. CoppeliaSim's {err: ...})."""

    fail_reads = False

    def _read(self):
        if self.fail_reads:
            raise HardwareError("sim.getJointPosition failed: object 3 is not a joint")
        return super()._read()


def test_a_backend_error_while_active_is_a_safe_stop():
    events = EventRecorder()
    hw = _active(cls=_ErrorReply, recorder=events)
    q = hw.read().position
    hw.set_drill(True, 20000.0)
    hw.fail_reads = True
    with pytest.raises(SafetyStop, match="backend error: sim.getJointPosition failed: object 3 is not a joint"):
        hw.read()
    hw.fail_reads = False
    assert ("safety_stop", "backend error: sim.getJointPosition failed: object 3 is not a joint") in events.events
    _assert_stopped_safely(hw, q, ["backend error", "not a joint"])
    hw.fail_reads = True
    with pytest.raises(HardwareError, match="not a joint") as exc:   # inactive: a plain error, nothing to stop
        hw.read()
    assert not isinstance(exc.value, SafetyStop)
    hw.close()


class _BrokenShutdown(MockHardware):
    """Every shutdown step of the backend fails; it counts the calls."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def _set_drill(self, on, speed_rpm):
        if not on:
            self.calls.append("drill off")
            raise HardwareError("the drill controller does not answer")
        super()._set_drill(on, speed_rpm)

    def _on_deactivate(self):
        self.calls.append("deactivate")
        raise HardwareError("deactivate hook failed")

    def _on_close(self):
        self.calls.append("close")
        raise HardwareError("close hook failed")


def test_close_runs_every_step_even_when_the_drill_off_fails():
    events = EventRecorder()
    hw = _active(cls=_BrokenShutdown, recorder=events)
    hw.set_drill(True, 20000.0)
    with pytest.raises(HardwareError) as exc:
        hw.close()
    msg = str(exc.value)
    assert "switching the drill off" in msg and "the drill controller does not answer" in msg
    assert "deactivate hook failed" in msg and "close hook failed" in msg
    assert "delivering the safe stop" in msg and "THE DRILL MAY STILL BE ON" in msg
    assert {"deactivate", "close"} <= set(hw.calls) and hw.calls.count("drill off") >= 2   # retried once on close
    assert hw.state is Lifecycle.FINALIZED and events.closed
    hw.close()                                     # finalized: nothing more to do, no error


def test_sas_close_releases_everything_even_when_a_step_fails():
    """The SAS backend's release: a failing executor stop still closes the cameras and the ROS session."""
    pytest.importorskip("rclpy")
    from hw_bridge.backends.sas import SasHardware

    closed = []

    class _Ros:
        def stop_spinning(self):
            raise RuntimeError("executor thread did not stop")

        def close(self):
            closed.append("ros")

    class _Cameras:
        def close(self):
            closed.append("cameras")

    hw = SasHardware(load_scene("default"), 0)
    hw._ros, hw._cameras = _Ros(), _Cameras()
    with pytest.raises(HardwareError, match="closing the backend: sas: stopping the ROS executor: executor thread"):
        hw.close()
    assert closed == ["cameras", "ros"] and hw.state is Lifecycle.FINALIZED


def test_leaving_a_with_block_by_an_exception_stops_with_its_cause():
    """``with hw:``: an exception stops the run safely naming it (drill off, recorded in
    ``fault``) before closing; a normal exit just closes."""
    from hw_bridge.backends.mock import MockHardware
    from scenes.spec import load_scene

    hw = MockHardware(load_scene(None), 0)
    with pytest.raises(ZeroDivisionError):
        with hw:
            hw.configure()
            hw.activate()
            hw.set_drill(True, 1000.0)
            1 / 0
    assert hw.fault == "ZeroDivisionError: division by zero"
    assert not hw.drill_state().on and hw.state is Lifecycle.FINALIZED
    ok = MockHardware(load_scene(None), 0)
    with ok:
        ok.configure()
        ok.activate()
    assert ok.fault is None and ok.state is Lifecycle.FINALIZED
