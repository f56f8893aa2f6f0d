"""The hardware interface every backend implements (twin, CoppeliaSim, SmartArmStack, replay).

Modelled on ros2_control's hardware interface: ``read()`` / ``write()`` at a fixed period
with timestamps, and a small lifecycle:

    UNCONFIGURED --configure()--> INACTIVE --activate()--> ACTIVE
    ACTIVE --deactivate()--> INACTIVE;  any --close()--> FINALIZED

Reading is allowed once configured; commands (joint targets, drill) only while ACTIVE.

The safety layer lives here, so every backend gets it (rules in ``hw_bridge.safety``):
- each joint command is checked before it reaches the robot (``hw_bridge.commands``: shape,
  finite values, position limits, the step from the previous command within the velocity
  limits over one period) and the tool must stay inside the workspace box around the skull;
- while ACTIVE, a watchdog checks joint states (finite, not older than a configured age),
  stereo frames (not too old) and, on real-time backends, the controller's deadline; when
  armed (on a closed-loop backend: not replay), every ``read()`` also checks that the joints
  follow their commands (``safety.TrackingMonitor``); any ``HardwareError`` from a backend hook (a lost connection, an
  error reply from the simulator or driver) counts as a violation too, with the backend's message;
- a violation stops safely: the last accepted command sent again (hold), the drill off, the
  interface deactivated; ``SafetyStop`` (``CommandRejected`` for a refused command) says why
  (the errors are in ``hw_bridge.errors``);
  the rejected command itself is never sent;
- a robot that really moves (``moves_real_robot``) gets commands only when armed (``--arm`` and
  ``safety.armed = true``); otherwise every command is logged as "would send" (a dry run).

``close()`` runs every shutdown step even when one fails (drill off, the backend's deactivate
hook, a safe stop still pending, the backend's close hook, the recorder), then raises
``HardwareError`` naming each failed step, so a drill-off that did not reach the robot is never silent.

A ``recorder`` (``hw_bridge.recording.Recorder``) sees everything that crosses the interface:
joint states at every period, commands, grabbed frames, drill commands, safety events and the
controllers' decisions (``publish_decision``).

Units: SI everywhere (rad, m, s); drill speed in rpm (the name says so). Timestamps are the
backend's clock in seconds (simulated time on the twin).
"""
from __future__ import annotations

import enum
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from hw_bridge.commands import check_joint_command
from hw_bridge.errors import (CommandRejected, ConnectionLost, EndOfRun, HardwareError, LifecycleError, SafetyStop,
                              stop_cause)
from hw_bridge.rig import JointLimits, RigDescription
from hw_bridge.safety import TrackingMonitor, Watchdog, WorkspaceBox, arming_decision
from scenes.robot_description import RobotDescription
from scenes.spec import SceneSpec

# The errors live in hw_bridge.errors (import them from there); this module exports only its own names.
__all__ = ["DrillState", "Hardware", "JointLimits", "JointState", "Lifecycle", "Recorder", "StereoFrame"]


class Lifecycle(enum.Enum):
    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"
    ACTIVE = "active"
    FINALIZED = "finalized"


@dataclass(frozen=True)
class JointState:
    stamp_s: float
    position: np.ndarray       # rad | m
    velocity: np.ndarray       # rad/s | m/s


class StereoFrame:
    """A left/right pair exposed at ``stamp_s``. Images: uint8 BGR, (height, width, 3).

    Either image may be given as a zero-argument function that returns it: it is called once, on
    the first read of that image (a simulated backend then renders only what is read, and a frame
    that is only waited for, its stamp read, costs nothing; the function must return the image of
    the exposure time whenever it is called).
    """

    __slots__ = ("stamp_s", "index", "_left", "_right")

    def __init__(self, stamp_s: float, index: int, left: np.ndarray | Callable[[], np.ndarray],
                 right: np.ndarray | Callable[[], np.ndarray]):
        self.stamp_s = stamp_s
        self.index = index
        self._left = left
        self._right = right

    @property
    def left(self) -> np.ndarray:
        """The left image (produced now if it was given as a function)."""
        if callable(self._left):
            self._left = self._left()
        return self._left

    @property
    def right(self) -> np.ndarray:
        """The right image (produced now if it was given as a function)."""
        if callable(self._right):
            self._right = self._right()
        return self._right

    def __repr__(self) -> str:            # without producing an image
        return f"StereoFrame(stamp_s={self.stamp_s!r}, index={self.index!r})"


@dataclass(frozen=True)
class DrillState:
    on: bool
    speed_rpm: float


