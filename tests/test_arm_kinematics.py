"""DQ Robotics and the generated PyBullet model are the same arm."""
import numpy as np
from hypothesis import given, settings, strategies as st
from scipy.spatial.transform import Rotation

from scenes.robot_description import RobotDescription, RobotDescriptionError
from twin.arm import SimArm

import pytest

_ROBOT = RobotDescription()
_ARM = SimArm(_ROBOT, (_ROBOT.q_min + _ROBOT.q_max) / 2, 0.001, 0.005)

unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(unit, min_size=8, max_size=8))
def test_pybullet_tool_pose_equals_dq_fk(fractions):
    q = _ROBOT.q_min + (_ROBOT.q_max - _ROBOT.q_min) * np.array(fractions)
    _ARM.reset(q)
    pos, quat = _ARM.tool_pose_pybullet()
    T = _ROBOT.fk(q)
    assert np.linalg.norm(pos - T[:3, 3]) < 1e-6
    angle = (Rotation.from_matrix(T[:3, :3]).inv() * Rotation.from_quat(quat)).magnitude()
    assert angle < 1e-6


def test_home_drill_points_down_at_skull(scene, robot):
    T = robot.fk(scene.robot.home_q)
    assert T[2, 2] < -0.85          # tool z (drill axis, out of the burr) points down
    assert robot.within_position_limits(scene.robot.home_q)


def test_pose_jacobian_matches_finite_difference(robot, scene):
    from dqrobotics import vec8

    q = scene.robot.home_q
    J = robot.pose_jacobian(q)
    h = 1e-7
    for j in range(q.size):
        dq = np.zeros_like(q)
        dq[j] = h
        num = (vec8(robot.dq_robot.fkm(q + dq)) - vec8(robot.dq_robot.fkm(q - dq))) / (2 * h)
        assert np.allclose(J[:, j], num, atol=1e-6)


def test_missing_description_is_a_clear_error(tmp_path):
    with pytest.raises(RobotDescriptionError, match="not found"):
        RobotDescription(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"robot_type": "DQ_SerialManipulatorDH"}')
    with pytest.raises(RobotDescriptionError, match="lacks fields"):
        RobotDescription(bad)
