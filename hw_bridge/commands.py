"""Validation of joint commands before they reach any robot."""
from __future__ import annotations

import numpy as np

from hw_bridge.errors import CommandRejected

#: relative slack on the velocity check, for float rounding in rate-limited command streams
VELOCITY_TOLERANCE = 1e-9


def check_joint_command(q_target, limits, last_command: np.ndarray | None, period_s: float) -> np.ndarray:
    """Return ``q_target`` as a float array, or raise CommandRejected saying what is wrong.

    Checks: shape (n,), every value finite, within [position_min, position_max], and
    |q_target - last_command| <= velocity_max * period_s (the robot never moves faster
    than its limits, whatever the controller asks).
    """
    n = limits.position_min.size
    try:
        q = np.asarray(q_target, dtype=float)
    except (TypeError, ValueError):
        raise CommandRejected(f"joint command {q_target!r} is not a numeric array") from None
    if q.shape != (n,):
        raise CommandRejected(f"joint command has shape {q.shape}; expected ({n},)")
    bad = ~np.isfinite(q)
    if np.any(bad):
        raise CommandRejected(f"joint command has non-finite values at joints {np.flatnonzero(bad).tolist()}: "
                              f"{q[bad].tolist()}")
    out = (q < limits.position_min) | (q > limits.position_max)
    if np.any(out):
        j = int(np.flatnonzero(out)[0])
        raise CommandRejected(
            f"joint command q[{j}]={q[j]:.6g} is outside its position limits "
            f"[{limits.position_min[j]:.6g}, {limits.position_max[j]:.6g}] (joints out: {np.flatnonzero(out).tolist()})")
    if last_command is not None:
        step = np.abs(q - last_command)
        allowed = limits.velocity_max * period_s * (1 + VELOCITY_TOLERANCE) + 1e-15
        fast = step > allowed
        if np.any(fast):
            j = int(np.flatnonzero(fast)[0])
            raise CommandRejected(
                f"joint command q[{j}] moves {step[j]:.6g} in one period of {period_s:g} s, i.e. "
                f"{step[j] / period_s:.6g}/s; its velocity limit is {limits.velocity_max[j]:.6g}/s "
                f"(joints too fast: {np.flatnonzero(fast).tolist()})")
    return q