class Recorder(Protocol):
    """What ``Hardware`` tells a recorder (implemented by ``hw_bridge.recording.McapRecorder``)."""

    def on_tick(self, now_s: float, state: JointState) -> None: ...
    def on_command(self, now_s: float, q: np.ndarray, sent: bool) -> None: ...
    def on_frame(self, now_s: float, frame: StereoFrame) -> None: ...
    def on_drill(self, now_s: float, on: bool, speed_rpm: float, sent: bool) -> None: ...
    def on_event(self, now_s: float, kind: str, message: str) -> None: ...
    def on_decision(self, now_s: float, topic: str, payload: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


log = logging.getLogger("micromill.hw_bridge")


class Hardware(ABC):
    """One robot + stereo camera + drill, as the controllers see them."""

    #: registry name of the backend
    name: str = ""
    #: True when commands move something real or external (CoppeliaSim, SmartArmStack): it then
    #: needs arming; the embedded twin and replay set False
    moves_real_robot: bool = True
    #: True when the backend's clock is wall time (advance() sleeps): the deadline watchdog applies
    realtime: bool = False
    #: True when the joint states answer the commands sent (the tracking rule applies when armed);
    #: replay sets False: it plays recorded states back whatever the replayed controllers command
    closed_loop: bool = True

    def __init__(self, scene: SceneSpec, seed: int = 0, *, armed: bool = False, recorder: Recorder | None = None):
        # The scene (true skull pose, true camera intrinsics, ...) stays inside hw_bridge: backends
        # build their world or connection from it. Controllers get ``rig``, what a lab knows.
        self._scene = scene
        self.seed = seed
        #: what the controllers may know of the rig (``hw_bridge.rig``); the scene stays here
        self.rig = RigDescription.from_scene(scene, RobotDescription(scene.robot.description_path))
        self.robot = self.rig.robot
        self.limits: JointLimits = self.rig.limits
        self.period_s = self.rig.period_s
        #: False: a dry run (commands are logged, not sent); see hw_bridge.safety.arming_decision
        self.armed = arming_decision(self.moves_real_robot, armed, scene.safety, scene.source)
        self.recorder = recorder
        #: why the safety layer last stopped the run (None: it has not)
        self.fault: str | None = None
        #: commands a dry run did not send
        self.dry_run_commands = 0
        self._workspace = WorkspaceBox(scene.safety, scene.T_s_to_r)
        self._watchdog = Watchdog(scene.safety)
        self._tracking = TrackingMonitor(scene.safety, self.limits.velocity_max)
        self._state = Lifecycle.UNCONFIGURED
        self._last_command: np.ndarray | None = None
        self._active_since_s = 0.0
        self._last_advance_wall: float | None = None
        self._last_frame_index: int | None = None
        self._stop_pending = False            # a safe stop that could not be sent yet

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def state(self) -> Lifecycle:
        return self._state

    @property
    def has_cameras(self) -> bool:
        """False when this backend is configured without stereo cameras (grab_stereo gives None)."""
        return True

    def _require(self, *allowed: Lifecycle, action: str) -> None:
        if self._state not in allowed:
            raise LifecycleError(f"{self.name}: cannot {action} while {self._state.value}; "
                                 f"allowed in: {', '.join(s.value for s in allowed)}"
                                 + (f" (stopped by the safety layer: {self.fault})" if self.fault else ""))

    def configure(self) -> None:
        self._require(Lifecycle.UNCONFIGURED, action="configure")
        self._guarded(self._on_configure)
        self._state = Lifecycle.INACTIVE
        if self.recorder is not None:
            self.recorder.on_tick(self.now(), self._guarded(self._read))

    def activate(self) -> None:
        """Start accepting commands (clears an earlier safety stop; the robot holds where it is)."""
        self._require(Lifecycle.INACTIVE, action="activate")
        self._send_safe_stop()
        if self._stop_pending:
            raise SafetyStop(f"{self.name}: not activated: the last safe stop has not reached the robot yet")
        self._guarded(self._on_activate)
        state = self._guarded(self._read)
        problem = self._watchdog.joint_state_problem(state.position, state.velocity, state.stamp_s, self.now())
        if problem is not None:
            raise SafetyStop(f"{self.name}: not activated: {problem}")
        self._last_command = state.position.copy()
        self._tracking.reset()
        self._active_since_s = self.now()
        self._last_advance_wall = None
        self.fault = None
        self._state = Lifecycle.ACTIVE
        if not self.armed:
            log.warning("%s: DRY RUN: not armed (needs --arm and safety.armed = true); commands are logged, "
                        "not sent", self.name)
        self._event("activated", "armed" if self.armed else "dry run")

    def deactivate(self) -> None:
        self._require(Lifecycle.ACTIVE, action="deactivate")
        self.set_drill(False, 0.0)
        self._guarded(self._on_deactivate)
        self._state = Lifecycle.INACTIVE
        self._event("deactivated", "")

    def stop(self, reason: str) -> None:
        """A safety stop asked for by whoever runs the controllers (the demo, a suite case) when
        something outside the interface failed, e.g. a controller raised: hold the last accepted
        command, drill off, deactivate, record ``reason`` in ``fault`` and the recording. Does
        nothing unless ACTIVE (an inactive robot already holds with the drill off)."""
        if self._state is Lifecycle.ACTIVE:
            self._safe_stop(reason)

    def close(self) -> None:
        """Release everything. Safe to call more than once and from any state.

        Every step runs even when an earlier one fails: drill off and the backend's deactivate
        hook (when active), a safe stop not delivered yet (tried once more), the backend's close
        hook, the recorder. Each failure is logged when it happens; the interface ends FINALIZED
        either way, then ``HardwareError`` names every failed step (chained to the first)."""
        if self._state is Lifecycle.FINALIZED:
            return
        failures: list[tuple[str, Exception]] = []

        def attempt(step: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:          # noqa: BLE001 - every step must run; all are reported below
                log.error("%s: close: %s failed: %s", self.name, step, exc)
                failures.append((step, exc))

        if self._state is Lifecycle.ACTIVE:
            attempt("switching the drill off", lambda: self.set_drill(False, 0.0))
            attempt("deactivating the backend", self._on_deactivate)
            if self._state is Lifecycle.ACTIVE:
                self._state = Lifecycle.INACTIVE
                self._event("deactivated", "on close")
        if self._stop_pending:
            self._send_safe_stop()
            if self._stop_pending:
                failures.append(("delivering the safe stop", HardwareError(
                    "the hold and drill-off of the last safety stop never reached the robot")))
        attempt("closing the backend", self._on_close)
        self._state = Lifecycle.FINALIZED
        if self.recorder is not None:
            attempt("closing the recording", self.recorder.close)
        if failures:
            drill = any(step in ("switching the drill off", "delivering the safe stop") for step, _ in failures)
            raise HardwareError(
                f"{self.name}: closed, but {len(failures)} shutdown step(s) failed: "
                + "; ".join(f"{step}: {exc}" for step, exc in failures)
                + (" -- THE DRILL MAY STILL BE ON: switch it off at the rig" if drill else "")) from failures[0][1]

    def __enter__(self) -> "Hardware":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Leaving a ``with`` block: an exception stops the run safely with its cause first
        (``stop``), then everything is released (``close``)."""
        try:
            if exc is not None:
                self.stop(stop_cause(exc))
        finally:
            self.close()

    # ---- the safety layer ----------------------------------------------------------------
    def _guarded(self, fn, *args):
        """Call a backend hook; while active, any ``HardwareError`` it raises (a lost connection, an
        error reply) becomes a safe stop that carries the backend's message (``EndOfRun`` passes)."""
        try:
            return fn(*args)
        except (SafetyStop, EndOfRun):
            raise
        except HardwareError as exc:
            if self._state is Lifecycle.ACTIVE:
                kind = "connection lost" if isinstance(exc, ConnectionLost) else "backend error"
                raise self._safe_stop(f"{kind}: {exc}") from exc
            raise

    def _safe_stop(self, reason: str) -> SafetyStop:
        """Hold the last accepted command, drill off, deactivate; return the error to raise."""
        if self._state is Lifecycle.ACTIVE:
            self._stop_pending = self.armed
            try:
                self._send_safe_stop()
            finally:                          # whatever the robot or the operator did, commands end here
                self._state = Lifecycle.INACTIVE
        self.fault = reason
        log.error("%s: SAFETY STOP: %s (drill off, holding position, deactivated)", self.name, reason)
        self._event("safety_stop", reason)
        return SafetyStop(f"{self.name}: safety stop: {reason}")

    def _send_safe_stop(self) -> None:
        """Hold, then drill off (a manual drill may wait for the operator); if the robot cannot be
        reached, retried on every later read/advance."""
        if not self._stop_pending:
            return
        try:
            self._write(self._last_command)
            self._set_drill(False, 0.0)
            self._stop_pending = False
        except HardwareError as exc:           # e.g. the connection is gone: retried later
            log.error("%s: safe stop not delivered yet (%s); retrying", self.name, exc)

    def _event(self, kind: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.on_event(self.now(), kind, message)

    # ---- I/O ---------------------------------------------------------------------------
    def read(self) -> JointState:
        """Latest joint state delivered by the robot (watchdog-checked while active)."""
        self._require(Lifecycle.INACTIVE, Lifecycle.ACTIVE, action="read joint states")
        self._send_safe_stop()
        state = self._guarded(self._read)
        if self._state is Lifecycle.ACTIVE:
            problem = self._watchdog.joint_state_problem(state.position, state.velocity, state.stamp_s, self.now())
            if problem is None and self.armed and self.closed_loop:     # a dry run sends nothing to follow
                problem = self._tracking.problem(self._last_command, state.position, self.now())
            if problem is not None:
                raise self._safe_stop(problem)
        return state

    def write(self, q_target: np.ndarray) -> None:
        """Send a joint position target. A command that breaks a rule is not sent: the run stops
        safely and ``CommandRejected`` says why."""
        self._require(Lifecycle.ACTIVE, action="write commands")
        try:
            q = check_joint_command(q_target, self.limits, self._last_command, self.period_s)
        except CommandRejected as exc:
            self._safe_stop(f"command rejected: {exc}")
            raise CommandRejected(f"{self.name}: command rejected (safety stop): {exc}") from None
        problem = self._workspace.violation(self.robot.tool_position(q))
        if problem is not None:
            self._safe_stop(f"command rejected: {problem}")
            raise CommandRejected(f"{self.name}: command rejected (safety stop): {problem}")
        if self.armed:
            self._guarded(self._write, q)
        else:
            self.dry_run_commands += 1
            log.debug("%s: DRY RUN: would send q=%s", self.name, np.array2string(q, precision=6))
        self._last_command = q
        if self.recorder is not None:
            self.recorder.on_command(self.now(), q, self.armed)

    def grab_stereo(self) -> StereoFrame | None:
        """Newest available stereo pair, or None before the cameras delivered one (or without cameras)."""
        self._require(Lifecycle.INACTIVE, Lifecycle.ACTIVE, action="grab images")
        if not self.has_cameras:
            return None
        frame = self._guarded(self._grab_stereo)
        if self._state is Lifecycle.ACTIVE:
            problem = self._watchdog.image_problem(None if frame is None else frame.stamp_s, self.now(),
                                                   self._active_since_s)
            if problem is not None:
                raise self._safe_stop(problem)
        if frame is not None and self.recorder is not None and frame.index != self._last_frame_index:
            self.recorder.on_frame(self.now(), frame)
        if frame is not None:
            self._last_frame_index = frame.index
        return frame

    def set_drill(self, on: bool, speed_rpm: float) -> None:
        """Switch the drill (speed in rpm, 0..drill.max_speed_rpm of the scene)."""
        self._require(Lifecycle.ACTIVE, action="command the drill")
        vmax = self.rig.drill.max_speed_rpm
        problem = None
        if not isinstance(on, bool):
            problem = f"drill on={on!r} must be a bool"
        elif not np.isfinite(speed_rpm) or not 0.0 <= speed_rpm <= vmax:
            problem = f"drill speed_rpm={speed_rpm!r} must be finite and within [0, {vmax:g}]"
        if problem is not None:
            self._safe_stop(f"command rejected: {problem}")
            raise CommandRejected(f"{self.name}: command rejected (safety stop): {problem}")
        speed = float(speed_rpm) if on else 0.0
        if self.armed:
            self._guarded(self._set_drill, on, speed)
            self._last_advance_wall = None    # a manual drill waits for the operator: not controller time
        else:
            log.info("%s: DRY RUN: would switch the drill %s (%g rpm)", self.name, "on" if on else "off", speed)
        if self.recorder is not None:
            self.recorder.on_drill(self.now(), on, speed, self.armed)

    def advance(self) -> None:
        """Wait for the next control period (the twin steps its world; hardware sleeps).
        On real-time backends, a controller slower than ``safety.control_deadline_s`` stops the run."""
        self._require(Lifecycle.INACTIVE, Lifecycle.ACTIVE, action="advance")
        if self.realtime and self._state is Lifecycle.ACTIVE and self._last_advance_wall is not None:
            problem = self._watchdog.deadline_problem(time.monotonic() - self._last_advance_wall)
            if problem is not None:
                raise self._safe_stop(problem)
        self._send_safe_stop()
        self._guarded(self._advance)
        self._last_advance_wall = time.monotonic()
        if self.recorder is not None:
            self.recorder.on_tick(self.now(), self._guarded(self._read))

    def publish_decision(self, topic: str, **payload: Any) -> None:
        """What a controller decided (e.g. ``milling/stop``), for the recording: JSON values or numpy
        arrays (``hw_bridge.recording.to_json_value``; NaN becomes null)."""
        if self.recorder is not None:
            self.recorder.on_decision(self.now(), topic, payload)

    def idle_reason(self) -> str | None:
        """Why this backend's joint states legitimately do not advance right now, or None. Only a
        dry run watching a simulator it may not start has one (CoppeliaSim: the owner's simulation
        is stopped or paused); a robot driver never does (stamps that stand still are a fault)."""
        return None

    @abstractmethod
    def drill_state(self) -> DrillState: ...

    @abstractmethod
    def now(self) -> float:
        """Backend clock (s)."""

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
    def _set_drill(self, on: bool, speed_rpm: float) -> None:
        """Switch the drill; ``speed_rpm`` is already checked, and 0 whenever ``on`` is False."""

    @abstractmethod
    def _advance(self) -> None: ...
