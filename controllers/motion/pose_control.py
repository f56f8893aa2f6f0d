"""Task-space pose control of the tool with DQ Robotics, through ``hw_bridge`` only.

Each control period: read joints, compute the joint velocity with DQ Robotics'
``DQ_PseudoinverseController`` (pose objective, damped pseudo-inverse of the pose Jacobian),
scale it so that no joint exceeds its velocity limit (direction kept), integrate it onto the
previous command, keep it inside the position limits, write it, advance one period.
Commands therefore always pass ``hw_bridge``'s velocity check by construction.

This is the foundation's point-to-point mover (demo, smoke suite). The milling controller
(later issue) replaces it with a QP controller with limits as constraints.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dqrobotics import vec8
from dqrobotics.robot_control import ControlObjective, DQ_PseudoinverseController

from scenes.frames import matrix_to_dq, rotation_angle_between


@dataclass(frozen=True)
class MoveResult:
    reached: bool
    position_error_m: float
    orientation_error_rad: float
    duration_s: float


class PoseController:
    """Drives the tool frame to a target pose (4x4, in {R})."""

    def __init__(self, hw, gain: float = 8.0, damping: float = 1e-3, limit_margin: float = 1e-3):
        self.hw = hw
        self.robot = hw.robot
        self.ctrl = DQ_PseudoinverseController(self.robot.dq_robot)
        self.ctrl.set_gain(gain)
        self.ctrl.set_damping(damping)
        self.ctrl.set_control_objective(ControlObjective.Pose)
        self.q_cmd: np.ndarray | None = None
        self._lo = hw.limits.position_min + limit_margin
        self._hi = hw.limits.position_max - limit_margin

    def step(self, T_target_to_r: np.ndarray) -> np.ndarray:
        """One control period towards the target; returns the measured joints used."""
        hw = self.hw
        q = hw.read().position
        if self.q_cmd is None:
            self.q_cmd = q.copy()
        u = np.asarray(self.ctrl.compute_setpoint_control_signal(q, vec8(matrix_to_dq(T_target_to_r))))
        scale = np.max(np.abs(u) / hw.limits.velocity_max)
        if scale > 1.0:
            u = u / scale
        step = u * hw.period_s
        q_next = np.clip(self.q_cmd + step, np.minimum(self._lo, self.q_cmd), np.maximum(self._hi, self.q_cmd))
        hw.write(q_next)
        self.q_cmd = q_next
        hw.advance()
        return q

    def move_to(self, T_target_to_r: np.ndarray, position_tol_m: float = 5e-6,
                orientation_tol_rad: float = 1e-4, timeout_s: float = 20.0) -> MoveResult:
        """Servo until the measured tool pose is within tolerance (or the timeout)."""
        t0 = self.hw.now()
        while True:
            q = self.step(T_target_to_r)
            T = self.robot.fk(q)
            e_p = float(np.linalg.norm(T[:3, 3] - T_target_to_r[:3, 3]))
            e_r = rotation_angle_between(T[:3, :3], T_target_to_r[:3, :3])
            elapsed = self.hw.now() - t0
            if (e_p <= position_tol_m and e_r <= orientation_tol_rad) or elapsed >= timeout_s:
                return MoveResult(e_p <= position_tol_m and e_r <= orientation_tol_rad, e_p, e_r, elapsed)

    def hold(self, duration_s: float) -> None:
        """Keep commanding the last target position for ``duration_s`` (settling)."""
        n = int(round(duration_s / self.hw.period_s))
        for _ in range(n):
            self.hw.write(self.q_cmd if self.q_cmd is not None else self.hw.read().position)
            self.hw.advance()
