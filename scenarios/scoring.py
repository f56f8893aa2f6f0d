"""GROUND TRUTH scoring against the twin, in one place: what the demo, the jobs, the benchmarks
and the tests use to judge the controllers' results (``controllers.pipeline.WindowResult``).

Everything here reads the twin's true world (``world``: ``hw.ground_truth``): the true skull,
cameras, joint history and bone model. Controllers never see it. Units: metrics in the units
their names say (mm, um, px, deg, min); otherwise SI.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from controllers.milling import MillingReport
from controllers.planning import StopReason
from controllers.premeasurement import SurfaceOutcome
from controllers.reconstruction import estimate_camera_model
from controllers.surface_fit import FittedTrajectory, trajectory_centre_px
from scenarios.sensor_wrapper import CompletionSensorWrapper
from scenes.frames import apply, invert
from twin.completion_oracle import true_cross_section_completion

NAN = float("nan")


def rms(x) -> float:
    """Root mean square; NaN for an empty input."""
    x = np.asarray(x, float)
    return float(np.sqrt(np.mean(x ** 2))) if x.size else NAN


def true_tip_projections(world, robot, stamp_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true burr centre at a frame's exposure, projected into both cameras. Call it right
    after grabbing the frame: the twin keeps only a short joint history."""
    p = robot.fk(world.true_q_at(stamp_s))[:3, 3]
    return p, world.cameras[0].project(p)[0], world.cameras[1].project(p)[0]


def true_window_centre_s(world, centre_ratio: float) -> np.ndarray:
    """The true window centre on the outer surface, in {S} (m): bregma + l (lambda - bregma)."""
    sk = world.skull
    c_s = sk.bregma_s + centre_ratio * (sk.lambda_s - sk.bregma_s)
    c_s[2] = sk.outer_height(c_s[0], c_s[1])
    return c_s


def trajectory_height_errors(world, traj: FittedTrajectory) -> tuple[np.ndarray, np.ndarray]:
    """The fitted surface points in {S} and their height errors (m) against the true outer
    surface at the same (x, y), along {S} z. Score before milling changes the surface."""
    p_s = apply(invert(world.T_s_to_r), traj.points_fit_r)
    return p_s, p_s[:, 2] - world.skull.outer_height(p_s[:, 0], p_s[:, 1])


def score_fit_heights(world, traj: FittedTrajectory) -> dict[str, float]:
    """``height_error_rms_mm`` and ``height_error_max_mm`` of a fitted trajectory."""
    dz = trajectory_height_errors(world, traj)[1]
    return {"height_error_rms_mm": rms(dz) * 1e3, "height_error_max_mm": float(np.abs(dz).max()) * 1e3}


def score_keypoints(world, surface: SurfaceOutcome, centre_ratio: float):
    """Detected vs true bregma, lambda and window-centre projections over both images.

    Returns the metrics ``bregma_rmse_px``, ``lambda_rmse_px``, ``centre_rmse_px`` (NaN unless
    found in both images) and, for figures, the left image's true and detected pixels."""
    sk, T_s_to_r, l = world.skull, world.T_s_to_r, centre_ratio
    true_3d = {"bregma": apply(T_s_to_r, sk.bregma_s), "lambda": apply(T_s_to_r, sk.lambda_s)}
    errs = {"bregma": [], "lambda": [], "centre": []}
    kp_true_left, kp_det_left = {}, {}
    for cam, kps in zip(world.cameras, (surface.keypoints_left, surface.keypoints_right)):
        uv = {n: cam.project(x)[0] for n, x in true_3d.items()}
        uv["centre"] = trajectory_centre_px(uv["bregma"], uv["lambda"], l)
        det = {k.name: k.xy_px for k in kps}
        det["centre"] = (trajectory_centre_px(det["bregma"], det["lambda"], l)
                         if det["bregma"] is not None and det["lambda"] is not None else None)
        for n in errs:
            if det[n] is not None:
                errs[n].append(float(np.linalg.norm(det[n] - uv[n])))
        if cam is world.cameras[0]:
            kp_true_left, kp_det_left = uv, det
    metrics = {f"{n}_rmse_px": rms(e) if len(e) == 2 else NAN for n, e in errs.items()}
    return metrics, kp_true_left, kp_det_left


def score_surface_fit(world, surface: SurfaceOutcome, T_final_mi_to_r: np.ndarray, centre_ratio: float):
    """Height, normal and centre errors of the final (and provisional) trajectory.

    Returns the metrics (NaN where no trajectory) and the true surface heights in {R} (mm) at the
    fitted points, for figures (None without a trajectory)."""
    m = {"height_error_rms_mm": NAN, "height_error_provisional_rms_mm": NAN, "height_error_max_mm": NAN,
         "normal_error_mean_deg": NAN, "normal_error_max_deg": NAN, "centre_3d_error_mm": NAN}
    if surface.provisional is not None:
        m["height_error_provisional_rms_mm"] = rms(trajectory_height_errors(world, surface.provisional)[1]) * 1e3
    traj = surface.trajectory
    if traj is None:
        return m, None
    sk, T_s_to_r = world.skull, world.T_s_to_r
    pf_s, dz = trajectory_height_errors(world, traj)
    n_s = traj.normals_r @ T_s_to_r[:3, :3]        # {R} -> {S}: R^T n
    n_true = sk.outer_normal(pf_s[:, 0], pf_s[:, 1])
    ang = np.degrees(np.arccos(np.clip(np.sum(n_s * n_true, axis=1), -1.0, 1.0)))
    c_s = true_window_centre_s(world, centre_ratio)
    c_fit_s = apply(invert(T_s_to_r), apply(T_final_mi_to_r, traj.centre_mi))
    m.update(score_fit_heights(world, traj))
    m.update({"normal_error_mean_deg": float(ang.mean()), "normal_error_max_deg": float(ang.max()),
              "centre_3d_error_mm": float(np.linalg.norm(c_fit_s - c_s)) * 1e3})
    true_z_r_mm = apply(T_s_to_r, np.column_stack([pf_s[:, :2], pf_s[:, 2] - dz]))[:, 2] * 1e3
    return m, true_z_r_mm


