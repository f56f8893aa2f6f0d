"""The hardware interface every backend implements (twin, and later CoppeliaSim, SmartArmStack).

Modelled on ros2_control's hardware interface: ``read()`` / ``write()`` at a fixed period
with timestamps, and a small lifecycle:

    UNCONFIGURED --configure()--> INACTIVE --activate()--> ACTIVE
    ACTIVE --deactivate()--> INACTIVE;  any --close()--> FINALIZED

Reading is allowed once configured; commands (joint targets, drill) only while ACTIVE. Each
joint command is checked before it reaches the robot (``hw_bridge.commands``): shape, finite
values, position limits, and the step from the previous command within the velocity limits
over one period. A rejected command raises ``CommandRejected`` and nothing moves.

Units: SI everywhere (rad, m, s); drill speed in rpm (the name says so). Timestamps are the
backend's clock in seconds (simulated time on the twin).
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hw_bridge.commands import check_joint_command
from scenes.robot_description import RobotDescription
from scenes.spec import SceneSpec


class Lifecycle(enum.Enum):
    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"
    ACTIVE = "active"
    FINALIZED = "finalized"


class HardwareError(RuntimeError):
    """Base class of hardware interface errors."""


class LifecycleError(HardwareError):
    """A call that the current lifecycle state does not allow."""


class CommandRejected(HardwareError):
    """A command failed validation; it was not sent and nothing moved."""


@dataclass(frozen=True)
class JointLimits:
    position_min: np.ndarray   # rad | m
    position_max: np.ndarray
    velocity_max: np.ndarray   # rad/s | m/s (symmetric)


@dataclass(frozen=True)
class JointState:
    stamp_s: float
    position: np.ndarray       # rad | m
    velocity: np.ndarray       # rad/s | m/s


@dataclass(frozen=True)
class StereoFrame:
    """A left/right pair exposed at ``stamp_s``. Images: uint8 BGR, (height, width, 3)."""

    stamp_s: float
    index: int
    left: np.ndarray
    right: np.ndarray


@dataclass(frozen=True)
class DrillState:
    on: bool
    speed_rpm: float


class Hardware(ABC):
    """One robot + stereo camera + drill, as the controllers see them."""

    #: registry name of the backend
    name: str = ""

    def __init__(self, scene: SceneSpec, seed: int = 0):
        self.scene = scene
        self.seed = seed
        self.robot = RobotDescription(scene.robot.description_path)
        self.limits = JointLimits(self.robot.q_min.copy(), self.robot.q_max.copy(),
                                  np.minimum(-self.robot.qd_min, self.robot.qd_max))
        self.period_s = scene.control_period_s
        self._state = Lifecycle.UNCONFIGURED
        self._last_command: np.ndarray | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def state(self) -> Lifecycle:
        return self._state

    def _require(self, *allowed: Lifecycle, action: str) -> None:
        if self._state not in allowed:
            raise LifecycleError(f"{self.name}: cannot {action} while {self._state.value}; "
                                 f"allowed in: {', '.join(s.value for s in allowed)}")

    def configure(self) -> None:
        self._require(Lifecycle.UNCONFIGURED, action="configure")
        self._on_configure()
        self._state = Lifecycle.INACTIVE

    def activate(self) -> None:
        self._require(Lifecycle.INACTIVE, action="activate")
        self._on_activate()
        self._last_command = self.read().position.copy()
        self._state = Lifecycle.ACTIVE

    def deactivate(self) -> None:
        self._require(Lifecycle.ACTIVE, action="deactivate")
        self.set_drill(False, 0.0)
        self._on_deactivate()
        self._state = Lifecycle.INACTIVE

    def close(self) -> None:
        """Release everything. Safe to call more than once and from any state."""
        if self._state is Lifecycle.FINALIZED:
            return
        if self._state is Lifecycle.ACTIVE:
            self.deactivate()
        self._on_close()
        self._state = Lifecycle.FINALIZED

    def __enter__(self) -> "Hardware":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- I/O ---------------------------------------------------------------------------
    def read(self) -> JointState:
        """Latest joint state delivered by the robot."""
        self._require(Lifecycle.INACTIVE, Lifecycle.ACTIVE, action="read joint states")
        return self._read()

    def write(self, q_target: np.ndarray) -> None:
        """Send a joint position target (validated; raises CommandRejected, nothing moves)."""
        self._require(Lifecycle.ACTIVE, action="write commands")
        q = check_joint_command(q_target, self.limits, self._last_command, self.period_s)
        self._write(q)
        self._last_command = q

    def grab_stereo(self) -> StereoFrame | None:
        """Newest available stereo pair, or None before the cameras delivered one."""
        self._require(Lifecycle.INACTIVE, Lifecycle.ACTIVE, action="grab images")
        return self._grab_stereo()

    def set_drill(self, on: bool, speed_rpm: float) -> None:
        """Switch the drill (speed in rpm, 0..drill.max_speed_rpm of the scene)."""
        self._require(Lifecycle.ACTIVE, action="command the drill")
        vmax = self.scene.drill.max_speed_rpm
        if not isinstance(on, bool):
            raise CommandRejected(f"drill on={on!r} must be a bool")
        if not np.isfinite(speed_rpm) or not 0.0 <= speed_rpm <= vmax:
            raise CommandRejected(f"drill speed_rpm={speed_rpm!r} must be finite and within [0, {vmax:g}]")
        self._set_drill(on, float(speed_rpm) if on else 0.0)

    @abstractmethod
    def drill_state(self) -> DrillState: ...

    @abstractmethod
    def now(self) -> float:
        """Backend clock (s)."""

    @abstractmethod
    def advance(self) -> None:
        """Wait for the next control period (the twin steps its world; hardware sleeps)."""

    # ---- backend hooks -----------------------------------------------------------------
    def _on_configure(self) -> None: ...
    def _on_activate(self) -> None: ...
    def _on_deactivate(self) -> None: ...
    def _on_close(self) -> None: ...

    @abstractmethod
    def _read(self) -> JointState: ...

    @abstractmethod
    def _write(self, q_target: np.ndarray) -> None: ...

    @abstractmethod
    def _grab_stereo(self) -> StereoFrame | None: ...

    @abstractmethod
    def _set_drill(self, on: bool, speed_rpm: float) -> None: ...
