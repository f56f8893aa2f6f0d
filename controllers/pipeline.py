"""The autonomous cranial window, once: calibrate -> fit -> mill, through ``hw_bridge``.

``run_window`` is the only place that chains the paper's stages (Fig. 2); the demo, the suite
jobs and the tests call it (the milling benchmark and the milling-loop tests call the mill stage,
``milling.mill_window``, on a ground-truth trajectory). Each stage can be skipped by giving its
result (``calibration=``: a rig calibrated earlier, as a lab reuses one calibration for a session
of mice; ``surface=``, with the ``calibration=`` it was fitted with: a trajectory fitted earlier)
or cut off (``until=``). Each stage returns a
dataclass (``CalibrationOutcome``, ``SurfaceOutcome``, ``MillingReport``), collected in
``WindowResult``; ``on_stage`` sees the result after each finished stage (to write outputs as
they come, or to score the fit before milling changes the bone).

1. **calibration** (``premeasurement.calibrate_mscs``): the tip visits the rig
   characterisation grid (``camera_model = "estimate"``) and the landmark setpoints.
2. **fit** (``premeasurement.fit_window_trajectory``): park out of view, bregma and lambda,
   dense stereo around the window, the n-point initial trajectory offset by rd + dd.
3. **mill** (``milling.mill_window``): the completion sensor (the scene's
   ``completion_sensor``: the completion CNN by default, or the thickness classifier; a caller
   may give another, e.g. the sim-only oracle in studies) and the planner until every point is
   through.

A hardware stop (a safety stop, the end of a replayed recording) ends the run early: what was
computed is kept and ``WindowResult.stopped_by`` says why. Controllers only: nothing here
reads ground truth; the one control loop is ``control_loop.ControlLoop``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from controllers.completion_sensing import CameraCompletionSensor, CompletionSensor, ThicknessCompletionSensor
from controllers.control_loop import ControlLoop
from controllers.milling import MillingReport, mill_window
from controllers.motion.pose_control import PoseController
from controllers.perception.completion_detector import CompletionEstimator, load_estimator
from controllers.perception.keypoint_detector import KeypointDetector, load_detector
from controllers.perception.thickness_classifier import ThicknessClassifier, load_classifier
from controllers.premeasurement import (CalibrationOutcome, SurfaceOutcome, calibrate_mscs,
                                        fit_window_trajectory)
from controllers.reconstruction import OrthoStereoModel
from controllers.settings import ControllerSettings, PerceptionSettings, PremeasurementSettings
from hw_bridge.errors import HardwareError
from hw_bridge.interface import Hardware, Lifecycle
from scenes.frames import apply

STAGES = ("calibration", "fit", "mill")


@dataclass(frozen=True)
class Networks:
    """The trained networks the stages need: the drill-tip detector (calibration, local
    refinement), the bregma/lambda detector (fit) and the completion sensor's network (mill; not
    needed when the caller gives its own sensor): the completion estimator (``completion``) or the
    thickness classifier (``thickness``), as the scene's ``completion_sensor`` says."""

    tip: KeypointDetector
    cranial: KeypointDetector | None = None
    completion: CompletionEstimator | None = None
    thickness: ThicknessClassifier | None = None


def load_networks(perception: PerceptionSettings, completion: bool = True) -> Networks:
    """The networks whose weights ``perception`` names (shipped or fine-tuned), each read with the
    checked reader (``DetectorLoadError`` names a missing, unreadable or non-finite file); the
    completion sensor's network only if ``completion``: the completion estimator, or with
    ``completion_sensor = "thickness"`` the thickness classifier."""
    tip = load_detector(perception.drill_tip_weights, expected_target="drill_tip")
    cranial = load_detector(perception.cranial_weights, expected_target="cranial")
    if not completion:
        return Networks(tip, cranial)
    if perception.completion_sensor == "thickness":
        return Networks(tip, cranial, thickness=load_classifier(perception.thickness_weights))
    return Networks(tip, cranial, load_estimator(perception.completion_weights))


#: builds the milling stage's completion sensor from the fitted surface and the stereo model to use near it
SensorFactory = Callable[[SurfaceOutcome, OrthoStereoModel], CompletionSensor]
#: ``progress(stage, done, total, detail)``: calibration counts setpoints, mill counts points through
Progress = Callable[[str, int, int, str], None]


@dataclass
class WindowResult:
    calibration: CalibrationOutcome | None = None
    surface: SurfaceOutcome | None = None
    milling: MillingReport | None = None
    #: why a hardware stop ended the run early (None: it was not stopped)
    stopped_by: str | None = None

    @property
    def trajectory(self):
        return None if self.surface is None else self.surface.trajectory

    @property
    def model(self) -> OrthoStereoModel | None:
        """The stereo model to use near the window: the local refinement's, else the calibration's."""
        if self.surface is not None and self.surface.local_fit is not None:
            return self.surface.local_fit.model
        return None if self.calibration is None else self.calibration.model

    def finished(self, stage: str) -> bool:
        """Whether ``stage`` produced its result (mill: the controller stopped with every point through)."""
        if stage == "calibration":
            return self.calibration is not None
        if stage == "fit":
            return self.trajectory is not None
        return self.milling is not None and self.milling.stop_reason.value == "complete"


@dataclass
class Session:
    """An active interface with its control loop and point-to-point controller."""

    loop: ControlLoop              # its ``hw`` is the interface
    pc: PoseController
    R_tool_to_r: np.ndarray        # the tool orientation kept throughout (the one at activation)


