"""The one owner of the control loop: one read, one write, one advance per period; poses looked
up by the joint states' own stamps; controllers see the rig, never the scene or ground truth."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.pipeline import open_session
from hw_bridge.errors import CommandRejected
from hw_bridge.registry import make_hardware
from scenes.frames import make_transform
from scenes.spec import load_scene

ROOT = Path(__file__).resolve().parent.parent


class Counting:
    """Counts the interface calls a controller makes, per kind."""

    def __init__(self, hw):
        self.n = {"read": 0, "write": 0, "advance": 0}
        for name in self.n:
            original = getattr(hw, name)

            def counted(*a, _name=name, _original=original, **k):
                self.n[_name] += 1
                return _original(*a, **k)
            setattr(hw, name, counted)


def _mock(**overrides):
    return make_hardware("mock", load_scene("default", {"control.period_s": 0.01, **overrides}), seed=0)


@settings(max_examples=10, deadline=None)
@given(st.floats(-2e-3, 2e-3), st.floats(-2e-3, 2e-3), st.floats(0.0, 2e-3))
def test_a_move_reads_writes_and_advances_once_per_period(dx, dy, dz):
    hw = _mock()
    try:
        s = open_session(hw)
        calls, t0 = Counting(hw), hw.now()
        T = hw.rig.robot.fk(s.loop.state.position)
        target = make_transform(T[:3, :3], T[:3, 3] + np.array([dx, dy, dz]))
        move = s.pc.move_to(s.loop, target, timeout_s=3.0)
        s.loop.hold(0.05)
        n = calls.n
        assert n["write"] == n["advance"] == n["read"] > 0, n
        assert n["advance"] == round((hw.now() - t0) / hw.period_s)      # every period went through the loop
        assert move.reached, move
    finally:
        hw.close()


def test_pose_at_a_frame_is_looked_up_by_the_joint_states_stamps():
    """With 50 ms old joint states (a real arm's), the pose at a stamp is the state stamped
    then, not the one read then."""
    hw = _mock(**{"sensors.joint_states.delay_s": 0.05})
    try:
        s = open_session(hw)
        T = hw.rig.robot.fk(s.loop.state.position)
        s.pc.move_to(s.loop, make_transform(T[:3, :3], T[:3, 3] + [1e-3, 0.0, 0.0]), timeout_s=0.3)
        states = []
        for _ in range(20):
            s.loop.command(s.pc.command(s.loop.state.position, s.loop.q_cmd,
                                        make_transform(T[:3, :3], T[:3, 3] + [2e-3, 0.0, 0.0])))
            states.append(s.loop.state)
        assert hw.now() - states[-1].stamp_s >= 0.05 - 1e-9              # the newest state is 50 ms old
        for state in states:
            np.testing.assert_array_equal(s.loop.q_at(state.stamp_s), state.position)
        assert not np.array_equal(states[0].position, states[-1].position)    # it moved: the lookup matters
    finally:
        hw.close()


def test_a_command_the_safety_layer_refuses_is_not_remembered_as_sent():
    hw = _mock()
    try:
        s = open_session(hw)
        q0 = s.loop.q_cmd.copy()
        bad = q0.copy()
        bad[1] += 1.0                                    # far beyond one period at the stage's speed
        with pytest.raises(CommandRejected):
            s.loop.command(bad)
        np.testing.assert_array_equal(s.loop.q_cmd, q0)
    finally:
        hw.close()


FORBIDDEN_ATTRIBUTES = {"scene", "_scene", "ground_truth"}


def test_controllers_never_touch_the_scene_or_ground_truth():
    """Controllers get ``hw.rig``; ``hw._scene`` and the twin's ``ground_truth`` are not theirs."""
    bad = []
    for path in sorted((ROOT / "controllers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not bad, bad


def test_a_stage_given_its_result_is_skipped_and_a_surface_needs_its_calibration():
    """run_window: a given calibration is used as is (the robot does not move for it); a fitted
    surface without the calibration it was fitted with is refused before anything moves."""
    from controllers.pipeline import Networks, run_window

    class NoDetector:                       # would fail the calibration if it were asked
        def detect(self, image):
            raise AssertionError("the calibration stage ran although its result was given")

    hw = _mock()
    try:
        s = open_session(hw)
        calls, given, seen = Counting(hw), object(), []
        result = run_window(s, Networks(NoDetector()), until="calibration", calibration=given,
                            on_stage=lambda stage, r: seen.append((stage, r.calibration)))
        assert result.calibration is given and seen == [("calibration", given)] and result.stopped_by is None
        assert calls.n["write"] == calls.n["advance"] == 0
        with pytest.raises(ValueError, match="surface= needs the calibration= it was fitted with"):
            run_window(s, Networks(NoDetector()), surface=object())
        assert calls.n["write"] == 0
    finally:
        hw.close()
