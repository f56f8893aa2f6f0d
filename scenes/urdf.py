"""Generate the PyBullet (URDF) model of the arm from the DQ Robotics description.

There is no hand-written URDF: every joint origin below is computed from the DH table, the
reference frame and the effector of ``RobotDescription``, so PyBullet and DQ Robotics agree
by construction (``tests/test_arm_kinematics.py`` checks it numerically).

Standard DH link i: ``A_i(q) = Rz(theta_i) Tz(d_i) Tx(a_i) Rx(alpha_i)`` with ``q`` added to
theta (revolute) or d (prismatic). Because Rz and Tz commute, ``A_i = M(q_i) F_i`` with the
joint motion ``M`` along/about z and the fixed part ``F_i``; URDF joint i therefore has origin
``F_{i-1}`` (identity for the first joint, which sits at the base) and axis z, and a last fixed
joint with origin ``F_n @ T_flange_to_tool`` carries the tool link. The base pose
(reference frame) is applied when PyBullet loads the model.

Visual geometry (capsules between joint origins) is only for PyBullet's GUI; link masses are
nominal (COBOTTA is about 4 kg) because the twin's servo is kinematic in nature
(``twin/arm.py``).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation

from scenes.frames import make_transform
from scenes.robot_description import PRISMATIC, RobotDescription


def dh_fixed_part(theta: float, d: float, a: float, alpha: float) -> np.ndarray:
    """F = Rz(theta) Tz(d) Tx(a) Rx(alpha) as a 4x4 transform."""
    ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
    return np.array([
        [ct, -st * ca, st * sa, a * ct],
        [st, ct * ca, -ct * sa, a * st],
        [0.0, sa, ca, d],
        [0.0, 0.0, 0.0, 1.0],
    ])


def _origin(T: np.ndarray) -> str:
    xyz = " ".join(f"{v:.17g}" for v in T[:3, 3])
    with warnings.catch_warnings():
        # DH frames with alpha = +-90 deg hit the RPY singularity; SciPy still returns an
        # equivalent angle triple (checked by the DQ-vs-PyBullet test), it only warns.
        warnings.simplefilter("ignore", UserWarning)
        rpy = " ".join(f"{v:.17g}" for v in Rotation.from_matrix(T[:3, :3]).as_euler("xyz"))
    return f'<origin xyz="{xyz}" rpy="{rpy}"/>'


def _link(name: str, mass: float, visual_to: np.ndarray | None) -> str:
    inertia = f'<inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="{mass}"/>' \
              '<inertia ixx="1e-3" iyy="1e-3" izz="1e-3" ixy="0" ixz="0" iyz="0"/></inertial>'
    visual = ""
    if visual_to is not None:
        length = float(np.linalg.norm(visual_to))
        if length > 1e-6:
            mid = visual_to / 2
            z = visual_to / length
            rot, _ = Rotation.align_vectors([z], [[0.0, 0.0, 1.0]])
            T = make_transform(rot.as_matrix(), mid)
            visual = (f'<visual>{_origin(T)}<geometry><cylinder radius="0.02" length="{length:.6g}"/>'
                      '</geometry></visual>')
    return f'<link name="{name}">{inertia}{visual}</link>'


def generate_urdf(robot: RobotDescription) -> str:
    """URDF text of the arm, base at the origin of its own frame (apply the base pose on load).

    Links are ``base``, ``link1`` .. ``link{n}`` and ``tool`` (the burr centre frame).
    """
    parts = ['<?xml version="1.0"?>', f'<robot name="{robot.name}">']
    fixed = [dh_fixed_part(r.theta, r.d, r.a, r.alpha) for r in robot.dh]
    parts.append(_link("base", 0.0, None))
    parent = "base"
    origins = [np.eye(4)] + fixed[:-1]
    for i, (row, T_origin) in enumerate(zip(robot.dh, origins), start=1):
        child = f"link{i}"
        jtype = "prismatic" if row.joint_type == PRISMATIC else "revolute"
        lo, hi = robot.q_min[i - 1], robot.q_max[i - 1]
        vmax = robot.qd_max[i - 1]
        parts.append(
            f'<joint name="joint{i}" type="{jtype}"><parent link="{parent}"/><child link="{child}"/>'
            f'{_origin(T_origin)}<axis xyz="0 0 1"/>'
            f'<limit lower="{lo:.17g}" upper="{hi:.17g}" effort="1000" velocity="{vmax:.17g}"/></joint>')
        parts.append(_link(child, 0.5, fixed[i - 1][:3, 3]))
        parent = child
    T_tool = fixed[-1] @ robot.T_flange_to_tool
    parts.append(f'<joint name="tool_joint" type="fixed"><parent link="{parent}"/><child link="tool"/>'
                 f'{_origin(T_tool)}</joint>')
    parts.append(_link("tool", 0.05, None))
    parts.append("</robot>")
    return "\n".join(parts)
