"""milling: the paper's Experiment 3 on the twin: a whole autonomous cranial window per case.

One case = one random skull (thickness, unevenness, pose, hardness) on the default rig. The
MSCS is calibrated once per rig, as in the lab where one calibration serves a session of
mice: the pipeline's calibration stage runs in a session of its own, seeded by the job parameter
``calibration_seed`` (not by the case), and its result is reused by every case on the same rig
in the same worker process, so results do not depend on the number of workers. Each case then
fits its own initial trajectory (with the local refinement above its window) and mills
(``controllers.pipeline.run_window`` from the fit stage on) with the
scene's camera sensor (``[controllers.perception] completion_sensor``: the completion CNN, or the
remaining-thickness classifier of issue 15), or with the SIM-ONLY oracle (``perception = "oracle"``: the twin's true
completion plus the paper's error level). The controllers' settings (window radius, camera
model, initialisation "fitted" or the prior system's "equal_height", traverse speed, ...) are the
scene's ``[controllers]`` table, which the milling suites set under ``[parameters.scene]``.

Metrics (ground truth from the twin's bone model, ``world.mill``):
- ``success``: the flap is detachable (no bridge thicker than the break threshold) and the
  membrane was never breached; ``detachable``, ``breached``, ``breaches`` (count);
- ``milling_time_min``: simulated minutes from drill on to the stop decision;
  ``complete``: 1 when the controller stopped because every c_i = 1;
- ``idle_time_s``: mean over the sampling points of the time from drill on to the first
  contact of bone at the point; ``contact_time_sd_s``: spread (sd over points) of the time
  from first contact to through (each on the point's groove cross-section, the probes the
  controller reads c_i on);
- ``max_bridge_um``: thickest bone left across the groove; ``peak_force_n``,
  ``max_deflection_um`` of the skull under the burr;
- ``perception_mae``: realised mean |c_hat - c_true| of the sensor's readings at the points
  (completion units; the paper's 24.32 % MAPE is 0.2432);
- ``realtime_factor``: simulated milling time / wall time of the milling phase;
- ``fit_height_error_rms_mm``: the fitted trajectory's surface points vs the true skull;
- ``thickness_mae_um`` (thickness sensor only): mean |t_est - t_true| (um) of the sensor's fused
  thickness readings at the points while the true thinnest bone across the point's groove
  (``PerceptionTruth.thickness_m``) is under 60 um, where the stop decision is made; the sensor
  reads at the groove's centre probe, the truth is the thinnest over the probes;
- ``loop_crops`` (job parameter ``record_loop_crops`` only, SIM-ONLY): thickness crops the case
  recorded with the twin's labels (``scenarios.loop_crops``), written to
  ``artifacts/loop_crops_caseNNN.npz`` for every case.

Faults (issue 14; the ``fault_*`` parameters, ``scenarios.fault_injection``, docs/faults.md): the
case's twin session runs under its ``FaultSchedule`` and its perception under outliers. Then:
- ``stopped``: 1 when the run did not end with every point through (a safety stop, perception
  lost, a timeout, a hardware stop before the cut); ``fault_stops``: the safety stops of the case
  (milling and resume) plus a perception-lost stop (a count);
- ``unsafe_stop``: 1 when, after a stop, the twin's ground truth shows the drill still on, or a
  joint moving faster than ``HOLD_SPEED``, or the interface still active after a safety stop,
  judged ``SETTLE_S`` after the stop or after the timed faults end (``check_stop``);
  ``drill_on_after_stop_s``: how long the drill really kept spinning after the stop decision;
- ``resumed``: 1 when a stopped run was resumed (re-activated, drill off, retracted above the
  bone without a new breach; ``resume_after_stop``); ``resume_failed``: 1 when that was tried
  (every fault had ended) and failed. Runs not stopped: both 0.
``notes["faults_fired"]`` lists the kinds that took effect, ``notes["stop"]`` the stop's reason,
``notes["resume"]`` what the resume did.

A failed case (breach, flap not detachable, or a stop other than every point through) says why
(``scenarios.failure.explain_failure``): ``notes["why"]`` in words, ``notes["failure"]`` its
fields (point, time, sizes), and its figure ``artifacts/caseNNN_failure.png`` (every failed
case, not only the first few that get the milling figure); the suite report lists each failed
case with its cause and figure.

Notes (wall seconds, for ``benchmarks.case_speed``): ``calibration_wall_s`` (about 0 once the rig's
calibration is cached), ``world_wall_s`` (the case's hardware and twin world), ``fit_wall_s``
(the fit stage), ``milling_wall_s`` (the milling stage). With the settle on (``settle_below_m``
> 0): ``speed_scale``, the planner's final speed scale (``DamperParams.lag_target_m``; 1: never
slowed), and ``lag_um``, each point's lag as its first settle measured it (um; null: not measured,
so null everywhere with a completion-only sensor, which never settles).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np

from controllers.milling import MillingReport
from controllers.planning import StopReason
from controllers.pipeline import Networks, completion_sensor, load_networks, open_session, run_window
from controllers.premeasurement import CalibrationOutcome
from controllers.settings import PerceptionSettings
from scenes.frames import apply, invert
from scenes.spec import load_scene
from scenarios.jobs.premeasurement_common import new_figure, save_figure
from scenarios.cases import CaseContext, CaseOutput, case_session
from scenarios.failure import explain_run
from scenarios.loop_crops import LoopCropRecorder
from scenarios.fault_injection import (CompletionOutliers, KeypointOutliers, check_stop, fault_schedule,
                                       resume_after_stop)
from scenarios.scoring import ScoredSensor, score_fit_heights, score_milling
from scenarios.sensor_wrapper import CompletionSensorWrapper
from twin.completion_oracle import OracleCompletionSensor, OracleErrorModel

def milling_figure(path: Path, world, report: MillingReport, title: str) -> None:
    """c_i(t) and h_i(t) per point, and the final groove (remaining thickness) with the path."""
    log = report.log.arrays()
    fig = new_figure((14, 4.4))
    t = (log["t_s"] - report.start_s) if log["t_s"].size else log["t_s"]
    cmap = __import__("matplotlib").colormaps["twilight"]
    n = report.theta_rad.size
    ax = fig.add_subplot(1, 3, 1)
    ax2 = fig.add_subplot(1, 3, 2)
    for i in range(n):
        col = cmap(i / n)
        if t.size:
            ax.plot(t, log["completion"][:, i], color=col, linewidth=0.7)
            ax2.plot(t, (log["heights_m"][:, i] - report.floor_m[i]) * 1e3, color=col, linewidth=0.7)
    ax.set(xlabel="time since drill on (s)", ylabel="c_i (filtered)", title="(a) completion level per point")
    ax2.axhline(0.0, color="red", linestyle="--", linewidth=0.8, label="virtual floor")
    ax2.set(xlabel="time since drill on (s)", ylabel="h_i above the floor (mm)",
            title="(b) planned burr height per point")
    ax2.legend(fontsize=7)
    ax3 = fig.add_subplot(1, 3, 3)
    sk = world.skull
    T_r_to_s = invert(world.T_s_to_r)
    c_s = apply(T_r_to_s, report.frame.origin_r)
    half = report.radius_m + 1.0e-3
    g = sk.grid
    j0, j1 = [int(np.clip((c_s[0] + s * half - g.x0) / g.cell, 0, g.nx)) for s in (-1, 1)]
    i0, i1 = [int(np.clip((c_s[1] + s * half - g.y0) / g.cell, 0, g.ny)) for s in (-1, 1)]
    thick = (sk.outer_z[i0:i1, j0:j1] - sk.inner_z[i0:i1, j0:j1]) * 1e3
    ext = [(g.x0 + j0 * g.cell) * 1e3, (g.x0 + j1 * g.cell) * 1e3, (g.y0 + i0 * g.cell) * 1e3,
           (g.y0 + i1 * g.cell) * 1e3]
    im = ax3.imshow(thick, origin="lower", extent=ext, cmap="magma", vmin=0.0)
    fig.colorbar(im, ax=ax3, label="remaining bone (mm)")
    pts = apply(T_r_to_s, report.points_r) * 1e3
    ax3.plot(*np.vstack([pts[:, :2], pts[:1, :2]]).T, color="cyan", linewidth=0.6, label="path")
    ax3.set(xlabel="x_S (mm)", ylabel="y_S (mm)", title="(c) final groove")
    ax3.legend(fontsize=7)
    save_figure(fig, path, title)


_RIG_KEYS = ("mscs.", "robot.", "calibration.", "sensors.", "lighting.", "control.", "controllers.premeasurement.",
             "controllers.perception.")
_calibrations: dict[tuple, CalibrationOutcome] = {}


def _rig_calibration(ctx: CaseContext, networks: Networks) -> CalibrationOutcome:
    """The rig's calibration (the pipeline's calibration stage), computed once per rig in this process.

    The key is the scene file, every override that can change the rig, its images, the
    pre-measurement settings or the networks' weights, and ``calibration_seed``; skull overrides are not part of it (the
    calibration session's skull is the scene's own, seeded by ``calibration_seed``)."""
    rig = {k: v for k, v in ctx.scene_overrides.items() if k.startswith(_RIG_KEYS)}
    seed = int(ctx.job_parameters["calibration_seed"])
    key = (str(ctx.scene_path), tuple(sorted((k, repr(v)) for k, v in rig.items())), seed)
    if key not in _calibrations:
        scene = load_scene(ctx.scene_path, rig)
        with case_session(ctx, scene, seed, tag="_rig") as hw:
            result = run_window(open_session(hw), networks, scene.controllers, until="calibration")
            if result.calibration is None:
                raise RuntimeError(f"rig calibration stopped: {result.stopped_by}")
            _calibrations[key] = result.calibration
    return _calibrations[key]


@functools.cache
def _networks(perception: PerceptionSettings, completion: bool) -> Networks:
    """The networks the scene names (with the completion CNN if ``completion``), loaded once per
    process and weights choice: they keep no state from one image to the next."""
    return load_networks(perception, completion)


class _ThicknessLog(CompletionSensorWrapper):
    """Passes a ``ThicknessCompletionSensor``'s readings through and keeps its fused thickness
    (m, (n,)) of each reading, in the order ``ScoredSensor.rows`` gets them."""

    def __init__(self, sensor):
        super().__init__(sensor)
        self.thickness_m: list[np.ndarray] = []

    def estimate(self, frame, probes_r, T_tool_to_r):
        c = self.sensor.estimate(frame, probes_r, T_tool_to_r)
        self.thickness_m.append(np.array(self.sensor.last_thickness_m, dtype=float))
        return c


#: the true thickness under which thickness readings are scored (um): the decision range
THICKNESS_SCORED_BELOW_UM = 60.0


def thickness_mae_um(readings_m: list[np.ndarray], rows) -> float:
    """Mean |t_est - t_true| (um) over the readings at points whose true thinnest bone is under
    ``THICKNESS_SCORED_BELOW_UM`` and that the sensor saw; NaN when there is none."""
    if not readings_m:
        return float("nan")
    est = np.concatenate(readings_m) * 1e6
    true = np.concatenate([r.thickness_m for r in rows]) * 1e6
    ok = np.isfinite(est) & (true < THICKNESS_SCORED_BELOW_UM)
    return float(np.mean(np.abs(est[ok] - true[ok]))) if ok.any() else float("nan")


def run_case(ctx: CaseContext) -> CaseOutput:
    import torch

    torch.set_num_threads(1)     # one core per case: suite workers would otherwise oversubscribe the CPU
    p = ctx.job_parameters
    perception = str(p["perception"])          # "cnn" | "oracle", checked when the suite loaded
    scene = load_scene(ctx.scene_path, ctx.scene_overrides)
    networks = _networks(scene.controllers.perception, perception == "cnn")
    wall0 = time.perf_counter()
    cal = _rig_calibration(ctx, networks)
    wall_cal = time.perf_counter() - wall0
    wall0 = time.perf_counter()
    with case_session(ctx, scene) as hw:
        hw.configure()                            # the world exists from here: its fault schedule before activation
        gt = hw.ground_truth
        gt.set_fault_schedule(fault_schedule(p, ctx.seed))
        kp_fraction = float(p["fault_keypoint_outliers"])
        case_networks = dataclasses.replace(
            networks, tip=KeypointOutliers(networks.tip, kp_fraction, np.random.default_rng([ctx.seed, 11])),
            cranial=KeypointOutliers(networks.cranial, kp_fraction, np.random.default_rng([ctx.seed, 12])))
        session = open_session(hw)
        wall_world, wall0 = time.perf_counter() - wall0, time.perf_counter()
        fit_scores: dict[str, float] = {}
        wall_fit = t_pre = None
        scored = None
        thickness_log = None
        recorder = None

        def on_stage(stage: str, result) -> None:
            nonlocal wall_fit, wall0, t_pre
            if stage == "fit" and result.trajectory is not None:   # scored before milling changes the bone
                fit_scores.update(score_fit_heights(gt, result.trajectory))
                wall_fit, wall0, t_pre = time.perf_counter() - wall0, time.perf_counter(), hw.now()

        def make_sensor(surface, model):
            nonlocal scored, thickness_log
            if perception == "cnn":
                sensor = completion_sensor(networks, hw.rig.drill, scene.controllers)(surface, model)
                if scene.controllers.perception.completion_sensor == "thickness":
                    sensor = thickness_log = _ThicknessLog(sensor)
            else:
                error = OracleErrorModel(mae=float(p["oracle_mae"]), kind=str(p["oracle_error"]),
                                         end_exponent=float(p["oracle_end_exponent"]), rho=float(p["oracle_rho"]))
                sensor = OracleCompletionSensor(gt, error, np.random.default_rng([ctx.seed, 7]))
            sensor = CompletionOutliers(sensor, float(p["fault_completion_outliers"]),
                                        np.random.default_rng([ctx.seed, 13]))
            scored = ScoredSensor(sensor, gt)
            if not p["record_loop_crops"]:
                return scored
            nonlocal recorder
            recorder = LoopCropRecorder(scored, model, surface.trajectory.T_mi_to_r, hw.rig.drill, ctx.index,
                                        np.random.default_rng([ctx.seed, 17]))
            return recorder

        result = run_window(session, case_networks, scene.controllers, calibration=cal, make_sensor=make_sensor,
                            on_stage=on_stage)
        if result.trajectory is None:
            why = result.surface.failure if result.surface is not None else result.stopped_by
            raise RuntimeError(f"pre-measurement failed: {why}")
        if result.milling is None:          # a hardware stop outside the milling loop (e.g. on the approach)
            raise RuntimeError(f"milling stopped without a report: {result.stopped_by}")
        report = result.milling
        wall = time.perf_counter() - wall0
        safety_stop = report.stop_reason is StopReason.SAFETY_FAULT
        stopped = report.stop_reason is not StopReason.COMPLETE
        fault_stops = int(safety_stop or report.stop_reason is StopReason.PERCEPTION_LOST)
        stop_check = check_stop(hw, safety_stop) if stopped else None
        resume = resume_after_stop(hw, report.frame.axis_r, scene.controllers.milling.retract_m) if stopped else None
        if resume is not None and resume.possible and not resume.ok and hw.fault is not None:
            fault_stops += 1                      # the resume itself was stopped by the safety layer
        gt.set_fault_schedule(None)               # the connection back, so that the session closes cleanly
        m = score_milling(gt, report)
        m["perception_mae"] = scored.mae()
        m["fit_height_error_rms_mm"] = fit_scores["height_error_rms_mm"]
        if thickness_log is not None:
            m["thickness_mae_um"] = thickness_mae_um(thickness_log.thickness_m, scored.rows)
        m["realtime_factor"] = (hw.now() - t_pre) / wall
        m["floor_clamps"] = float(report.floor_clamps)
        m.update({"stopped": float(stopped), "fault_stops": float(fault_stops),
                  "unsafe_stop": float(stop_check is not None and stop_check.unsafe),
                  "drill_on_after_stop_s": 0.0 if stop_check is None else stop_check.drill_on_after_stop_s,
                  "resumed": float(resume is not None and resume.ok),
                  "resume_failed": float(resume is not None and resume.possible and not resume.ok)})
        artifacts = []
        if recorder is not None:                  # every case, not only the first few: they are training data
            artifacts.append(f"artifacts/{recorder.save(ctx.artifacts_dir).name}")
            m["loop_crops"] = float(recorder.recorded)
        if ctx.save_artifacts:
            path = Path(ctx.artifacts_dir) / f"case{ctx.index:03d}_milling.png"
            milling_figure(path, gt, report, f"case {ctx.index}: {report.stop_reason.value}, "
                            f"{m['milling_time_min']:.2f} min, success {bool(m['success'])}, "
                            f"max bridge {m['max_bridge_um']:.0f} um, breaches {int(m['breaches'])}")
            artifacts.append(f"artifacts/{path.name}")
        path = Path(ctx.artifacts_dir) / f"case{ctx.index:03d}_failure.png"   # every failed case, not only the first few
        cause = explain_run(gt, report, scored.rows, scene.controllers.milling.damper.through_level, path,
                            title_prefix=f"case {ctx.index}")
        if cause is not None:
            artifacts.append(f"artifacts/{path.name}")
        first = gt.mill.breaches[0] if gt.mill.breaches else None    # what MillOutcome.first_breach holds
        notes = {"stop": report.message, "first_breach": repr(first), "faults_fired": sorted(gt.faults_fired),
                 "keypoint_outliers": sum(n.outliers for n in (case_networks.tip, case_networks.cranial)),
                 "completion_outliers": scored.sensor.outliers}
        if stop_check is not None:
            notes["stop_check"] = (f"{stop_check.waited_s:.2f} s after the stop: drill {'ON' if stop_check.drill_on else 'off'}"
                                   f", max joint speed {stop_check.max_joint_speed:.2e}, interface "
                                   f"{'ACTIVE' if stop_check.active else 'ok'}")
        if resume is not None:
            notes["resume"] = resume.message
        if cause is not None:
            notes.update({"why": cause.text, "failure": cause.as_notes(report.start_s)})
        if report.lag_m is not None:
            notes["speed_scale"] = report.speed_scale
            notes["lag_um"] = [round(float(v) * 1e6, 1) if np.isfinite(v) else None for v in report.lag_m]
        notes.update({"simulated_time_s": hw.now(), "calibration_wall_s": wall_cal, "world_wall_s": wall_world,
                      "fit_wall_s": wall_fit, "milling_wall_s": wall})
        return CaseOutput(metrics=m, artifacts=artifacts, notes=notes)
