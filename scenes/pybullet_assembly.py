"""Assemble a scene in PyBullet: the arm generated from its DQ Robotics description.

The skull, membrane and cameras are not PyBullet bodies: the skull is a 10 um height field
(``twin.skull``) that PyBullet's collision shapes could not represent at that resolution,
and the cameras are rendered by ``twin.render``. PyBullet carries the arm's multibody
(kinematics, joint dynamics, limits).
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet as pb
from scipy.spatial.transform import Rotation

from scenes.robot_description import RobotDescription
from scenes.urdf import generate_urdf


@dataclass(frozen=True)
class PyBulletArm:
    client: int
    body: int
    joint_indices: tuple[int, ...]
    tool_link: int


def _urdf_file(robot: RobotDescription) -> Path:
    text = generate_urdf(robot)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"micromill_{robot.name}_{digest}.urdf"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def assemble_arm(client: int, robot: RobotDescription, q0: np.ndarray) -> PyBulletArm:
    """Load the generated URDF at the description's base pose and set the joints to ``q0``."""
    T = robot.T_base_to_r
    qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
    body = pb.loadURDF(str(_urdf_file(robot)), basePosition=T[:3, 3].tolist(),
                       baseOrientation=[qx, qy, qz, qw], useFixedBase=True,
                       flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=client)
    joints = tuple(j for j in range(pb.getNumJoints(body, physicsClientId=client))
                   if pb.getJointInfo(body, j, physicsClientId=client)[2] != pb.JOINT_FIXED)
    tool = pb.getNumJoints(body, physicsClientId=client) - 1
    for j, q in zip(joints, q0):
        pb.resetJointState(body, j, float(q), 0.0, physicsClientId=client)
    return PyBulletArm(client, body, joints, tool)
