"""The hardware interface's errors, in a module of their own so that everything that raises or
catches them (the interface, the command checks, backends, controllers) imports them from here
without importing the interface itself."""
from __future__ import annotations


class HardwareError(RuntimeError):
    """Base class of hardware interface errors."""


class LifecycleError(HardwareError):
    """A call that the current lifecycle state does not allow."""


class SafetyStop(HardwareError):
    """The safety layer stopped the run (drill off, holding, deactivated); ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class CommandRejected(SafetyStop):
    """A command failed validation; it was not sent, and the run stopped safely."""


class ConnectionLost(HardwareError):
    """Raised by a backend when its robot or simulator stops answering."""


class EndOfRun(HardwareError):
    """Not a fault: the backend has nothing more to give (a replay past its last recorded tick). The
    safety layer passes it on as it is, without a safety stop."""


def stop_cause(exc: BaseException) -> str:
    """How a stop caused by ``exc`` is named (``Hardware.fault``, the recording, a run's
    ``stopped_by``): ``"Type: message"``."""
    return f"{type(exc).__name__}: {exc}"
