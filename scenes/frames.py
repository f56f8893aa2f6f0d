"""Rigid transforms as 4x4 homogeneous matrices, and conversions to and from DQ Robotics.

Naming convention used across micromill: ``T_a_to_b`` maps coordinates expressed in frame
{a} to frame {b} (``p_b = T_a_to_b @ p_a``); equivalently it is the pose of {a} in {b}.
Units: metres and radians.
"""
from __future__ import annotations

import numpy as np
from dqrobotics import DQ, E_, rotation, translation, vec4, vec8
from scipy.spatial.transform import Rotation


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation ``R`` and a translation ``t`` (m)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform."""
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def apply(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply a rigid transform to points ``p`` of shape (3,) or (N, 3)."""
    p = np.asarray(p, dtype=float)
    return p @ T[:3, :3].T + T[:3, 3]


def dq_to_matrix(x: DQ) -> np.ndarray:
    """4x4 transform of a unit dual quaternion (DQ Robotics convention: x = r + 0.5 eps t r)."""
    w, qx, qy, qz = vec4(rotation(x))
    t = vec4(translation(x))[1:]
    return make_transform(Rotation.from_quat([qx, qy, qz, w]).as_matrix(), t)


#: the last ``matrix_to_dq`` conversion: (the matrix's float64 bytes, the DQ's 8 coefficients)
_last_matrix_to_dq: tuple[bytes, np.ndarray] | None = None


def matrix_to_dq(T: np.ndarray) -> DQ:
    """Unit dual quaternion of a 4x4 rigid transform (a new ``DQ`` on every call).

    The last conversion is remembered, keyed by the matrix's exact float64 values: a
    point-to-point move converts the same target every control period, and SciPy's
    ``Rotation.from_matrix`` costs ~50 us of each."""
    global _last_matrix_to_dq
    T = np.asarray(T, dtype=float)
    key = T.tobytes() + str(T.shape).encode()
    if _last_matrix_to_dq is None or _last_matrix_to_dq[0] != key:
        qx, qy, qz, w = Rotation.from_matrix(T[:3, :3]).as_quat()
        r = DQ([w, qx, qy, qz])
        t = DQ([0.0, *T[:3, 3]])
        _last_matrix_to_dq = key, vec8(r + 0.5 * E_ * t * r)
    return DQ(_last_matrix_to_dq[1])


def dq_from_vec8(v) -> DQ:
    """DQ from its 8 coefficients, normalised (JSON files store them with finite precision)."""
    x = DQ(np.asarray(v, dtype=float))
    return x.normalize()


def rotation_angle_between(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle (rad) of the relative rotation R_a^T R_b."""
    return float(Rotation.from_matrix(R_a.T @ R_b).magnitude())

