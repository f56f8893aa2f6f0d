"""milling: the paper's Experiment 3 on the twin: a whole autonomous cranial window per case.

One case = one random skull (thickness, unevenness, pose, hardness) on the default rig. The
MSCS is calibrated once per rig, as in the lab where one calibration serves a session of
mice: ``calibrate_mscs`` runs in a session of its own, seeded by the job parameter
``calibration_seed`` (not by the case), and its result is reused by every case on the same rig
in the same worker process, so results do not depend on the number of workers. Each case then
fits its own initial trajectory (``fit_window_trajectory``, with the local refinement above
its window) and mills (``controllers.milling.mill_window``) with the
completion CNN, or with the SIM-ONLY oracle (``perception = "oracle"``: the twin's true
completion plus the paper's error level), and with the fitted or the prior system's
equal-height initialisation.

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
- ``fit_height_error_rms_mm``: the fitted trajectory's surface points vs the true skull.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from controllers.completion_sensing import CameraCompletionSensor
from controllers.milling import MillingReport, MillingSettings, mill_window
from controllers.perception.completion_detector import load_estimator
from controllers.perception.keypoint_detector import load_detector
from controllers.planning import StopReason
from controllers.premeasurement import calibrate_mscs, fit_window_trajectory
from controllers.reconstruction import estimate_camera_model
from controllers.surface_fit import FittedTrajectory
from scenes.frames import apply, invert
from scenes.spec import load_scene
from scenarios.jobs.premeasurement_common import new_figure, open_session, save_figure, settings_from_job
from scenarios.runner import CaseContext, CaseOutput, case_hardware
from twin.completion_oracle import OracleCompletionSensor, OracleErrorModel, true_cross_section_completion

NAN = float("nan")
PERCEPTIONS = ("cnn", "oracle")


class ScoredSensor:
    """SIM-ONLY scoring wrapper: passes the sensor's readings through unchanged and keeps the
    true completion at the same points and moment beside them."""

    def __init__(self, sensor, world):
        self.sensor = sensor
        self.uses_images = sensor.uses_images
        self.world = world
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def estimate(self, frame, probes_r, T_tool_to_r):
        c = self.sensor.estimate(frame, probes_r, T_tool_to_r)
        self.pairs.append((np.asarray(c, float), true_cross_section_completion(self.world, probes_r)))
        return c

    def mae(self) -> float:
        if not self.pairs:
            return NAN
        est = np.concatenate([p[0] for p in self.pairs])
        true = np.concatenate([p[1] for p in self.pairs])
        ok = np.isfinite(est)
        return float(np.mean(np.abs(est[ok] - true[ok]))) if ok.any() else NAN


def ideal_trajectory(world, radius_m: float = 2e-3, n: int = 32, offset_m: float = 1e-3,
                     centre_ratio: float = 1.0 / 3.0) -> FittedTrajectory:
    """GROUND TRUTH (twin): the trajectory a perfect pre-measurement would fit (true surface points
    and normals, {Mi} = {R}). For benchmarks and tests that study milling alone."""
    sk, T = world.skull, world.T_s_to_r
    c_s = sk.bregma_s + centre_ratio * (sk.lambda_s - sk.bregma_s)
    c_s[2] = sk.outer_height(c_s[0], c_s[1])
    th = 2 * np.pi * np.arange(n) / n
    pts_s = np.stack([c_s[0] + radius_m * np.cos(th), c_s[1] + radius_m * np.sin(th), np.zeros(n)], axis=1)
    pts_s[:, 2] = sk.outer_height(pts_s[:, 0], pts_s[:, 1])
    pf = apply(T, pts_s)
    nr = sk.outer_normal(pts_s[:, 0], pts_s[:, 1]) @ T[:3, :3].T
    c_r = apply(T, c_s)
    return FittedTrajectory(np.full(2, np.nan), c_r, radius_m, offset_m, pf, nr, pf + offset_m * nr, pf,
                            pf + offset_m * nr, nr, np.zeros(n, int), np.zeros(n), np.eye(4))


def ideal_camera(world, trajectory: FittedTrajectory):
    """GROUND TRUTH (twin): the stereo model and {Mi} -> {R} a perfect calibration would find near
    the window (fitted to the true projections of a 5x5x3 grid around it). With
    ``ideal_trajectory``, for benchmarks and tests of the milling loop with the CNN."""
    g = np.stack(np.meshgrid(*(np.linspace(-h, h, k) for h, k in ((3e-3, 5), (3e-3, 5), (1e-3, 3))),
                             indexing="ij"), axis=-1).reshape(-1, 3) + trajectory.centre_mi
    fit = estimate_camera_model(world.cameras[0].project(g), world.cameras[1].project(g), g)
    return fit.model, fit.T_mi_to_r


def milling_settings_from_job(p: dict) -> MillingSettings:
    return MillingSettings(initialisation=str(p["initialisation"]),
                           traverse_speed_m_s=float(p["traverse_speed_mm_s"]) * 1e-3)


def score_milling(world, report: MillingReport) -> dict[str, float]:
    """GROUND TRUTH (twin): outcome and per-point timing of a milling run."""
    mill = world.mill
    T_r_to_s = invert(world.T_s_to_r)
    centre_s = apply(T_r_to_s, report.frame.origin_r)
    outcome = mill.outcome(centre_s[:2], report.radius_m)
    n, k = report.probes_r.shape[:2]
    pr_s = apply(T_r_to_s, report.probes_r.reshape(-1, 3))
    g = world.skull.grid
    rows = np.clip(np.round((pr_s[:, 1] - g.y0) / g.cell).astype(int), 0, g.ny - 1)
    cols = np.clip(np.round((pr_s[:, 0] - g.x0) / g.cell).astype(int), 0, g.nx - 1)
    with warnings.catch_warnings():    # per sampling point: the earliest over its cross-section probes
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN: never touched / never through
        first = np.nanmin(mill.first_contact_s[rows, cols].astype(float).reshape(n, k), axis=1)
        through = np.nanmin(mill.through_s[rows, cols].astype(float).reshape(n, k), axis=1)
    idle = first - report.start_s
    contact = through - first
    return {
        "success": float(outcome.detachable and outcome.breaches == 0),
        "detachable": float(outcome.detachable),
        "breached": float(outcome.breaches > 0),
        "breaches": float(outcome.breaches),
        "complete": float(report.stop_reason is StopReason.COMPLETE),
        "milling_time_min": report.duration_s / 60.0,
        "idle_time_s": float(np.nanmean(idle)) if np.isfinite(idle).any() else NAN,
        "contact_time_sd_s": float(np.nanstd(contact, ddof=1)) if np.isfinite(contact).sum() > 1 else NAN,
        "max_bridge_um": outcome.max_bridge_m * 1e6,
        "peak_force_n": outcome.peak_force_n,
        "max_deflection_um": outcome.max_deflection_m * 1e6,
    }


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


_RIG_KEYS = ("mscs.", "robot.", "calibration.", "sensors.", "lighting.", "control.")
_calibrations: dict[tuple, object] = {}


def _rig_calibration(ctx: CaseContext, tip, settings):
    """The rig's calibration (``calibrate_mscs``), computed once per rig in this process.

    The key is the scene file, every override that can change the rig or its images, the
    camera-model setting and ``calibration_seed``; skull overrides are not part of it (the
    calibration session's skull is the scene's own, seeded by ``calibration_seed``)."""
    rig = {k: v for k, v in ctx.scene_overrides.items() if k.startswith(_RIG_KEYS)}
    seed = int(ctx.job_parameters["calibration_seed"])
    key = (str(ctx.scene_path), tuple(sorted((k, repr(v)) for k, v in rig.items())), settings.camera_model, seed)
    if key not in _calibrations:
        scene = load_scene(ctx.scene_path, rig)
        hw = case_hardware(ctx, scene, seed, tag="_rig")
        try:
            s = open_session(hw)
            _calibrations[key] = calibrate_mscs(hw, s.pc, tip, s.setpoints_r, s.R_tool_to_r, settings)
        finally:
            hw.close()
    return _calibrations[key]


def run_case(ctx: CaseContext) -> CaseOutput:
    import torch

    torch.set_num_threads(1)     # one core per case: suite workers would otherwise oversubscribe the CPU
    p = ctx.job_parameters
    perception = str(p["perception"])
    if perception not in PERCEPTIONS:
        raise ValueError(f"job parameter perception={perception!r}: allowed {', '.join(PERCEPTIONS)}")
    scene = load_scene(ctx.scene_path, ctx.scene_overrides)
    tip = load_detector("drill_tip", expected_target="drill_tip")
    cranial = load_detector("cranial", expected_target="cranial")
    settings = settings_from_job(p)
    msettings = milling_settings_from_job(p)
    wall0 = time.perf_counter()
    cal = _rig_calibration(ctx, tip, settings)
    wall_cal = time.perf_counter() - wall0
    hw = case_hardware(ctx, scene)
    try:
        s = open_session(hw)
        gt = hw.ground_truth
        park = s.setpoints_r.mean(axis=0) + np.array(settings.park_offset_r_m)
        fit = fit_window_trajectory(hw, s.pc, cranial, cal.model, cal.calibration.T_mi_to_r, park, s.R_tool_to_r,
                                    settings, tip_detector=tip)
        if fit.trajectory is None:
            raise RuntimeError(f"pre-measurement failed: {fit.failure}")
        traj = fit.trajectory
        p_s = apply(invert(gt.T_s_to_r), traj.points_fit_r)          # scored before milling changes the bone
        fit_error = p_s[:, 2] - gt.skull.outer_height(p_s[:, 0], p_s[:, 1])
        model = fit.local_fit.model if fit.local_fit is not None else cal.model
        if perception == "cnn":
            sensor = CameraCompletionSensor(load_estimator(), model, traj.T_mi_to_r,
                                            apply(traj.T_mi_to_r, traj.centre_mi), scene.drill)
        else:
            sensor = OracleCompletionSensor(gt, OracleErrorModel(mae=float(p["oracle_mae"])),
                                            np.random.default_rng([ctx.seed, 7]))
        scored = ScoredSensor(sensor, gt)
        t_pre = hw.now()
        wall_fit = time.perf_counter() - wall0 - wall_cal
        wall0 = time.perf_counter()
        report = mill_window(hw, s.pc, traj, scored, msettings)
        wall = time.perf_counter() - wall0
        m = score_milling(gt, report)
        m["perception_mae"] = scored.mae()
        m["fit_height_error_rms_mm"] = float(np.sqrt(np.mean(fit_error ** 2))) * 1e3
        m["realtime_factor"] = (hw.now() - t_pre) / wall
        m["floor_clamps"] = float(report.floor_clamps)
        artifacts = []
        if ctx.save_artifacts:
            path = Path(ctx.artifacts_dir) / f"case{ctx.index:03d}_milling.png"
            milling_figure(path, gt, report, f"case {ctx.index}: {report.stop_reason.value}, "
                            f"{m['milling_time_min']:.2f} min, success {bool(m['success'])}, "
                            f"max bridge {m['max_bridge_um']:.0f} um, breaches {int(m['breaches'])}")
            artifacts.append(f"artifacts/{path.name}")
        first = gt.mill.breaches[0] if gt.mill.breaches else None    # what MillOutcome.first_breach holds
        return CaseOutput(metrics=m, artifacts=artifacts,
                          notes={"stop": report.message, "first_breach": repr(first),
                                 "simulated_time_s": hw.now(), "calibration_wall_s": wall_cal,
                                 "fit_wall_s": wall_fit, "milling_wall_s": wall})
    finally:
        hw.close()
