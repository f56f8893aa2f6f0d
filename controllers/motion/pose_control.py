"""Task-space pose control of the tool with DQ Robotics, through ``hw_bridge`` only.

Each control period (driven by ``controllers.control_loop.ControlLoop``): from the measured
joints, compute the joint velocity with DQ Robotics' ``DQ_PseudoinverseController`` (pose
objective, damped pseudo-inverse of the pose Jacobian), scale it so that no joint exceeds its
velocity limit (direction kept), integrate it onto the previous command and keep it inside the
position limits; the loop writes it and advances one period. Commands therefore always pass
``hw_bridge``'s velocity check by construction.

This is the point-to-point mover (calibration, parking, approach and retract); while milling,
``controllers.motion.milling_control`` (a QP with the limits and the virtual floor as
constraints) computes the commands.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dqrobotics import vec8
from dqrobotics.robot_control import ControlObjective, DQ_PseudoinverseController

from controllers.control_loop import ControlLoop
from hw_bridge.rig import RigDescription
from scenes.frames import matrix_to_dq, rotation_angle_between


@dataclass(frozen=True)
class MoveResult:
    reached: bool
    position_error_m: float
    orientation_error_rad: float
    duration_s: float


class PoseController:
    """Computes joint commands that drive the tool frame to a target pose (4x4, in {R}).

    It computes; the ``ControlLoop`` writes, advances and reads."""

    def __init__(self, rig: RigDescription, gain: float = 8.0, damping: float = 1e-3, limit_margin: float = 1e-3):
        self.rig = rig
        self.robot = rig.robot
        self.ctrl = DQ_PseudoinverseController(self.robot.dq_robot)
        self.ctrl.set_gain(gain)
        self.ctrl.set_damping(damping)
        self.ctrl.set_control_objective(ControlObjective.Pose)
        self._lo = rig.limits.position_min + limit_margin
        self._hi = rig.limits.position_max - limit_margin

    def command(self, q: np.ndarray, q_cmd: np.ndarray, T_target_to_r: np.ndarray) -> np.ndarray:
        """The next joint command towards the target from measured joints ``q`` and the last command."""
        u = np.asarray(self.ctrl.compute_setpoint_control_signal(q, vec8(matrix_to_dq(T_target_to_r))))
        scale = np.max(np.abs(u) / self.rig.limits.velocity_max)
        if scale > 1.0:
            u = u / scale
        step = u * self.rig.period_s
        return np.clip(q_cmd + step, np.minimum(self._lo, q_cmd), np.maximum(self._hi, q_cmd))

    def move_to(self, loop: ControlLoop, T_target_to_r: np.ndarray, position_tol_m: float = 5e-6,
                orientation_tol_rad: float = 1e-4, timeout_s: float = 20.0) -> MoveResult:
        """Servo (through ``loop``) until the measured tool pose is within tolerance (or the timeout)."""
        def errors(state) -> tuple[float, float]:
            T = self.robot.fk(state.position)
            return (float(np.linalg.norm(T[:3, 3] - T_target_to_r[:3, 3])),
                    rotation_angle_between(T[:3, :3], T_target_to_r[:3, :3]))

        def reached(state) -> bool:
            e_p, e_r = errors(state)
            return e_p <= position_tol_m and e_r <= orientation_tol_rad

        ok, state, elapsed = loop.run_until(lambda s, q_cmd: self.command(s.position, q_cmd, T_target_to_r),
                                            reached, timeout_s)
        e_p, e_r = errors(state)
        return MoveResult(ok, e_p, e_r, elapsed)
