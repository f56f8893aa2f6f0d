"""surface_fit: the paper's Experiment 2 on the twin, plus what the paper could not measure.

One case = one random rig and skull. The pipeline (``controllers.pipeline.run_window`` up to
the fit stage) calibrates, parks the drill out of view, detects bregma and lambda in both
images, reconstructs the skull around the window centre (SGBM) and fits the initial trajectory.

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
from controllers.pipeline import Networks, open_session, run_window
from scenes.frames import apply
from scenes.spec import load_scene
from scenarios.jobs.premeasurement_common import NoisyKeypoints, label_axes_3d_mm, new_figure, save_figure
from scenarios.cases import CaseContext, CaseOutput, case_session
from scenarios.scoring import score_keypoints, score_surface_fit


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
    networks = Networks(NoisyKeypoints(load_detector(scene.controllers.perception.drill_tip_weights, expected_target="drill_tip"), noise,
                                       np.random.default_rng([ctx.seed, 1])),
                        NoisyKeypoints(load_detector(scene.controllers.perception.cranial_weights, expected_target="cranial"), noise,
                                       np.random.default_rng([ctx.seed, 2])))
    with case_session(ctx, scene) as hw:
        result = run_window(open_session(hw), networks, scene.controllers, until="fit")
        if result.stopped_by is not None:
            raise RuntimeError(f"stopped: {result.stopped_by}")
        gt = hw.ground_truth
        cal, out = result.calibration, result.surface
        l = scene.controllers.premeasurement.centre_ratio
        T_final = out.local_fit.T_mi_to_r if out.local_fit is not None else cal.calibration.T_mi_to_r
        m, kp_true_left, kp_det_left = score_keypoints(gt, out, l)
        fit_m, true_z_r = score_surface_fit(gt, out, T_final, l)
        m.update(fit_m)
        m.update({"trajectory_found": float(out.trajectory is not None),
                  "calibration_residual_mm": cal.calibration.rms_m * 1e3})
        traj = out.trajectory
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
