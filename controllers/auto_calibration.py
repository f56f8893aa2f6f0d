"""Automatic calibration through ``hw_bridge`` (paper section III-A): move the drill tip to
setpoints in {R}, detect it in both MSCS images, reconstruct it in {Mi}, fit {Mi} -> {R}.

Two procedures, both using only what the real robot gives (commanded setpoints, images):

- ``characterise_rig``: once per camera set-up, the tip visits a 3-D grid of setpoints and
  ``estimate_camera_model`` fits the stereo model's parameters (our answer to "uncalibrated
  cameras": the robot's own motion is the metric reference; see ``reconstruction``);
- ``landmark_calibration``: every session, k setpoints (the paper's five by default) and the
  rigid fit of ``calibration.calibrate``.

A setpoint whose tip is not found in one of the images is skipped and reported (a documented
skip, never a made-up point); too few usable points make ``calibrate`` refuse with a
``CalibrationError``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controllers.calibration import LandmarkCalibration, calibrate
from controllers.control_loop import ControlLoop
from controllers.motion.pose_control import PoseController
from controllers.perception.keypoint_detector import KeypointDetector
from controllers.reconstruction import CameraModelFit, OrthoStereoModel, estimate_camera_model
from scenes.frames import make_transform


@dataclass(frozen=True)
class TipObservation:
    """The drill tip at one commanded setpoint. Pixel positions are None when not found."""

    setpoint_r: np.ndarray            # commanded tip position (m) in {R}
    uv_left_px: np.ndarray | None
    uv_right_px: np.ndarray | None
    confidence: tuple[float, float]
    frame_stamp_s: float
    reached: bool

    @property
    def found(self) -> bool:
        return self.uv_left_px is not None and self.uv_right_px is not None


def wait_for_frame_after(loop: ControlLoop, t_s: float, timeout_s: float = 1.0):
    """Hold position until a stereo frame exposed after ``t_s`` arrives (or raise TimeoutError)."""
    deadline = loop.now() + timeout_s
    while True:
        frame = loop.hw.grab_stereo()
        if frame is not None and frame.stamp_s > t_s:
            return frame
        if loop.now() > deadline:
            raise TimeoutError(f"no camera frame exposed after t={t_s:.3f} s within {timeout_s} s")
        loop.hold(loop.period_s)


def observe_tip(loop: ControlLoop, pc: PoseController, detector: KeypointDetector, p_r: np.ndarray,
                R_tool_to_r: np.ndarray, settle_s: float = 0.02) -> TipObservation:
    """Move the tip to ``p_r`` (m, {R}) with orientation ``R_tool_to_r``, wait for a frame exposed
    after it settled, and detect the tip in both images."""
    move = pc.move_to(loop, make_transform(R_tool_to_r, p_r))
    loop.hold(settle_s)
    frame = wait_for_frame_after(loop, loop.now())
    left, right = (detector.detect(img)[0] for img in (frame.left, frame.right))
    return TipObservation(np.asarray(p_r, float), left.xy_px if left.found else None,
                          right.xy_px if right.found else None, (left.confidence, right.confidence),
                          frame.stamp_s, move.reached)


def observe_many(loop: ControlLoop, pc: PoseController, detector: KeypointDetector, setpoints_r: np.ndarray,
                 R_tool_to_r: np.ndarray, progress=None) -> list[TipObservation]:
    out = []
    for p in setpoints_r:
        out.append(observe_tip(loop, pc, detector, p, R_tool_to_r))
        if progress is not None:
            progress(1)
    return out


def grid_setpoints(centre_r: np.ndarray, half_extent_m: tuple[float, float, float],
                   n_per_axis: tuple[int, int, int] = (3, 3, 3)) -> np.ndarray:
    """A box grid of setpoints (m, {R}) around ``centre_r``: spread in all three axes."""
    axes = [np.linspace(-h, h, n) if n > 1 else np.zeros(1) for h, n in zip(half_extent_m, n_per_axis)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return np.asarray(centre_r, float) + g


def _usable(obs: list[TipObservation]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    idx = [i for i, o in enumerate(obs) if o.found]
    uv_l = np.array([obs[i].uv_left_px for i in idx]).reshape(-1, 2)
    uv_r = np.array([obs[i].uv_right_px for i in idx]).reshape(-1, 2)
    p = np.array([obs[i].setpoint_r for i in idx]).reshape(-1, 3)
    return uv_l, uv_r, p, [i for i, o in enumerate(obs) if not o.found]


def characterise_rig(observations: list[TipObservation], image_size_px: tuple[int, int],
                     paper_form: bool = False) -> tuple[CameraModelFit, list[int]]:
    """Estimate the stereo model from tip observations on a 3-D grid; returns the fit and the
    indices of skipped (not found) observations."""
    uv_l, uv_r, p, skipped = _usable(observations)
    return estimate_camera_model(uv_l, uv_r, p, image_size_px, paper_form=paper_form), skipped


def landmark_calibration(observations: list[TipObservation], model: OrthoStereoModel,
                         **calibrate_kwargs) -> tuple[LandmarkCalibration, np.ndarray, list[int]]:
    """Reconstruct the found tips in {Mi} and fit {Mi} -> {R}. Returns the calibration, the
    reconstructed points (k_used, 3) and the skipped indices."""
    uv_l, uv_r, p, skipped = _usable(observations)
    p_mi = model.reconstruct(uv_l, uv_r).reshape(-1, 3)
    return calibrate(p_mi, p, **calibrate_kwargs), p_mi, skipped
