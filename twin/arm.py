"""The simulated arm: a PyBullet multibody driven by a model of the real joint servo.

The real COBOTTA/SmartArmStack takes joint position targets at 1 kHz and its position-
controlled drives track them to a few microns. The twin models each drive as a first-order
lag with time constant ``servo_time_constant_s`` whose speed saturates at the description's
velocity limit, discretised exactly per period:

    step = clip((q_target - q) * (1 - exp(-dt / tau)), -qd_max * dt, qd_max * dt)

and keeps the joint state in NumPy. PyBullet holds the arm's multibody (poses of every link,
collision geometry); it is brought up to date lazily, only when something asks for it
(``pb``, ``tool_pose_pybullet``), so a control period costs no PyBullet calls.
Approximation, stated plainly: the drive is kinematic, arm dynamics (inertia, gravity sag,
vibration) are not simulated. We tried PyBullet's velocity motors with gravity: they
overshoot the velocity limit by ~0.5 %, and the joint dynamics of a stiff position-controlled
arm are far below the 10 um scale that matters here. The kinematic model guarantees the arm
never exceeds its velocity limits.
"""
from __future__ import annotations

import numpy as np
import pybullet as pb

from scenes.pybullet_assembly import PyBulletArm, assemble_arm
from scenes.robot_description import RobotDescription


class SimArm:
    def __init__(self, robot: RobotDescription, q0: np.ndarray, period_s: float, servo_tau_s: float):
        self.robot = robot
        self.period_s = period_s
        self._alpha = 1.0 - np.exp(-period_s / servo_tau_s)
        self.client = pb.connect(pb.DIRECT)
        self._pb: PyBulletArm = assemble_arm(self.client, robot, q0)
        self._pb_stale = False            # PyBullet's joint state lags self._q
        self.target = np.array(q0, dtype=float)
        self._q = np.array(q0, dtype=float)
        self._qd = np.zeros_like(self._q)

    @property
    def pb(self) -> PyBulletArm:
        """The PyBullet multibody, with its joint state synced to the arm's (on demand)."""
        if self._pb_stale:
            for j, q, qd in zip(self._pb.joint_indices, self._q, self._qd):
                pb.resetJointState(self._pb.body, j, float(q), float(qd), physicsClientId=self.client)
            self._pb_stale = False
        return self._pb

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """True joint positions and velocities (rad or m; rad/s or m/s)."""
        return self._q.copy(), self._qd.copy()

    def set_target(self, q_target: np.ndarray) -> None:
        self.target = np.array(q_target, dtype=float)

    def step(self) -> None:
        """Advance one period with the servo tracking the current target."""
        dt = self.period_s
        step = np.clip((self.target - self._q) * self._alpha, self.robot.qd_min * dt, self.robot.qd_max * dt)
        self._q = self._q + step
        self._qd = step / dt
        self._pb_stale = True

    def tool_pose_pybullet(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool position (m) and quaternion (x, y, z, w) from PyBullet's own kinematics."""
        arm = self.pb
        ls = pb.getLinkState(arm.body, arm.tool_link, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array(ls[4]), np.array(ls[5])

    def reset(self, q: np.ndarray) -> None:
        """Teleport the joints (tests and scenario set-up only; a real arm cannot do this)."""
        self._q = np.array(q, dtype=float)
        self._qd = np.zeros_like(self._q)
        self.target = self._q.copy()
        self._pb_stale = True

    def close(self) -> None:
        if self.client is not None and pb.isConnected(self.client):
            pb.disconnect(self.client)
        self.client = None
