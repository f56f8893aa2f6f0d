"""The drill of the real rig, as the ``sas`` backend switches it (``[backends.sas] drill``).

The SmartArmStack robot driver moves the arm only; the micro-drill has its own controller.
Until that controller is wired to a computer, a person switches it:

- ``ManualDrill`` (``drill = "manual"``): every change (on/off, speed in rpm) is printed as a
  request to the operator and the call waits until the operator confirms it by pressing
  Enter. A request that does not change the state (e.g. "off" while already off) asks
  nothing. The prompt function is injectable (tests answer it); without one, the operator
  is asked on the terminal with ``input()``, and a process whose stdin is not a terminal is
  refused when the drill is created (nobody could answer).
- ``NoDrill`` (``drill = "none"``): nothing is switched; each change is logged, and the
  requested state is remembered so that the run's record and the safety layer's checks
  ("the drill is off after a safety stop") still see what was asked for.

The safety layer (``hw_bridge.interface``) switches the drill off on every safe stop; with a
manual drill that request, too, waits for the operator's confirmation.
"""
from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable

from hw_bridge.errors import HardwareError
from hw_bridge.interface import DrillState

log = logging.getLogger("micromill.hw_bridge.drill")

#: asks the operator: shows the text, returns when the operator has answered (like ``input``)
PromptFn = Callable[[str], str]


class Drill(ABC):
    """A drill the backend switches: ``set`` blocks until the change took effect."""

    @abstractmethod
    def set(self, on: bool, speed_rpm: float) -> None:
        """Switch the drill on at ``speed_rpm`` (rpm), or off (``on=False``; the speed is then 0)."""

    @abstractmethod
    def state(self) -> DrillState:
        """What the drill is doing now, as far as this side knows."""


class ManualDrill(Drill):
    """The operator switches the drill when asked (see the module docstring)."""

    def __init__(self, prompt: PromptFn | None = None):
        if prompt is None:
            if not sys.stdin.isatty():
                raise HardwareError("backends.sas.drill = \"manual\" asks the operator to switch the drill on the "
                                    "terminal, but stdin is not a terminal (nobody could answer); run interactively, "
                                    "or set backends.sas.drill = \"none\" if no drill is used")
            prompt = input
        self._prompt = prompt
        self._state = DrillState(False, 0.0)

    def set(self, on: bool, speed_rpm: float) -> None:
        wanted = DrillState(on, float(speed_rpm) if on else 0.0)
        if wanted == self._state:
            return
        request = (f"DRILL: switch the drill ON at {wanted.speed_rpm:g} rpm, then press Enter: " if on
                   else "DRILL: switch the drill OFF, then press Enter: ")
        log.warning("%s(waiting for the operator)", request)
        self._prompt(request)
        self._state = wanted
        log.info("drill %s confirmed by the operator", "on" if on else "off")

    def state(self) -> DrillState:
        return self._state


class NoDrill(Drill):
    """No drill is switched: requests are only logged (and remembered as the state)."""

    def __init__(self):
        self._state = DrillState(False, 0.0)

    def set(self, on: bool, speed_rpm: float) -> None:
        wanted = DrillState(on, float(speed_rpm) if on else 0.0)
        if wanted == self._state:
            return
        self._state = wanted
        log.info("no drill connected (backends.sas.drill = \"none\"): would switch it %s%s",
                 "on" if on else "off", f" at {speed_rpm:g} rpm" if on else "")

    def state(self) -> DrillState:
        return self._state


def make_drill(kind: str, prompt: PromptFn | None = None) -> Drill:
    """The drill named by ``backends.sas.drill``: "manual" (with ``prompt``, else the terminal) or "none"."""
    if kind == "manual":
        return ManualDrill(prompt)
    if kind == "none":
        return NoDrill()
    raise HardwareError(f"backends.sas.drill={kind!r} is not a drill; allowed: \"manual\", \"none\"")
