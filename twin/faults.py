"""Faults the twin can inject into what it sends, so safety tests can provoke them on purpose.

Sim-only test hooks, set on ``TwinWorld.faults``: the ``twin`` backend reads them directly;
the CoppeliaSim test server and the SAS twin driver expose them to their test clients. Each
mimics a real failure: a driver that stops publishing (``freeze_joint_states``: the last sample
again, same stamp), a slow network (``joint_state_extra_delay_s``), a broken encoder
(``nan_joint_states``), frozen cameras (``freeze_frames``), a robot or simulator that stops
answering (``disconnected``) and joints that ignore their commands (``ignore_commands``: a driver
that lost its enable, a passive or stuck joint; the arm stays where it is while joint states keep
coming).
"""
from __future__ import annotations

from dataclasses import dataclass


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