def score_milling(world, report: MillingReport) -> dict[str, float]:
    """Outcome and per-point timing of a milling run (see ``scenarios.jobs.milling`` for each metric)."""
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


@dataclass(frozen=True, eq=False)
class PerceptionTruth:
    """GROUND TRUTH beside one completion reading, taken at the same moment (twin only).

    ``t_s`` (s): the twin's clock at the reading, which is the hardware clock the milling loop
    logs (``MillingLog.t_s`` of the same update). Per sampling point i (arrays of n):
    ``c_read`` the sensor's raw output (NaN: unseen); ``c_true`` the true cross-section completion
    (the highest over the point's probes, as the controller reads it); ``groove_s`` (n, 3) (m, {S})
    the lowest point of the bone's outer surface over the point's probes (the groove bottom the
    burr has really reached there); ``inner_z_s`` (n,) (m, {S} z) the inner surface under that
    probe; ``thickness_m`` (n,) the thinnest bone left over the probes (0: through)."""

    t_s: float
    c_read: np.ndarray
    c_true: np.ndarray
    groove_s: np.ndarray
    inner_z_s: np.ndarray
    thickness_m: np.ndarray


class ScoredSensor(CompletionSensorWrapper):
    """Passes a completion sensor's readings through unchanged and keeps, per reading, the truth
    at the same points and moment beside them (``PerceptionTruth``: for ``perception_mae`` and
    for explaining failures, ``scenarios.failure``)."""

    def __init__(self, sensor, world):
        super().__init__(sensor)
        self.world = world
        self.rows: list[PerceptionTruth] = []

    def estimate(self, frame, probes_r, T_tool_to_r):
        c = self.sensor.estimate(frame, probes_r, T_tool_to_r)
        w = self.world
        n, k = probes_r.shape[:2]
        p_s = apply(invert(w.T_s_to_r), np.asarray(probes_r, float).reshape(-1, 3))
        outer = w.skull.outer_height(p_s[:, 0], p_s[:, 1]).reshape(n, k)
        inner = w.skull.inner_height(p_s[:, 0], p_s[:, 1]).reshape(n, k)
        low = np.argmin(outer, axis=1)
        rows = np.arange(n)
        groove = p_s.reshape(n, k, 3)[rows, low].copy()
        groove[:, 2] = outer[rows, low]
        self.rows.append(PerceptionTruth(w.time_s, np.asarray(c, float), true_cross_section_completion(w, probes_r),
                                         groove, inner[rows, low], np.maximum(outer - inner, 0.0).min(axis=1)))
        return c

    def mae(self) -> float:
        """Realised mean |c_hat - c_true| over the valid readings (completion units)."""
        if not self.rows:
            return NAN
        est = np.concatenate([r.c_read for r in self.rows])
        true = np.concatenate([r.c_true for r in self.rows])
        ok = np.isfinite(est)
        return float(np.mean(np.abs(est[ok] - true[ok]))) if ok.any() else NAN


def ideal_trajectory(world, radius_m: float = 2e-3, n: int = 32, offset_m: float = 1e-3,
                     centre_ratio: float = 1.0 / 3.0) -> FittedTrajectory:
    """The trajectory a perfect pre-measurement would fit (true surface points and normals,
    {Mi} = {R}). For benchmarks and tests that study milling alone."""
    sk, T = world.skull, world.T_s_to_r
    c_s = true_window_centre_s(world, centre_ratio)
    th = 2 * np.pi * np.arange(n) / n
    pts_s = np.stack([c_s[0] + radius_m * np.cos(th), c_s[1] + radius_m * np.sin(th), np.zeros(n)], axis=1)
    pts_s[:, 2] = sk.outer_height(pts_s[:, 0], pts_s[:, 1])
    pf = apply(T, pts_s)
    nr = sk.outer_normal(pts_s[:, 0], pts_s[:, 1]) @ T[:3, :3].T
    c_r = apply(T, c_s)
    return FittedTrajectory(np.full(2, np.nan), c_r, radius_m, offset_m, pf, nr, pf + offset_m * nr, pf,
                            pf + offset_m * nr, nr, np.zeros(n, int), np.zeros(n), np.eye(4))


def ideal_camera(world, trajectory: FittedTrajectory):
    """The stereo model and {Mi} -> {R} a perfect calibration would find near the window (fitted
    to the true projections of a 5x5x3 grid around it). With ``ideal_trajectory``, for benchmarks
    and tests of the milling loop with the CNN."""
    g = np.stack(np.meshgrid(*(np.linspace(-h, h, k) for h, k in ((3e-3, 5), (3e-3, 5), (1e-3, 3))),
                             indexing="ij"), axis=-1).reshape(-1, 3) + trajectory.centre_mi
    fit = estimate_camera_model(world.cameras[0].project(g), world.cameras[1].project(g), g)
    return fit.model, fit.T_mi_to_r