def open_session(hw: Hardware) -> Session:
    """Configure (if not yet) and activate ``hw``; start the control loop."""
    if hw.state is Lifecycle.UNCONFIGURED:
        hw.configure()
    hw.activate()
    loop = ControlLoop(hw)
    return Session(loop, PoseController(hw.rig), hw.rig.robot.fk(loop.state.position)[:3, :3])


def calibration_stop_count(settings: PremeasurementSettings, n_setpoints: int) -> int:
    """How many tip stops the calibration stage makes (for a progress bar)."""
    grid = int(np.prod(settings.grid_points_per_axis)) if settings.camera_model == "estimate" else 0
    return grid + n_setpoints


def camera_sensor(estimator: CompletionEstimator, drill) -> SensorFactory:
    """The completion CNN on the left camera, projected with the model fitted near the window."""
    def make(surface: SurfaceOutcome, model: OrthoStereoModel) -> CompletionSensor:
        traj = surface.trajectory
        return CameraCompletionSensor(estimator, model, traj.T_mi_to_r, apply(traj.T_mi_to_r, traj.centre_mi), drill)
    return make


def thickness_sensor(classifier: ThicknessClassifier, drill, stop_thickness_m: float) -> SensorFactory:
    """The thickness classifier on both cameras, projected with the model fitted near the window."""
    def make(surface: SurfaceOutcome, model: OrthoStereoModel) -> CompletionSensor:
        return ThicknessCompletionSensor(classifier, model, surface.trajectory.T_mi_to_r, drill, stop_thickness_m)
    return make


def completion_sensor(networks: Networks, drill, settings: ControllerSettings) -> SensorFactory:
    """The milling stage's camera sensor the scene chooses (``[controllers.perception]
    completion_sensor``): the one place that decides, for ``run_window``, the demo and the jobs."""
    if settings.perception.completion_sensor == "thickness":
        if networks.thickness is None:
            raise ValueError('completion_sensor = "thickness" needs networks.thickness (load_networks loads it)')
        return thickness_sensor(networks.thickness, drill, settings.milling.stop_thickness_m)
    if networks.completion is None:
        raise ValueError("the mill stage needs networks.completion or make_sensor")
    return camera_sensor(networks.completion, drill)


def run_window(session: Session, networks: Networks, settings: ControllerSettings = ControllerSettings(), *,
               until: str = "mill", calibration: CalibrationOutcome | None = None,
               surface: SurfaceOutcome | None = None, setpoints_r: np.ndarray | None = None,
               make_sensor: SensorFactory | None = None,
               on_stage: Callable[[str, WindowResult], None] | None = None,
               progress: Progress | None = None) -> WindowResult:
    """Run the stages up to ``until`` (``STAGES``) on an open ``session`` with ``settings`` (the
    scene's ``[controllers]`` table, which the caller passes on: controllers never see the scene).

    ``calibration`` / ``surface``: skip that stage and use this result. ``setpoints_r`` (k, 3) m
    in {R}: landmark setpoints instead of the rig's. ``make_sensor``: the milling stage's
    completion sensor (default: ``completion_sensor``, the scene's choice among ``networks``)."""
    if until not in STAGES:
        raise ValueError(f"until={until!r}: allowed {', '.join(STAGES)}")
    if surface is not None and calibration is None:
        raise ValueError("surface= needs the calibration= it was fitted with (calibrating again would "
                         "pair the fitted trajectory with another stereo model)")
    last = STAGES.index(until)
    loop, pc, rig = session.loop, session.pc, session.loop.rig
    pre = settings.premeasurement
    setpoints = rig.calibration_targets_r if setpoints_r is None else np.asarray(setpoints_r, float)
    result = WindowResult(calibration=calibration, surface=surface)

    def done(stage: str) -> None:
        if on_stage is not None:
            on_stage(stage, result)

    try:
        if result.calibration is None:
            total = calibration_stop_count(pre, len(setpoints))
            count = [0]

            def stop_done(k: int) -> None:
                count[0] += k
                if progress is not None:
                    progress("calibration", count[0], total, "")
            result.calibration = calibrate_mscs(loop, pc, networks.tip, setpoints, session.R_tool_to_r, pre,
                                                progress=stop_done)
        done("calibration")
        if last >= STAGES.index("fit") and result.surface is None:
            if networks.cranial is None:
                raise ValueError("the fit stage needs networks.cranial (the bregma/lambda detector)")
            cal = result.calibration
            park = rig.calibration_targets_r.mean(axis=0) + np.array(pre.park_offset_r_m)
            result.surface = fit_window_trajectory(loop, pc, networks.cranial, cal.model, cal.calibration.T_mi_to_r,
                                                   park, session.R_tool_to_r, pre, tip_detector=networks.tip)
        if last >= STAGES.index("fit"):
            done("fit")
        if last >= STAGES.index("mill") and result.trajectory is not None:
            if make_sensor is None:
                make_sensor = completion_sensor(networks, rig.drill, settings)
            sensor = make_sensor(result.surface, result.model)
            milling_progress = None
            if progress is not None:
                def milling_progress(t_s: float, through: int, n: int) -> None:
                    progress("mill", through, n, f"{t_s:.0f} s simulated")
            result.milling = mill_window(loop, pc, result.trajectory, sensor, settings.milling,
                                         progress=milling_progress)
            done("mill")
    except HardwareError as exc:
        result.stopped_by = f"{type(exc).__name__}: {exc}"
    return result
