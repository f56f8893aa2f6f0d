"""The one owner of the control loop (ros2_control's read -> update -> write cycle).

Every control period of a session goes through ``ControlLoop.command``: the command is written
once (``hw.write``), the hardware advances once (``hw.advance``) and the joint state is read
once, with its stamp (``hw.read``). Controllers compute commands from ``loop.state`` (the
period's measured joint state) and ``loop.q_cmd`` (the last command sent); they never write,
advance or read joints themselves. Perception (``hw.grab_stereo``), the drill and decisions go
through ``loop.hw`` as before: they are not part of the joint cycle.

``q_at(stamp_s)`` answers "where were the joints when this frame was exposed?" from the
measured joint states and their *stamps* (on a real arm a joint state is tens of ms old when
it arrives, so the loop's clock would be the wrong key).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from hw_bridge.interface import JointState
from hw_bridge.rig import RigDescription

#: how much joint-state history ``q_at`` can look back (s)
HISTORY_S = 2.0


class ControlLoop:
    """Reads once, lets a controller compute, writes once, advances once; per period.

    Create it on an ACTIVE interface: it reads the first state, and the first command
    continues from the measured joints."""

    def __init__(self, hw):
        self.hw = hw
        self.rig: RigDescription = hw.rig
        self.state: JointState = hw.read()
        #: the last command sent (the measured joints before the first one)
        self.q_cmd: np.ndarray = self.state.position.copy()
        self._history: deque[JointState] = deque([self.state], maxlen=int(HISTORY_S / self.rig.period_s) + 2)

    @property
    def period_s(self) -> float:
        return self.rig.period_s

    def now(self) -> float:
        """The hardware clock (s)."""
        return self.hw.now()

    def command(self, q_target: np.ndarray) -> None:
        """Write ``q_target``, advance one period, read the new joint state."""
        self.hw.write(q_target)
        self.q_cmd = np.asarray(q_target, float).copy()
        self.hw.advance()
        self.state = self.hw.read()
        self._history.append(self.state)

    def hold(self, duration_s: float) -> None:
        """Command the last command again for ``duration_s`` (settling, waiting for a frame)."""
        for _ in range(int(round(duration_s / self.period_s))):
            self.command(self.q_cmd)

    def run_until(self, compute: Callable[[JointState, np.ndarray], np.ndarray], done: Callable[[JointState], bool],
                  timeout_s: float) -> tuple[bool, JointState, float]:
        """Each period: ``q = compute(state, q_cmd)``, command it, then stop if ``done(state)`` held
        for the state the command was computed from, or after ``timeout_s``. Returns (done, that
        state, elapsed s)."""
        t0 = self.now()
        while True:
            state = self.state
            self.command(compute(state, self.q_cmd))
            finished = done(state)
            elapsed = self.now() - t0
            if finished or elapsed >= timeout_s:
                return finished, state, elapsed

    def q_at(self, stamp_s: float) -> np.ndarray:
        """Measured joint positions whose stamp is nearest ``stamp_s`` (within the last ``HISTORY_S``)."""
        return min(self._history, key=lambda s: abs(s.stamp_s - stamp_s)).position
