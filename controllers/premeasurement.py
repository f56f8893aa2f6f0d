"""The pre-measurement pipeline (paper section III, Fig. 2): automatic calibration, then 3D
surface fitting, run through ``hw_bridge`` with only what the robot gives.

``calibrate_mscs``: (optionally) characterise the stereo rig on a 3-D grid of tip positions,
then landmark-calibrate {Mi} -> {R} on the calibration setpoints.
``fit_window_trajectory``: park the drill out of view, detect bregma and lambda in both
images, reconstruct the skull around the window centre, and fit the initial trajectory; then
(beyond the paper) re-characterise the rig on a small grid just above the window and fit again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controllers.auto_calibration import (TipObservation, characterise_rig, grid_setpoints, landmark_calibration,
                                          observe_many, wait_for_frame_after)
from controllers.calibration import LandmarkCalibration
from controllers.control_loop import ControlLoop
from controllers.dense_stereo import PointCloud, dense_point_cloud
from controllers.motion.pose_control import PoseController
from controllers.perception.keypoint_detector import Keypoint, KeypointDetector
from controllers.reconstruction import CameraModelFit, OrthoStereoModel, load_camera_model
from controllers.settings import PremeasurementSettings  # noqa: F401 (re-exported)
from controllers.surface_fit import FittedTrajectory, SurfaceFitError, fit_initial_trajectory, trajectory_centre_px
from hw_bridge.rig import RigDescription
from scenes.frames import apply, make_transform


@dataclass
class CalibrationOutcome:
    model: OrthoStereoModel
    model_fit: CameraModelFit | None       # None when a preset/file was used
    calibration: LandmarkCalibration
    grid_observations: list[TipObservation] = field(default_factory=list)
    observations: list[TipObservation] = field(default_factory=list)
    p_mi: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    skipped_grid: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def calibrate_mscs(loop: ControlLoop, pc: PoseController, detector: KeypointDetector, setpoints_r: np.ndarray,
                   R_tool_to_r: np.ndarray, settings: PremeasurementSettings, progress=None) -> CalibrationOutcome:
    """Characterise (if asked) and calibrate. ``setpoints_r`` (k, 3) m in {R}."""
    size = loop.rig.image_size_px
    centre = np.asarray(setpoints_r, float).mean(axis=0)
    grid_obs, skipped_grid, fit = [], [], None
    if settings.camera_model == "estimate":
        grid = grid_setpoints(centre + np.array([0.0, 0.0, settings.grid_lift_m]), settings.grid_half_extent_m,
                              settings.grid_points_per_axis)
        grid_obs = observe_many(loop, pc, detector, grid, R_tool_to_r, progress)
        fit, skipped_grid = characterise_rig(grid_obs, size)
        model = fit.model
    else:
        model = load_camera_model(settings.camera_model)
    obs = observe_many(loop, pc, detector, setpoints_r, R_tool_to_r, progress)
    cal, p_mi, skipped = landmark_calibration(obs, model)
    loop.hw.publish_decision("calibration/result", T_mi_to_r=cal.T_mi_to_r.tolist(), rms_m=float(cal.rms_m),
                        inliers=[bool(i) for i in cal.inliers], skipped_setpoints=list(skipped),
                        model_fit_rms_m=None if fit is None else float(fit.rms_m))
    return CalibrationOutcome(model, fit, cal, grid_obs, obs, p_mi, skipped_grid, skipped)


@dataclass
class SurfaceOutcome:
    """``trajectory`` is the final fit (after local refinement when enabled); ``provisional`` the
    fit with the session's global model and calibration (the paper's pipeline)."""

    frame_stamp_s: float
    left: np.ndarray                       # the images used (BGR)
    right: np.ndarray
    keypoints_left: list[Keypoint]
    keypoints_right: list[Keypoint]
    centre_left_px: np.ndarray | None
    cloud: PointCloud | None
    trajectory: FittedTrajectory | None
    failure: str | None                    # why no trajectory (a keypoint not found, a fit error)
    provisional: FittedTrajectory | None = None
    local_fit: CameraModelFit | None = None
    local_observations: list[TipObservation] = field(default_factory=list)


def _fit(left, right, model, T_mi_to_r, centre_px, settings, rig: RigDescription
         ) -> tuple[PointCloud, FittedTrajectory]:
    w, h = rig.image_size_px
    half_px = (settings.radius_m + settings.roi_margin_m) / min(model.prx_m_per_px, model.pry_m_per_px)
    c = centre_px
    roi = (int(max(0, c[0] - half_px)), int(max(0, c[1] - half_px)),
           int(min(w, c[0] + half_px + 1)), int(min(h, c[1] + half_px + 1)))
    cloud = dense_point_cloud(left, right, model, roi)
    return cloud, fit_initial_trajectory(cloud, centre_px, model, T_mi_to_r, radius_m=settings.radius_m,
                                         n=settings.n_points, burr_radius_m=rig.drill.burr_radius_m,
                                         offset_m=settings.safety_offset_m)


def fit_window_trajectory(loop: ControlLoop, pc: PoseController, detector: KeypointDetector, model: OrthoStereoModel,
                          T_mi_to_r: np.ndarray, park_r: np.ndarray, R_tool_to_r: np.ndarray,
                          settings: PremeasurementSettings, tip_detector: KeypointDetector | None = None
                          ) -> SurfaceOutcome:
    """Park the drill at ``park_r`` (m, {R}), detect bregma and lambda, reconstruct and fit.
    With ``settings.local_refinement`` (needs ``tip_detector``), the tip then visits a small grid
    above the provisional surface, the stereo model and its pose are re-estimated there, and the
    same images are fitted again with them."""
    if settings.local_refinement and tip_detector is None:
        raise ValueError("settings.local_refinement=True needs tip_detector (or set local_refinement=False)")
    pc.move_to(loop, make_transform(R_tool_to_r, park_r))
    frame = wait_for_frame_after(loop, loop.now())
    kl, kr = detector.detect(frame.left), detector.detect(frame.right)
    names = detector.config.names
    out = SurfaceOutcome(frame.stamp_s, frame.left, frame.right, kl, kr, None, None, None, None)
    missing = [f"{k.name} ({side})" for side, ks in (("left", kl), ("right", kr)) for k in ks if not k.found]
    if missing:
        out.failure = "not found: " + ", ".join(missing)
        loop.hw.publish_decision("surface_fit/result", failure=out.failure, keypoints_left_px={}, points_ini_r=None)
        return out
    by = {k.name: k.xy_px for k in kl}
    out.centre_left_px = trajectory_centre_px(by[names[0]], by[names[1]], settings.centre_ratio)
    try:
        out.cloud, out.provisional = _fit(frame.left, frame.right, model, T_mi_to_r, out.centre_left_px, settings,
                                          loop.rig)
        out.trajectory = out.provisional
        if settings.local_refinement:
            centre_r = apply(T_mi_to_r, out.provisional.centre_mi)
            lift = settings.local_grid_clearance_m + settings.local_grid_half_extent_m[2]
            grid = grid_setpoints(centre_r + np.array([0.0, 0.0, lift]), settings.local_grid_half_extent_m)
            out.local_observations = observe_many(loop, pc, tip_detector, grid, R_tool_to_r)
            out.local_fit, _ = characterise_rig(out.local_observations, loop.rig.image_size_px)
            pc.move_to(loop, make_transform(R_tool_to_r, park_r))
            out.cloud, out.trajectory = _fit(frame.left, frame.right, out.local_fit.model, out.local_fit.T_mi_to_r,
                                             out.centre_left_px, settings, loop.rig)
    except SurfaceFitError as exc:
        out.failure = f"surface fit: {exc}"
    loop.hw.publish_decision("surface_fit/result", failure=out.failure,
                             keypoints_left_px={k.name: k.xy_px.tolist() for k in kl if k.found},
                             points_ini_r=None if out.trajectory is None else out.trajectory.points_ini_r.tolist())
    return out
