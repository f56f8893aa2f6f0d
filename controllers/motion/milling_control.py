"""Task-space milling motion control with DQ Robotics' QP controller, through ``hw_bridge`` only.

Every control period (the rig's fixed period; ``controllers.control_loop.ControlLoop`` reads,
writes and advances) the controller:

1. takes the period's measured joints ``q`` and the last command;
2. solves DQ Robotics' ``DQ_ClassicQPController`` (pose objective: the burr centre follows the
   target position while the tool keeps the orientation it had when milling started, so the
   burr axis never tilts; feed-forward of the target's velocity) with these linear
   inequality constraints on the joint velocity ``u``:
   - velocity limits: ``|u| <= velocity_scale * qd_max``;
   - position limits: ``(q_min - q) / dt <= u <= (q_max - q) / dt`` (with a margin);
   - the **virtual floor**: the burr centre's clearance above the floor after one period,
     linearised with the translation Jacobian (including the floor's rise with angle), stays
     at or above ``FLOOR_MARGIN_M``;
3. integrates ``u`` onto the previous command, re-checks the floor on the exact forward
   kinematics of the new command (the linearisation can be off by a few nm per period) and, if
   it is violated, shortens the step (halving, up to 8 times, else holds the last command);
4. returns the command; the loop writes it (``hw_bridge`` checks limits and finiteness once more).

The virtual floor is the last line of defence against a perception error: whatever the
planner asks, the burr centre never goes below ``floor(theta)`` along the window axis, where
``floor_i = surface_i - max_plausible_thickness - floor_fit_margin + burr_radius`` (the burr's
lowest point at most one maximal skull thickness and the fit's error under the fitted surface;
``controllers.milling.plan_geometry``), interpolated linearly in angle
between the sampling points. The planner keeps its points above the same knots; where its
spline sags below the interpolated floor between two knots, the floor wins.

DQ Robotics' Python wheels ship no QP solver (``dqrobotics.solvers`` only has the abstract
``DQ_QuadraticProgrammingSolver``), so ``QuadprogSolver`` implements that interface over the
``quadprog`` package (Goldfarb-Idnani dual active set), ten lines of glue.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import quadprog
from dqrobotics import DQ, E_, vec8
from dqrobotics.robot_control import ControlObjective, DQ_ClassicQPController
from dqrobotics.robot_modeling import DQ_Kinematics
from dqrobotics.solvers import DQ_QuadraticProgrammingSolver

from controllers.settings import MillingControlParams
from hw_bridge.rig import RigDescription
from scenes.frames import matrix_to_dq


class QuadprogSolver(DQ_QuadraticProgrammingSolver):
    """``min 0.5 u'Hu + f'u  s.t.  A u <= b, Aeq u = beq`` with quadprog (DQ Robotics' interface)."""

    def __init__(self, regularisation: float = 1e-10):
        DQ_QuadraticProgrammingSolver.__init__(self)
        self.regularisation = regularisation
        self._ridge = np.zeros((0, 0))          # regularisation * identity, kept for the last size

    def solve_quadratic_program(self, H, f, A, b, Aeq, beq):
        H = np.asarray(H, dtype=float)
        n = H.shape[0]
        if self._ridge.shape[0] != n:
            self._ridge = self.regularisation * np.eye(n)
        G = 0.5 * (H + H.T) + self._ridge
        A = np.asarray(A, dtype=float).reshape(-1, n)
        Aeq = np.asarray(Aeq, dtype=float).reshape(-1, n)
        # quadprog: min 0.5 x'Gx - a'x  s.t.  C'x >= b0, the first meq rows equalities.
        C = np.vstack([Aeq, -A]).T
        b0 = np.concatenate([np.asarray(beq, dtype=float).ravel(), -np.asarray(b, dtype=float).ravel()])
        return quadprog.solve_qp(G, -np.asarray(f, dtype=float).ravel(), C, b0, Aeq.shape[0])[0]


@dataclass(frozen=True)
class WindowFrame:
    """The window's frame in {R}: ``origin_r`` the fitted centre on the skull surface,
    ``axis_r`` the unit window axis pointing out of the bone (towards the cameras), and
    ``e1_r``, ``e2_r`` an orthonormal in-plane basis (e1 towards sampling point 0)."""

    origin_r: np.ndarray
    axis_r: np.ndarray
    e1_r: np.ndarray
    e2_r: np.ndarray

    @staticmethod
    def from_points(centre_r: np.ndarray, points_r: np.ndarray, normals_r: np.ndarray) -> "WindowFrame":
        """Axis = mean surface normal; e1 towards the first point (projected into the plane)."""
        axis = np.mean(normals_r, axis=0)
        axis /= np.linalg.norm(axis)
        d = points_r[0] - centre_r
        e1 = d - axis * (d @ axis)
        e1 /= np.linalg.norm(e1)
        return WindowFrame(np.asarray(centre_r, float), axis, e1, np.cross(axis, e1))

    @cached_property
    def _basis(self) -> np.ndarray:
        return np.stack([self.e1_r, self.e2_r, self.axis_r])

    def to_window(self, p_r: np.ndarray) -> np.ndarray:
        """(x, y, h) of {R} points (..., 3): in-plane coordinates and height along the axis (m)."""
        return (np.asarray(p_r, float) - self.origin_r) @ self._basis.T

    def angle_of(self, p_r: np.ndarray) -> np.ndarray:
        """Angle (rad, in [0, 2 pi)) of points around the axis, measured from e1 towards e2."""
        w = self.to_window(p_r)
        return np.mod(np.arctan2(w[..., 1], w[..., 0]), 2 * np.pi)

    def point(self, theta: float, radius_m: float, height_m: float) -> np.ndarray:
        """{R} position at angle ``theta``, in-plane radius and height along the axis."""
        return (self.origin_r + radius_m * (np.cos(theta) * self.e1_r + np.sin(theta) * self.e2_r)
                + height_m * self.axis_r)


@dataclass(frozen=True)
class VirtualFloor:
    """The lowest allowed burr-centre height along the window axis (m), by angle.

    ``theta_rad`` (n,) increasing knot angles in [0, 2 pi), ``floor_m`` (n,) heights, linearly
    interpolated in angle between knots (periodic), so the floor is continuous and a burr
    moving around the circle never meets a step in it."""

    frame: WindowFrame
    theta_rad: np.ndarray
    floor_m: np.ndarray

    def __post_init__(self):
        th, fl = np.asarray(self.theta_rad, float), np.asarray(self.floor_m, float)
        if th.ndim != 1 or th.shape != fl.shape or th.size < 3:
            raise ValueError(f"VirtualFloor: theta_rad {th.shape} and floor_m {fl.shape} must be equal "
                             "1-D arrays of at least 3 knots")
        if not np.all(np.isfinite(fl)) or np.any(np.diff(th) <= 0) or th[0] < 0 or th[-1] >= 2 * np.pi:
            raise ValueError("VirtualFloor: floor_m must be finite and theta_rad strictly increasing "
                             "within [0, 2 pi)")

    def _segment(self, theta):
        th = np.mod(np.asarray(theta, float), 2 * np.pi)
        k = np.searchsorted(self.theta_rad, th, side="right") - 1      # knot at or before (-1 wraps)
        k1 = (k + 1) % self.floor_m.size
        span = np.mod(self.theta_rad[k1] - self.theta_rad[k], 2 * np.pi)
        span = np.where(span == 0, 2 * np.pi, span)
        return th, k, k1, span

    def _height_and_slope(self, theta):
        """Floor height (m) and its slope (m/rad) at ``theta``, from one knot lookup."""
        th, k, k1, span = self._segment(theta)
        rise = self.floor_m[k1] - self.floor_m[k]
        s = np.mod(th - self.theta_rad[k], 2 * np.pi) / span
        return self.floor_m[k] + s * rise, rise / span

    def height_at(self, theta: np.ndarray | float) -> np.ndarray:
        """Floor height (m) at angle ``theta``: periodic linear interpolation of the knots."""
        return self._height_and_slope(theta)[0]

    def slope_at(self, theta: np.ndarray | float) -> np.ndarray:
        """d floor / d theta (m/rad) at ``theta``."""
        return self._height_and_slope(theta)[1]

    def clearance(self, p_r: np.ndarray) -> np.ndarray:
        """Height (m) of {R} points above the floor under them (negative: below)."""
        w = self.frame.to_window(p_r)
        return w[..., 2] - self.height_at(np.arctan2(w[..., 1], w[..., 0]))

    def clearance_gradient(self, p_r: np.ndarray) -> np.ndarray:
        """d clearance / d p (3,) at one {R} point: the axis minus the floor's rise with angle."""
        return self.clearance_and_gradient(p_r)[1]

    def clearance_and_gradient(self, p_r: np.ndarray) -> tuple[float, np.ndarray]:
        """``clearance`` (m) and ``clearance_gradient`` (3,) of one {R} point, from one window
        transform and one knot lookup (the milling controller needs both every period)."""
        x, y, h = self.frame.to_window(p_r)
        height, slope = self._height_and_slope(np.arctan2(y, x))
        rho2 = max(x * x + y * y, 1e-12)
        dtheta_dp = (-y * self.frame.e1_r + x * self.frame.e2_r) / rho2
        return float(h - height), self.frame.axis_r - float(slope) * dtheta_dp


class MillingMotionController:
    """Moves the burr centre along targets in {R} at the hardware's fixed period."""

    #: the QP keeps this much (m) above the floor, so the linearisation error (nm) rarely
    #: needs the exact-FK step shortening
    FLOOR_MARGIN_M = 1e-6

    def __init__(self, rig: RigDescription, floor: VirtualFloor, R_tool_to_r: np.ndarray,
                 params: MillingControlParams = MillingControlParams()):
        self.rig = rig
        self.robot = rig.robot
        self.floor = floor
        self.params = params
        self.R_tool_to_r = np.asarray(R_tool_to_r, float)
        self._r = matrix_to_dq(np.block([[self.R_tool_to_r, np.zeros((3, 1))], [np.zeros((1, 3)), 1.0]]))
        # DQ Robotics keeps a raw pointer to the solver: hold our own reference so Python does
        # not collect it ("pure virtual function" otherwise).
        self._solver = QuadprogSolver()
        self.qp = DQ_ClassicQPController(self.robot.dq_robot, self._solver)
        self.qp.set_control_objective(ControlObjective.Pose)
        self.qp.set_gain(params.gain)
        self.qp.set_damping(params.damping)
        self._lo = rig.limits.position_min + params.limit_margin
        self._hi = rig.limits.position_max - params.limit_margin
        self._vmax = params.velocity_scale * rig.limits.velocity_max
        n = self.robot.n_joints
        #: the inequality rows u <= upper, -u <= -lower (the floor's row follows them)
        self._velocity_rows = np.vstack([np.eye(n), -np.eye(n)])
        self.floor_clamps = 0       # periods in which the exact-FK check had to shorten the step

    def _pose(self, p_r: np.ndarray) -> DQ:
        return self._r + 0.5 * E_ * DQ([0.0, *p_r]) * self._r

    def command(self, q: np.ndarray, q_cmd: np.ndarray, target_r: np.ndarray, velocity_r: np.ndarray) -> np.ndarray:
        """The next joint command towards ``target_r`` (m, {R}) moving at ``velocity_r`` (m/s), from
        the measured joints ``q`` and the last command ``q_cmd``."""
        dt = self.rig.period_s
        x = self.robot.dq_robot.fkm(q)
        J_t = np.asarray(DQ_Kinematics.translation_jacobian(self.robot.dq_robot.pose_jacobian(q), x))[1:4]
        # The new command is the last command plus u dt: linearise the floor about it (the
        # measured joints lag it and carry encoder noise, both worth microns at the burr).
        p_cmd = self.robot.tool_position(q_cmd)
        clearance, g = self.floor.clearance_and_gradient(p_cmd)
        n = q.size
        A = np.empty((2 * n + 1, n))
        A[:2 * n] = self._velocity_rows
        A[2 * n] = -(g @ J_t) * dt
        b = np.concatenate([np.minimum(self._vmax, np.maximum((self._hi - q) / dt, 0.0)),
                            np.minimum(self._vmax, np.maximum((q - self._lo) / dt, 0.0)),
                            [max(clearance - self.FLOOR_MARGIN_M, 0.0)]])
        self.qp.set_inequality_constraint(A, b)
        ff = vec8(0.5 * E_ * DQ([0.0, *velocity_r]) * self._r)
        u = np.asarray(self.qp.compute_tracking_control_signal(q, vec8(self._pose(target_r)), ff))
        u = np.clip(u, -self._vmax, self._vmax)
        step = u * dt
        for _ in range(8):
            q_next = np.clip(q_cmd + step, np.minimum(self._lo, q_cmd), np.maximum(self._hi, q_cmd))
            if self.floor.clearance(self.robot.tool_position(q_next)) >= 0.0:
                break
            step = 0.5 * step
            self.floor_clamps += 1
        else:
            q_next = q_cmd
        return q_next
