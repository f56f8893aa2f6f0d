"""Faults the twin can inject into what it sends, so safety tests can provoke them on purpose.

Sim-only test hooks, set on ``TwinWorld.faults``: the ``twin`` backend reads them directly;
the CoppeliaSim test server and the SAS twin driver expose them to their test clients. Each
mimics a real failure: a driver that stops publishing (``freeze_joint_states``: the last sample
again, same stamp), a slow network (``joint_state_extra_delay_s``), a broken encoder
(``nan_joint_states``), frozen cameras (``freeze_frames``), a robot or simulator that stops
answering (``disconnected``) and joints that ignore their commands (``ignore_commands``: a driver
that lost its enable, a passive or stuck joint; the arm stays where it is while joint states keep
coming).

``FaultSchedule`` times such faults over a session (a suite case's fault-injected run): the world
applies it every period (``TwinWorld.set_fault_schedule``), and adds the faults only a schedule
has: dropped camera frames and extra image latency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


#: the extra joint-state delay of the ``delay_joint_states`` fault (s)
INJECTED_DELAY_S = 0.5


@dataclass
class SensorFaults:
    freeze_joint_states: bool = False
    joint_state_extra_delay_s: float = 0.0
    nan_joint_states: bool = False
    freeze_frames: bool = False
    disconnected: bool = False
    ignore_commands: bool = False

    def inject(self, kind: str) -> None:
        """Set the fault named ``kind`` (the names of ``hw_bridge.checker.FAULT_CHECKS``, plus ``freeze_frames``
        and ``ignore_commands``)."""
        if kind == "nan_joint_states":
            self.nan_joint_states = True
        elif kind == "freeze_joint_states":
            self.freeze_joint_states = True
        elif kind == "delay_joint_states":
            self.joint_state_extra_delay_s = INJECTED_DELAY_S
        elif kind == "freeze_frames":
            self.freeze_frames = True
        elif kind == "disconnect":
            self.disconnected = True
        elif kind == "ignore_commands":
            self.ignore_commands = True
        else:
            raise ValueError(f"unknown fault {kind!r}; valid: nan_joint_states, freeze_joint_states, "
                             f"delay_joint_states, freeze_frames, disconnect, ignore_commands")

    def clear(self) -> None:
        self.__init__()


@dataclass(frozen=True)
class FaultWindow:
    """A fault active from ``start_s`` for ``duration_s`` (s, from the start of the cut: the first
    period with the drill on); ``duration_s = inf``: it never ends (a permanent fault)."""

    start_s: float
    duration_s: float

    def __post_init__(self):
        if not (np.isfinite(self.start_s) and self.start_s >= 0.0):
            raise ValueError(f"FaultWindow.start_s={self.start_s!r}: must be finite and >= 0 s")
        if not self.duration_s > 0.0:
            raise ValueError(f"FaultWindow.duration_s={self.duration_s!r}: must be > 0 s (inf: permanent)")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, t_cut_s: float) -> bool:
        return self.start_s <= t_cut_s < self.end_s


#: the fault kinds a ``FaultSchedule`` can fire (what ``TwinWorld.faults_fired`` records)
SCHEDULED_KINDS: tuple[str, ...] = ("dropped_frames", "image_latency", "joint_state_delay", "joint_state_freeze",
                                    "disconnect")


@dataclass(frozen=True)
class FaultSchedule:
    """SIM-ONLY: faults in what the robot and the cameras deliver, over a whole twin session, set
    with ``TwinWorld.set_fault_schedule``; controllers never see it (they see only its effects).

    - ``dropped_frame_fraction`` (fraction 0..1 of camera exposures): each exposure k is lost
      with this probability (a draw seeded by ``seed`` and k); the newest delivered frame is then
      an older one. From the session's start (the pre-measurement reads images too).
    - ``image_latency_s`` (s): extra delay of every frame beyond ``sensors.cameras.delay_s``
      (the frame still shows the world at its exposure stamp). From the session's start.
    - ``joint_state_delay_s`` (s) during ``joint_state_delay`` (a window): extra delay of the
      joint states beyond ``sensors.joint_states.delay_s`` (their stamps say so).
    - ``joint_state_freeze`` (a window): the joint states stop (the last sample again, same stamp).
    - ``disconnect`` (a window, or permanent): the robot stops answering (every call fails).

    The windows are timed from the cut's start (the first period with the drill on), so "mid-cut"
    means what it says whatever the pre-measurement took.
    """

    dropped_frame_fraction: float = 0.0
    image_latency_s: float = 0.0
    joint_state_delay_s: float = 0.0
    joint_state_delay: FaultWindow | None = None
    joint_state_freeze: FaultWindow | None = None
    disconnect: FaultWindow | None = None
    seed: int = 0

    def __post_init__(self):
        for name, lo, hi in (("dropped_frame_fraction", 0.0, 1.0), ("image_latency_s", 0.0, 10.0),
                             ("joint_state_delay_s", 0.0, 10.0)):
            value = getattr(self, name)
            if not (np.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"FaultSchedule.{name}={value!r}: allowed [{lo:g}, {hi:g}]")

    @property
    def windows(self) -> dict[str, FaultWindow]:
        """The timed faults that are scheduled, by kind (``SCHEDULED_KINDS``)."""
        w = {"joint_state_delay": self.joint_state_delay if self.joint_state_delay_s > 0 else None,
             "joint_state_freeze": self.joint_state_freeze, "disconnect": self.disconnect}
        return {k: v for k, v in w.items() if v is not None}

    @property
    def end_s(self) -> float:
        """When the last timed fault ends (s from the cut's start; inf: a permanent one; 0: none)."""
        return max((w.end_s for w in self.windows.values()), default=0.0)

    def frame_dropped(self, index: int) -> bool:
        """Whether camera exposure ``index`` is lost (deterministic for the seed)."""
        if self.dropped_frame_fraction <= 0.0:
            return False
        return bool(np.random.default_rng([self.seed, 0xF4A3, index]).random() < self.dropped_frame_fraction)

    def active_at(self, t_cut_s: float | None) -> set[str]:
        """The timed kinds active at ``t_cut_s`` (s from the cut's start; None: the cut has not started)."""
        if t_cut_s is None:
            return set()
        return {k for k, w in self.windows.items() if w.active(t_cut_s)}

    def apply(self, faults: SensorFaults, t_cut_s: float | None) -> set[str]:
        """Set the timed fields of ``faults`` for ``t_cut_s``; returns the kinds active then."""
        active = self.active_at(t_cut_s)
        faults.joint_state_extra_delay_s = self.joint_state_delay_s if "joint_state_delay" in active else 0.0
        faults.freeze_joint_states = "joint_state_freeze" in active
        faults.disconnected = "disconnect" in active
        return active
