"""The safety layer's rules, shared by every backend (``Hardware`` calls them; see interface.py).

Before a joint command reaches any robot it must pass ``check_joint_command`` (shape, finite,
position limits, velocity limits over one period) and ``WorkspaceBox.check`` (the tool
inside a box around the skull). While active, the watchdog (``Watchdog``) checks that joint
states and stereo frames are fresh and finite and that the controller keeps its deadline, and,
when armed, ``TrackingMonitor`` checks that the joints follow their commands (a stuck or passive
joint, a driver that lost its enable). Any violation makes ``Hardware`` stop safely (drill off,
hold the last accepted command, deactivate) and raise ``SafetyStop`` with the reason.

Arming: ``arming_decision`` says whether commands are sent to a robot that really moves
(CoppeliaSim, SmartArmStack): only with the ``--arm`` flag AND ``safety.armed = true`` in the
scene; the twin and replay always "send" (nothing real moves).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenes.frames import apply, invert
from scenes.hw_config import SafetySpec


class ArmingError(ValueError):
    """``--arm`` was given but the scene does not allow arming (or the reverse is needed)."""


def arming_decision(moves_real_robot: bool, armed_flag: bool, spec: SafetySpec, source: str) -> bool:
    """True when commands are sent; False for a dry run. Raises ArmingError on a half-armed request."""
    if not moves_real_robot:
        return True
    if armed_flag and not spec.armed:
        raise ArmingError(f"--arm was given but {source} has safety.armed = false: both are needed to move a "
                          f"real robot (set safety.armed = true in the scene, or drop --arm for a dry run)")
    return armed_flag and spec.armed


class WorkspaceBox:
    """The tool (burr centre) must stay inside an axis-aligned box of the skull frame {S}."""

    def __init__(self, spec: SafetySpec, T_s_to_r: np.ndarray):
        self.lo, self.hi = spec.workspace_min_s, spec.workspace_max_s
        self.T_r_to_s = invert(T_s_to_r)

    def violation(self, p_tool_r: np.ndarray) -> str | None:
        """None when inside; else a message naming the position and the box (mm, {S})."""
        p_s = apply(self.T_r_to_s, p_tool_r)
        if np.all(p_s >= self.lo) and np.all(p_s <= self.hi):
            return None
        return (f"the tool would be at {np.round(p_s * 1e3, 3).tolist()} mm in the skull frame {{S}}, outside the "
                f"workspace box [{np.round(self.lo * 1e3, 3).tolist()}, {np.round(self.hi * 1e3, 3).tolist()}] mm "
                f"(safety.workspace_min_mm_s / workspace_max_mm_s)")


@dataclass
class Watchdog:
    """Freshness rules for what the robot sends, and the controller's deadline (all in s)."""

    spec: SafetySpec

    def joint_state_problem(self, position: np.ndarray, velocity: np.ndarray, stamp_s: float, now_s: float) -> str | None:
        bad = ~(np.isfinite(position) & np.isfinite(velocity))
        if np.any(bad):
            return f"the robot sent non-finite joint states at joints {np.flatnonzero(bad).tolist()}"
        age = now_s - stamp_s
        limit = self.spec.max_joint_state_age_s
        if not np.isfinite(stamp_s) or age > limit:
            return f"joint states are stale: the newest is {age:.3f} s old (safety.max_joint_state_age_s = {limit:g} s)"
        if age < -limit:              # a clock offset would hide staleness by as much
            return (f"joint states are stamped {-age:.3f} s in the future: the robot's clock and this "
                    f"computer's disagree by more than safety.max_joint_state_age_s = {limit:g} s")
        return None

    def image_problem(self, stamp_s: float | None, now_s: float, active_since_s: float) -> str | None:
        limit = self.spec.max_image_age_s
        if stamp_s is None:
            waited = now_s - active_since_s
            if waited > limit:
                return f"no stereo frame {waited:.3f} s after activation (safety.max_image_age_s = {limit:g} s)"
            return None
        age = now_s - stamp_s
        if age > limit:
            return f"stereo frames are stale: the newest is {age:.3f} s old (safety.max_image_age_s = {limit:g} s)"
        if age < -limit:
            return (f"stereo frames are stamped {-age:.3f} s in the future: the cameras' clock and this "
                    f"computer's disagree by more than safety.max_image_age_s = {limit:g} s")
        return None

    def deadline_problem(self, cycle_wall_s: float) -> str | None:
        if cycle_wall_s > self.spec.control_deadline_s:
            return (f"missed the control deadline: {cycle_wall_s:.3f} s of wall time between advance() calls "
                    f"(safety.control_deadline_s = {self.spec.control_deadline_s:g} s)")
        return None


class TrackingMonitor:
    """Armed runs: every joint must follow its commands.

    A joint trails its command by the servo lag plus the joint-state delay, at most what it covers
    at its velocity limit in that time (commands are rate-limited by the same limits). So joint j
    is off track while ``|q_cmd[j] - q_measured[j]| > velocity_max[j] * safety.tracking_lag_s``;
    off track for longer than ``safety.tracking_timeout_s`` (backend clock) is a violation.
    """

    def __init__(self, spec: SafetySpec, velocity_max: np.ndarray):
        self.tolerance = np.asarray(velocity_max, dtype=float) * spec.tracking_lag_s   # rad | m
        self.lag_s = spec.tracking_lag_s
        self.timeout_s = spec.tracking_timeout_s
        self._off_since_s = np.full(self.tolerance.shape, np.nan)    # NaN: on track

    def reset(self) -> None:
        """Forget earlier deviations (on activation: the command starts at the measured position)."""
        self._off_since_s[:] = np.nan

    def problem(self, q_command: np.ndarray, q_measured: np.ndarray, now_s: float) -> str | None:
        """None while every joint follows; else a message naming the joint that has been off track
        the longest, its command, its measured position and for how long."""
        off = np.abs(q_command - q_measured) > self.tolerance
        self._off_since_s = np.where(off, np.where(np.isnan(self._off_since_s), now_s, self._off_since_s), np.nan)
        duration = np.where(off, now_s - self._off_since_s, -np.inf)
        j = int(np.argmax(duration))
        if duration[j] <= self.timeout_s:
            return None
        return (f"joint {j} does not follow its commands: commanded {q_command[j]:.6g}, measured {q_measured[j]:.6g} "
                f"(rad | m) for {duration[j]:.3f} s; tolerance {self.tolerance[j]:.3g} = its velocity limit x "
                f"safety.tracking_lag_s = {self.lag_s:g} s, for at most safety.tracking_timeout_s = {self.timeout_s:g} s")
