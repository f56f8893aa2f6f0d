"""Fault-injected milling runs (issue 14, faults as properties): the schedule of a case, the
perception outliers, and the ground-truth checks of what a stop left behind.

A case's faults are the milling job's ``fault_*`` parameters (``scenarios.jobs.MillingJobParams``,
bounds there; all zero by default: no fault):

- in what the robot and cameras deliver: a ``twin.faults.FaultSchedule`` the twin world applies
  (``fault_schedule``): dropped frames, image latency, joint-state delay, joint-state freeze,
  lost connection (timed from the cut's start);
- in what perception reads: ``KeypointOutliers`` (the keypoint detectors of the fit stage) and
  ``CompletionOutliers`` (the completion sensor), wrappers seeded by the case.

The calibration is cached per rig (``scenarios.jobs.milling``) and stays fault-free: the faults
act on the case's own session. Controllers never see the schedule, only its effects.

After the run, ``check_stop`` measures on the twin's ground truth whether a stop left the drill
off and the arm holding, and ``resume_after_stop`` tries the minimal resume (re-activate, drill
off, retract above the skull) once the faults have ended.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from controllers.control_loop import ControlLoop
from controllers.motion.pose_control import PoseController
from controllers.perception.keypoint_detector import Keypoint
from hw_bridge.errors import HardwareError
from hw_bridge.interface import Hardware, Lifecycle
from scenarios.sensor_wrapper import CompletionSensorWrapper
from scenes.frames import invert
from twin.faults import FaultSchedule, FaultWindow

#: a keypoint outlier moves the detection by a distance drawn uniformly from this range (px), in a random direction
KEYPOINT_OUTLIER_PX = (20.0, 60.0)
#: after a stop the world runs this long (s) before the drill and the arm are judged (the servo settles in ~0.1 s)
SETTLE_S = 0.5
#: the arm holds when every true joint speed is below this (rad/s for revolute, m/s for prismatic joints)
HOLD_SPEED = 1e-4
#: the longest the checks wait (s after the stop) for timed faults to end before judging and resuming
MAX_FAULT_WAIT_S = 60.0


def fault_schedule(p: dict[str, Any], seed: int) -> FaultSchedule:
    """The ``FaultSchedule`` of the milling job parameters ``p`` (``fault_*``), its frame drops seeded by ``seed``.

    A timed fault is scheduled when its duration is > 0 (a permanent disconnection always)."""
    def window(start: str, duration: float) -> FaultWindow | None:
        return FaultWindow(float(p[start]), duration) if duration > 0.0 else None

    permanent = bool(p["fault_disconnect_permanent"])
    return FaultSchedule(
        dropped_frame_fraction=float(p["fault_dropped_frames"]),
        image_latency_s=float(p["fault_image_latency_s"]),
        joint_state_delay_s=float(p["fault_joint_delay_s"]),
        joint_state_delay=window("fault_joint_delay_start_s", float(p["fault_joint_delay_duration_s"])),
        joint_state_freeze=window("fault_joint_freeze_start_s", float(p["fault_joint_freeze_duration_s"])),
        disconnect=window("fault_disconnect_start_s",
                          float("inf") if permanent else float(p["fault_disconnect_duration_s"])),
        seed=int(seed))


class KeypointOutliers:
    """SIM-ONLY: wraps a keypoint detector; each found keypoint is, with probability ``fraction``,
    moved by ``KEYPOINT_OUTLIER_PX`` in a random direction (a wild detection). Seeded by the case."""

    def __init__(self, detector, fraction: float, rng: np.random.Generator):
        self.detector = detector
        self.config = detector.config
        self.fraction = fraction
        self.rng = rng
        self.outliers = 0

    def detect(self, image_bgr: np.ndarray) -> list[Keypoint]:
        out = self.detector.detect(image_bgr)
        if self.fraction <= 0.0:
            return out
        result = []
        for k in out:
            if k.found and self.rng.random() < self.fraction:
                angle, dist = self.rng.uniform(0.0, 2.0 * np.pi), self.rng.uniform(*KEYPOINT_OUTLIER_PX)
                k = Keypoint(k.name, k.found, k.xy_px + dist * np.array([np.cos(angle), np.sin(angle)]), k.confidence)
                self.outliers += 1
            result.append(k)
        return result


class CompletionOutliers(CompletionSensorWrapper):
    """SIM-ONLY: wraps a completion sensor; each point's reading is, with probability ``fraction``,
    replaced by a wild value, 0.0 or 1.0 with equal odds (completion units). Seeded by the case."""

    def __init__(self, sensor, fraction: float, rng: np.random.Generator):
        super().__init__(sensor)
        self.fraction = fraction
        self.rng = rng
        self.outliers = 0

    def estimate(self, frame, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        c = np.array(self.sensor.estimate(frame, probes_r, T_tool_to_r), dtype=float)
        if self.fraction > 0.0:
            wild = self.rng.random(c.shape) < self.fraction
            c[wild] = self.rng.integers(0, 2, int(wild.sum())).astype(float)
            self.outliers += int(wild.sum())
        return c


@dataclass(frozen=True)
class StopCheck:
    """What a stop left behind, from the twin's ground truth ``waited_s`` after the stop decision.

    ``drill_on``: the drill still spinning; ``max_joint_speed``: the largest true joint speed
    (rad/s or m/s); ``active``: the interface still takes commands after a safety stop (the
    safety layer must have deactivated it); ``drill_on_after_stop_s``: how long the drill really
    kept spinning after the stop decision (s; the whole wait when it still is)."""

    waited_s: float
    drill_on: bool
    max_joint_speed: float
    active: bool
    drill_on_after_stop_s: float

    @property
    def unsafe(self) -> bool:
        return self.drill_on or self.max_joint_speed > HOLD_SPEED or self.active


def _advance(hw: Hardware) -> None:
    try:
        hw.advance()
    except HardwareError:      # a pending safe stop retries on every advance; the world steps regardless
        pass


def check_stop(hw: Hardware, safety_stop: bool) -> StopCheck:
    """Run the world on after a stop (nothing commanded) and judge it from ground truth: at least
    ``SETTLE_S``, and until the schedule's timed faults have ended plus ``SETTLE_S`` (at most
    ``MAX_FAULT_WAIT_S``: a permanent fault is judged then). ``safety_stop``: the safety layer
    stopped the run (then the interface must be inactive)."""
    gt = hw.ground_truth
    t_stop = hw.now()
    sched = gt.fault_schedule
    until = t_stop + SETTLE_S
    if sched is not None and gt.cut_start_s is not None:
        until = max(until, min(gt.cut_start_s + sched.end_s + SETTLE_S, t_stop + MAX_FAULT_WAIT_S))
    drill_off_at = None if gt.drill_on else t_stop
    # While the robot cannot be reached the safety layer logs its retry of the safe stop every
    # period; the stop itself was logged: keep the case's log readable during the wait.
    hw_log = logging.getLogger("micromill.hw_bridge")
    level = hw_log.level
    hw_log.setLevel(logging.CRITICAL)
    try:
        while hw.now() < until - 1e-9:
            _advance(hw)
            if drill_off_at is None and not gt.drill_on:
                drill_off_at = hw.now()
    finally:
        hw_log.setLevel(level)
    speed = float(np.max(np.abs(gt.arm.state()[1])))
    on_for = (hw.now() if drill_off_at is None else drill_off_at) - t_stop
    return StopCheck(hw.now() - t_stop, gt.drill_on, speed, safety_stop and hw.state is Lifecycle.ACTIVE, on_for)


@dataclass(frozen=True)
class Resume:
    """The minimal resume after a stop (the milling controller has no "resume milling"):
    re-activate, drill off, retract ``retract_m`` along the window axis. ``ok``: all of that
    worked, the drill is off, no new breach, and the burr ends above the true outer surface;
    ``possible``: the faults had ended (False: a permanent one, nothing was tried);
    ``message``: what happened."""

    possible: bool
    ok: bool
    message: str


def resume_after_stop(hw: Hardware, axis_r: np.ndarray, retract_m: float) -> Resume:
    """Try the minimal resume on ``hw`` (after ``check_stop`` waited for the faults to end)."""
    gt = hw.ground_truth
    sched = gt.fault_schedule
    if sched is not None and gt.cut_start_s is not None and hw.now() < gt.cut_start_s + sched.end_s:
        return Resume(False, False, "a fault still lasts (permanent): not resumed")
    breaches = len(gt.mill.breaches)
    try:
        if hw.state is Lifecycle.ACTIVE:
            hw.deactivate()            # a controller's own stop: start the resume from a clean activation
        hw.activate()
        hw.set_drill(False, 0.0)
        loop = ControlLoop(hw)
        pc = PoseController(hw.rig)
        T = hw.rig.robot.fk(loop.state.position)
        T[:3, 3] = T[:3, 3] + retract_m * np.asarray(axis_r, float)
        moved = pc.move_to(loop, T, position_tol_m=20e-6, timeout_s=20.0)
    except HardwareError as exc:
        return Resume(True, False, f"resume stopped: {type(exc).__name__}: {exc}")
    T_r_to_s = invert(gt.T_s_to_r)
    burr_s = T_r_to_s[:3, :3] @ hw.rig.robot.tool_position(gt.arm.state()[0]) + T_r_to_s[:3, 3]
    clearance = float(burr_s[2] - gt.skull.outer_height(burr_s[:1], burr_s[1:2])[0] - hw.rig.drill.burr_radius_m)
    new_breaches = len(gt.mill.breaches) - breaches
    ok = moved.reached and not gt.drill_on and new_breaches == 0 and clearance > 0.0
    return Resume(True, ok, f"re-activated, drill off, retract {'reached' if moved.reached else 'NOT reached'}, "
                            f"burr {clearance * 1e3:.2f} mm above the bone, {new_breaches} new breach(es)")
