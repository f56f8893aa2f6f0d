"""Closed-loop milling of the cranial window (paper section IV, Fig. 2 right), through ``hw_bridge``.

``mill_window`` runs, at the hardware's fixed control period:

- **Path geometry** (``WindowFrame``): the window axis is the mean fitted surface normal; the
  burr circles at the fitted radius around the fitted centre, point i at angle 2 pi i / n
  (counter-clockwise seen from above); each point's burr-centre height along the axis is the
  planner's h_i, smoothed around the circle by the planner's closed constrained spline.
- **Perception** every ``perception_period_s``: the newest stereo frame goes to the
  completion sensor (the CNN, or the sim-only oracle in studies) with the tool pose at the
  frame's exposure (from the loop's own joint-state history); the first
  ``skip_after_pass_readings`` valid readings of a point after each pass of the burr over it
  (``passes_over``: the burr's centre half a burr width past it) are left out (the thickness
  classifier reads them ~15 um thin, which declared points with 20-25 um of bone left through);
  a per-point median filter; the
  planner's velocity damper lowers each h_i by its speed times the time since the last update.
  c_i is the level of the groove's *cross-section* at point i: the highest level among
  ``cross_section_probes`` probes across the groove (+-``cross_section_half_width_m``). On a
  sloping skull a sphere burr cuts through on the uphill side of its groove first (by
  ~slope^2 * rd / 2 deeper: 10 um at a 0.2 slope); judging a point by its centre line alone
  kept the burr descending there and breached the membrane with perfect perception. The flap
  only needs one through line across the groove to come free. A thickness sensor's readings go
  to the planner too, with the pass counts, for its settle (``DamperParams.settle_below_m``).
- **Motion**: ``MillingMotionController`` (DQ Robotics QP) follows the spline at
  ``traverse_speed_m_s`` and never commands the burr below the virtual floor
  ``floor_i = h(surface_i) - max_plausible_thickness - floor_fit_margin + burr_radius``
  (the margin for the fit's own error: without it a point whose surface was fitted ~0.2 mm
  too high sat on the floor above its bone's bottom until the timeout).
- **Stop** (``StopMonitor``): every point through (COMPLETE), ``timeout_s``, no valid
  completion reading for ``perception_timeout_s`` (PERCEPTION_LOST), or a command refused by
  ``hw_bridge`` (SAFETY_FAULT). On any stop: the drill is switched off at once, then the burr
  retracts ``retract_m`` along the axis.

Controllers only: joint states, images and timestamps come from ``hw``; no ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from controllers.completion_sensing import CompletionFilter, CompletionSensor
from controllers.control_loop import ControlLoop
from controllers.motion.milling_control import MillingMotionController, VirtualFloor, WindowFrame
from controllers.motion.pose_control import PoseController
from controllers.planning import MillingPlanner, StopMonitor, StopReason
from controllers.surface_fit import FittedTrajectory
from controllers.settings import MillingSettings, MillingSetupError  # noqa: F401 (MillingSetupError re-exported)
from hw_bridge.errors import HardwareError
from hw_bridge.interface import Lifecycle
from scenes.frames import apply, make_transform


@dataclass
class MillingLog:
    """What the loop saw and decided, one row per perception update (times in the hw clock, s)."""

    t_s: list[float] = field(default_factory=list)
    completion: list[np.ndarray] = field(default_factory=list)    # filtered c_i used by the planner
    raw_completion: list[np.ndarray] = field(default_factory=list)  # sensor output (NaN: unseen)
    heights_m: list[np.ndarray] = field(default_factory=list)     # planner h_i
    burr_r: list[np.ndarray] = field(default_factory=list)        # measured burr centre (m, {R})

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k)) for k in ("t_s", "completion", "raw_completion",
                                                          "heights_m", "burr_r")}


@dataclass
class MillingReport:
    stop_reason: StopReason
    message: str
    start_s: float            # drill on, first milling period
    stop_s: float             # stop decided
    frame: WindowFrame
    radius_m: float
    theta_rad: np.ndarray     # sampling point angles (rad)
    points_r: np.ndarray      # sampling points on the fitted surface (m, {R})
    probes_r: np.ndarray      # (n, k, 3) probe points across the groove at each sampling point
    floor_m: np.ndarray       # virtual floor per point (m, along the axis)
    initial_heights_m: np.ndarray
    final_heights_m: np.ndarray
    done: np.ndarray
    floor_clamps: int
    log: MillingLog
    speed_scale: float = 1.0  # the planner's final speed scale (1: never slowed for lag)
    lag_m: np.ndarray | None = None  # each point's lag from its first settle (m, NaN: none); None: no settle

    @property
    def duration_s(self) -> float:
        return self.stop_s - self.start_s


def plan_geometry(traj: FittedTrajectory, settings: MillingSettings, burr_radius_m: float):
    """Window frame, radius, and along the axis: initial heights, floors and fitted surface heights."""
    centre_r = apply(traj.T_mi_to_r, traj.centre_mi)
    frame = WindowFrame.from_points(centre_r, traj.points_fit_r, traj.normals_r)
    if frame.angle_of(traj.points_fit_r[1]) > np.pi:        # make the points run counter-clockwise
        frame = WindowFrame(frame.origin_r, frame.axis_r, frame.e1_r, -frame.e2_r)
    w_fit = frame.to_window(traj.points_fit_r)
    radius = float(np.mean(np.hypot(w_fit[:, 0], w_fit[:, 1])))
    h_ini = frame.to_window(traj.points_ini_r)[:, 2]
    floor = w_fit[:, 2] - settings.max_plausible_thickness_m - settings.floor_fit_margin_m + burr_radius_m
    if not np.all(np.isfinite(h_ini)) or np.any(h_ini <= floor):
        raise MillingSetupError("fitted trajectory: initial heights must be finite and above the virtual floor")
    return frame, radius, h_ini, floor, w_fit[:, 2]


def mill_window(loop: ControlLoop, pc: PoseController, traj: FittedTrajectory, sensor: CompletionSensor,
                settings: MillingSettings = MillingSettings(),
                progress: Callable[[float, int, int], None] | None = None) -> MillingReport:
    """Mill the window on ``traj`` until every point is through (or another stop); ``loop.hw`` active."""
    hw, drill = loop.hw, loop.rig.drill
    if settings.drill_speed_rpm > drill.max_speed_rpm:
        raise MillingSetupError(f"MillingSettings.drill_speed_rpm={settings.drill_speed_rpm!r}: the drill's "
                                f"maximum is {drill.max_speed_rpm:g} rpm")
    frame, radius, h_ini, floor_h, h_surface = plan_geometry(traj, settings, drill.burr_radius_m)
    make = MillingPlanner.from_fitted if settings.initialisation == "fitted" else MillingPlanner.equal_height
    planner = make(h_ini, floor_h, settings.damper)
    theta_i = planner.theta_rad
    floor = VirtualFloor(frame, theta_i, floor_h)
    points_r = np.array([frame.point(t, radius, h) for t, h in zip(theta_i, h_surface)])
    offsets = np.linspace(-settings.cross_section_half_width_m, settings.cross_section_half_width_m,
                          settings.cross_section_probes)
    probes_r = np.array([[frame.point(t, radius + o, h) for o in offsets] for t, h in zip(theta_i, h_surface)])
    robot = loop.rig.robot
    R_tool = robot.fk(loop.state.position)[:3, :3]

    # Approach: above point 0, drill still off.
    start = frame.point(0.0, radius, planner.heights_m[0] + settings.approach_clearance_m)
    moved = pc.move_to(loop, make_transform(R_tool, start), timeout_s=60.0)
    if not moved.reached:
        raise MillingSetupError(f"could not reach the start above point 0 (error {moved.position_error_m*1e3:.3f} mm)")
    mc = MillingMotionController(loop.rig, floor, R_tool, settings.control)
    filt = CompletionFilter(planner.n_points, settings.filter_window)
    log = MillingLog()
    hw.set_drill(True, settings.drill_speed_rpm)
    t0 = hw.now()
    monitor = StopMonitor(settings.timeout_s, settings.perception_timeout_s, start_s=t0)
    omega = settings.traverse_speed_m_s / radius
    pass_rad = drill.burr_radius_m / radius        # a pass over a point ends when the burr has left it
    after_pass = AfterPassReadings(planner.n_points, settings.skip_after_pass_readings)
    theta, last_update, last_valid, last_index = 0.0, t0, None, -1
    spline = planner.path()
    fault: str | None = None
    reason: StopReason | None = None
    while reason is None:
        try:
            now = hw.now()
            if now - last_update >= settings.perception_period_s - 1e-9:
                f = hw.grab_stereo() if sensor.uses_images else None
                if not sensor.uses_images or (f is not None and f.index != last_index):
                    stamp = loop.state.stamp_s if f is None else f.stamp_s
                    last_index = -1 if f is None else f.index
                    raw = np.asarray(sensor.estimate(f, probes_r, robot.fk(loop.q_at(stamp))), dtype=float)
                    if np.any(np.isfinite(raw)):
                        last_valid = now
                    passes = passes_over(theta, theta_i, pass_rad)
                    fresh = after_pass.update(passes, np.isfinite(raw))
                    c = filt.update(np.where(fresh, np.nan, raw))
                    thickness = sensor.last_thickness_m
                    if thickness is not None:
                        thickness = np.where(fresh, np.nan, np.asarray(thickness, dtype=float))
                    planner.update(np.clip(c, 0.0, 1.0), now - last_update, thickness,
                                   None if thickness is None else passes)
                    last_update = now
                    spline = planner.path()
                    log.t_s.append(now)
                    log.raw_completion.append(raw)
                    log.completion.append(c)
                    log.heights_m.append(planner.heights_m)
                    log.burr_r.append(robot.tool_position(loop.state.position))
                    hw.publish_decision("milling/update", completion=c, heights_m=planner.heights_m,
                                        done=planner.done)
                    if progress is not None:
                        progress(now - t0, int(planner.done.sum()), planner.n_points)
            theta += omega * loop.period_s
            h, dh = spline.value_and_derivative(theta)
            target = frame.point(theta, radius, h)
            tangent = -np.sin(theta) * frame.e1_r + np.cos(theta) * frame.e2_r
            velocity = omega * (radius * tangent + dh * frame.axis_r)
            loop.command(mc.command(loop.state.position, loop.q_cmd, target, velocity))
        except HardwareError as exc:     # the safety layer stopped the robot: keep the report
            fault = f"{type(exc).__name__}: {exc}"
        reason = monitor.check(hw.now(), last_valid, planner.all_done, fault)
    stop_s = hw.now()
    message = _stop(loop, pc, frame, settings, reason, fault)
    hw.publish_decision("milling/stop", reason=reason.value, message=message, points_done=int(planner.done.sum()))
    return MillingReport(reason, message, t0, stop_s, frame, radius, theta_i, points_r, probes_r, floor_h, h_ini,
                         planner.heights_m, planner.done, mc.floor_clamps, log, planner.speed_scale,
                         planner.lag_m if settings.damper.settle_levels_m else None)


def passes_over(theta_rad: float, theta_i_rad: np.ndarray, half_width_rad: float) -> np.ndarray:
    """How many times the burr, at the angle ``theta_rad`` (rad, from 0 at the start, increasing)
    around the circle, has passed over each point at ``theta_i_rad`` (rad, in [0, 2 pi)): a pass
    ends when the burr's centre is ``half_width_rad`` (its radius over the circle's) beyond it."""
    laps = np.floor((theta_rad - np.asarray(theta_i_rad, dtype=float) - half_width_rad) / (2.0 * np.pi)) + 1.0
    return np.maximum(laps, 0.0).astype(np.int64)


class AfterPassReadings:
    """Marks each point's first ``skip`` valid readings after every pass of the burr over it."""

    def __init__(self, n: int, skip: int):
        self.skip = int(skip)
        self._passes = np.zeros(n, dtype=np.int64)
        self._seen = np.zeros(n, dtype=np.int64)      # valid readings of each point since its last pass

    def update(self, passes: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``passes`` (n,) the pass counts now (``passes_over``), ``valid`` (n,) bool the points
        read this time; returns (n,) bool: the valid readings to leave out."""
        passes = np.asarray(passes, dtype=np.int64)
        valid = np.asarray(valid, dtype=bool)
        self._seen = np.where(passes > self._passes, 0, self._seen) + valid
        self._passes = passes
        return valid & (self._seen <= self.skip)


def _stop(loop: ControlLoop, pc: PoseController, frame: WindowFrame, settings: MillingSettings,
          reason: StopReason, fault: str | None) -> str:
    """Drill off at once; then retract along the axis (skipped after a safety fault: hold; the
    safety layer has already switched the drill off and deactivated the interface)."""
    hw = loop.hw
    if reason is StopReason.SAFETY_FAULT:
        if hw.state is Lifecycle.ACTIVE:
            hw.set_drill(False, 0.0)
        return f"safety fault: {fault}; drill off, holding position"
    hw.set_drill(False, 0.0)
    T = loop.rig.robot.fk(loop.state.position)
    T[:3, 3] = T[:3, 3] + settings.retract_m * frame.axis_r
    moved = pc.move_to(loop, T, position_tol_m=20e-6, timeout_s=20.0)
    return f"{reason.value}; drill off, retracted {settings.retract_m*1e3:.1f} mm" + ("" if moved.reached else
                                                                                        " (retract incomplete)")
