"""The arm's kinematic description: one DQ Robotics JSON file is the single source of truth.

The file (``scenes/robots/aisp_cobotta_drill.json``) is the public AISP COBOTTA description
(circular rail + linear stage + Denso COBOTTA, ``DQ_SerialManipulatorDH``) with its effector
moved 0.5 mm back along the tool axis so that the tool frame sits at the centre of the drill
burr, z along the drill axis pointing out of the burr (down at the skull in the home pose).
DQ Robotics loads it for forward kinematics and Jacobians; the PyBullet model is generated
from the same numbers (``scenes/urdf.py``).

This module is shared by ``twin/`` (simulation), ``controllers/`` (control) and
``hw_bridge/`` (limit checks); it holds no simulator code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from dqrobotics import translation, vec4
from dqrobotics.interfaces.json11 import DQ_JsonReader

from scenes.frames import dq_from_vec8, dq_to_matrix

ROBOTS_DIR = Path(__file__).parent / "robots"
DEFAULT_ROBOT_FILE = ROBOTS_DIR / "aisp_cobotta_drill.json"

REVOLUTE, PRISMATIC = 0, 1


class RobotDescriptionError(ValueError):
    """The robot description file is missing or malformed."""


@dataclass(frozen=True)
class DHRow:
    """One standard-DH row (SI units: rad, m). ``joint_type`` is REVOLUTE or PRISMATIC."""

    theta: float
    d: float
    a: float
    alpha: float
    joint_type: int


class RobotDescription:
    """Kinematics of the 8-DOF arm from its DQ Robotics JSON description.

    Joint vector ``q`` (8,): rail (rad), stage (m), COBOTTA joints 1-6 (rad).
    Poses are 4x4 transforms of the tool (burr centre) in the robot frame {R}.
    """

    def __init__(self, path: Path | str = DEFAULT_ROBOT_FILE):
        self.path = Path(path)
        if not self.path.is_file():
            raise RobotDescriptionError(f"robot description file not found: {self.path}")
        try:
            raw = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise RobotDescriptionError(f"robot description {self.path} is not valid JSON: {exc}") from exc
        required = ("robot_type", "angle_mode", "theta", "d", "a", "alpha", "types",
                    "lower_q_limit", "upper_q_limit", "lower_q_dot_limit", "upper_q_dot_limit",
                    "effector", "reference_frame")
        missing = [k for k in required if k not in raw]
        if missing:
            raise RobotDescriptionError(f"robot description {self.path} lacks fields {missing}")
        if raw["robot_type"] != "DQ_SerialManipulatorDH":
            raise RobotDescriptionError(
                f"robot_type={raw['robot_type']!r} in {self.path}; only 'DQ_SerialManipulatorDH' is supported")
        self.raw = raw
        self.dq_robot = DQ_JsonReader.get_serial_manipulator_dh_from_json(str(self.path))
        self.n_joints = int(self.dq_robot.get_dim_configuration_space())
        self.q_min = np.asarray(self.dq_robot.get_lower_q_limit(), dtype=float)
        self.q_max = np.asarray(self.dq_robot.get_upper_q_limit(), dtype=float)
        self.qd_min = np.asarray(self.dq_robot.get_lower_q_dot_limit(), dtype=float)
        self.qd_max = np.asarray(self.dq_robot.get_upper_q_dot_limit(), dtype=float)
        self.joint_types = np.asarray(self.dq_robot.get_types(), dtype=int)
        # The JSON's unit dual quaternions carry ~1e-17 rounding; DQ Robotics normalises them.
        self.T_base_to_r = dq_to_matrix(dq_from_vec8(raw["reference_frame"]))
        self.T_flange_to_tool = dq_to_matrix(dq_from_vec8(raw["effector"]))

    @cached_property
    def dh(self) -> list[DHRow]:
        """The DH table in SI units, as DQ Robotics interprets it (standard DH)."""
        r = self.dq_robot
        return [DHRow(float(t), float(d), float(a), float(al), int(ty))
                for t, d, a, al, ty in zip(r.get_thetas(), r.get_ds(), r.get_as(), r.get_alphas(),
                                           r.get_types())]

    @property
    def name(self) -> str:
        return self.path.stem

    def fk(self, q: np.ndarray) -> np.ndarray:
        """T_tool_to_r: pose (4x4) of the tool frame (burr centre) in {R} at joints ``q``."""
        return dq_to_matrix(self.dq_robot.fkm(np.asarray(q, dtype=float)))

    def tool_position(self, q: np.ndarray) -> np.ndarray:
        """p_tool_r: burr-centre position (m) in {R} (the translation alone: ~3 us, not the ~40 us
        of building the full matrix; the milling loop asks for it every period)."""
        return vec4(translation(self.dq_robot.fkm(np.asarray(q, dtype=float))))[1:]

    def pose_jacobian(self, q: np.ndarray) -> np.ndarray:
        """8 x n pose Jacobian of the tool's unit dual quaternion (DQ Robotics convention)."""
        return np.asarray(self.dq_robot.pose_jacobian(np.asarray(q, dtype=float)))

    def within_position_limits(self, q: np.ndarray, tol: float = 0.0) -> bool:
        q = np.asarray(q, dtype=float)
        return bool(np.all(q >= self.q_min - tol) and np.all(q <= self.q_max + tol))
