"""surface_fit: the paper's Experiment 2 on the twin, plus what the paper could not measure.

One case = one random rig and skull. The controller calibrates (``calibrate_mscs``), parks the
drill out of view, detects bregma and lambda in both images, reconstructs the skull around
the window centre (SGBM) and fits the initial trajectory (``fit_window_trajectory``).

Metrics (ground truth from the twin):
- ``bregma_rmse_px``, ``lambda_rmse_px``, ``centre_rmse_px``: detected vs true projections over
  both images (the true centre is bregma + l (lambda - bregma) of the true projections);
- ``height_error_rms_mm`` / ``height_error_max_mm``: the fitted surface points p_fit,i in {R},
  taken to the skull frame, vs the true outer surface height at the same (x, y) (along {S} z),
  for the final trajectory (after the local refinement); ``height_error_provisional_rms_mm``:
  the same for the fit with the session's global model and calibration (the paper's pipeline);
- ``normal_error_mean_deg`` / ``normal_error_max_deg``: fitted vs true outer-surface normals;
- ``centre_3d_error_mm``: fitted 3-D centre vs the true surface point at the window centre;
- ``trajectory_found``: 1 when a trajectory was produced (0: a keypoint not found, or the fit
  refused; the reason is in the case notes), ``calibration_residual_mm`` for context.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from controllers.perception.keypoint_detector import load_detector
from controllers.premeasurement import calibrate_mscs, fit_window_trajectory
from scenes.frames import apply, invert
from scenes.spec import load_scene
from scenarios.jobs.premeasurement_common import (NoisyKeypoints, label_axes_3d_mm, new_figure, open_session, rms,
                                                  save_figure, settings_from_job)
from scenarios.runner import CaseContext, CaseOutput, case_hardware

NAN = float("nan")


def _figure8b(path: Path, image_left: np.ndarray, kp_true: dict, kp_det: dict, traj_uv: np.ndarray | None,
              cloud_r_mm: np.ndarray | None, traj, true_z_mm: np.ndarray | None, title: str) -> None:
    import cv2

    fig = new_figure((11, 4.8))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(cv2.cvtColor(image_left, cv2.COLOR_BGR2RGB))
    colours = {"bregma": "red", "lambda": "lime", "centre": "yellow"}
    for name, xy in kp_true.items():
        ax.scatter(*xy, marker="o", facecolors="none", edgecolors=colours[name], s=60, label=f"{name} (true)")
    for name, xy in kp_det.items():
        if xy is not None:
            ax.scatter(*xy, marker="x", color=colours[name], s=40, label=f"{name} (detected)")
    if traj_uv is not None:
        ax.plot(*np.vstack([traj_uv, traj_uv[:1]]).T, color="cyan", linewidth=1, label="fitted trajectory")
    c = np.array(list(kp_true.values())).mean(axis=0)
    ax.set_xlim(c[0] - 150, c[0] + 150)
    ax.set_ylim(c[1] + 110, c[1] - 110)
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title("(a) left image: keypoints and trajectory", fontsize=9)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    if cloud_r_mm is not None and traj is not None:
        sub = cloud_r_mm[:: max(1, len(cloud_r_mm) // 4000)]
        ax3.scatter(*sub.T, c=sub[:, 2], s=1, cmap="viridis", alpha=0.4)
        pf, pi, n = traj.points_fit_r * 1e3, traj.points_ini_r * 1e3, traj.normals_r
        ax3.scatter(*pf.T, color="red", s=10, label="p_fit (on surface)")
        ax3.scatter(*pi.T, color="orange", s=10, label="p_ini = p_fit + (rd+dd) n")
        ax3.quiver(*pf.T, *n.T, length=0.6, color="black", linewidth=0.6)
        if true_z_mm is not None:
            ax3.scatter(pf[:, 0], pf[:, 1], true_z_mm, marker="_", color="blue", s=30, label="true surface")
        ax3.legend(fontsize=6)
    label_axes_3d_mm(ax3, "(b) 3D-fitted initial trajectory in {R}")
    save_figure(fig, path, title)


def run_case(ctx: CaseContext) -> CaseOutput:
    p = ctx.job_parameters
    scene = load_scene(ctx.scene_path, ctx.scene_overrides)
    noise = float(p["keypoint_noise_px"])
    tip = NoisyKeypoints(load_detector("drill_tip", expected_target="drill_tip"), noise,
                         np.random.default_rng([ctx.seed, 1]))
    cranial = NoisyKeypoints(load_detector("cranial", expected_target="cranial"), noise,
                             np.random.default_rng([ctx.seed, 2]))
    settings = settings_from_job(p)
    hw = case_hardware(ctx, scene)
    try:
        s = open_session(hw)
        gt = hw.ground_truth
        cal = calibrate_mscs(hw, s.pc, tip, s.setpoints_r, s.R_tool_to_r, settings)
        park = s.setpoints_r.mean(axis=0) + np.array(settings.park_offset_r_m)
        out = fit_window_trajectory(hw, s.pc, cranial, cal.model, cal.calibration.T_mi_to_r, park, s.R_tool_to_r,
                                    settings, tip_detector=tip)
        # --- ground truth ---
        T_s_to_r = gt.T_s_to_r
        T_r_to_s = invert(T_s_to_r)
        sk = gt.skull
        l = settings.centre_ratio
        true_3d = {"bregma": apply(T_s_to_r, sk.bregma_s), "lambda": apply(T_s_to_r, sk.lambda_s)}
        errs = {"bregma": [], "lambda": [], "centre": []}
        kp_true_left, kp_det_left = {}, {}
        for cam, kps in zip(gt.cameras, (out.keypoints_left, out.keypoints_right)):
            uv = {n: cam.project(x)[0] for n, x in true_3d.items()}
            uv["centre"] = uv["bregma"] + l * (uv["lambda"] - uv["bregma"])
            det = {k.name: k.xy_px for k in kps}
            det["centre"] = (det["bregma"] + l * (det["lambda"] - det["bregma"])
                             if det["bregma"] is not None and det["lambda"] is not None else None)
            for n in errs:
                if det[n] is not None:
                    errs[n].append(float(np.linalg.norm(det[n] - uv[n])))
            if cam is gt.cameras[0]:
                kp_true_left, kp_det_left = uv, det
        m = {f"{n}_rmse_px": rms(e) if len(e) == 2 else NAN for n, e in errs.items()}
        m.update({"height_error_rms_mm": NAN, "height_error_provisional_rms_mm": NAN, "height_error_max_mm": NAN, "normal_error_mean_deg": NAN,
                  "normal_error_max_deg": NAN, "centre_3d_error_mm": NAN,
                  "trajectory_found": float(out.trajectory is not None),
                  "calibration_residual_mm": cal.calibration.rms_m * 1e3})
        traj = out.trajectory
        T_final = out.local_fit.T_mi_to_r if out.local_fit is not None else cal.calibration.T_mi_to_r
        true_z_r = None

        def height_errors(t):
            p_s = apply(T_r_to_s, t.points_fit_r)
            return p_s, p_s[:, 2] - sk.outer_height(p_s[:, 0], p_s[:, 1])

        if out.provisional is not None:
            m["height_error_provisional_rms_mm"] = rms(height_errors(out.provisional)[1]) * 1e3
        if traj is not None:
            pf_s, dz = height_errors(traj)
            z_true = pf_s[:, 2] - dz
            n_s = traj.normals_r @ T_s_to_r[:3, :3]        # {R} -> {S}: R^T n
            n_true = sk.outer_normal(pf_s[:, 0], pf_s[:, 1])
            ang = np.degrees(np.arccos(np.clip(np.sum(n_s * n_true, axis=1), -1.0, 1.0)))
            c_s = sk.bregma_s + l * (sk.lambda_s - sk.bregma_s)
            c_s[2] = sk.outer_height(c_s[0], c_s[1])
            c_fit_s = apply(T_r_to_s, apply(T_final, traj.centre_mi))
            m.update({"height_error_rms_mm": rms(dz) * 1e3, "height_error_max_mm": float(np.abs(dz).max()) * 1e3,
                      "normal_error_mean_deg": float(ang.mean()), "normal_error_max_deg": float(ang.max()),
                      "centre_3d_error_mm": float(np.linalg.norm(c_fit_s - c_s)) * 1e3})
            true_z_r = apply(T_s_to_r, np.column_stack([pf_s[:, :2], z_true]))[:, 2] * 1e3
        artifacts = []
        if ctx.save_artifacts:
            path = Path(ctx.artifacts_dir) / f"case{ctx.index:03d}_figure8b.png"
            traj_uv = gt.cameras[0].project(traj.points_fit_r) if traj is not None else None
            cloud_r = (apply(T_final, out.cloud.points_mi) * 1e3
                       if out.cloud is not None else None)
            _figure8b(path, out.left, kp_true_left, kp_det_left, traj_uv, cloud_r, traj, true_z_r,
                      f"case {ctx.index}: centre RMSE {m['centre_rmse_px']:.2f} px, height error RMS "
                      f"{m['height_error_rms_mm']:.3f} mm, max normal error {m['normal_error_max_deg']:.1f} deg")
            artifacts.append(f"artifacts/{path.name}")
        return CaseOutput(metrics=m, artifacts=artifacts,
                          notes={"failure": out.failure, "simulated_time_s": hw.now()})
    finally:
        hw.close()
