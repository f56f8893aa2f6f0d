"""Jobs: what one scenario case runs. Registered by name, imported lazily.

A job is ``run_case(ctx: CaseContext) -> CaseOutput``; it declares its parameters (a pydantic
model: type, bounds and description of each; ``[parameters.job]`` may sample them and the suite
loader checks every value a distribution can produce), the metrics it reports with their kind
(which ``[metrics]`` may name; ``proportion`` only on binary ones) and the backends it can run
on. Jobs read ``ctx.job_parameters`` as a plain dict of the same names, validated at suite load.
Job parameters are what the experiment varies beyond the scene (perception mode, noise, counts);
the controllers' own settings are the scene's ``[controllers]`` table (a suite varies them as
``[parameters.scene] "controllers.milling.traverse_speed_m_s"``), so each has one source. Jobs
scored against the twin's ground truth run on the twin only; ``hw_check`` runs on any backend
that drives a robot (the mock included).
"""
from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, Strict, create_model

from scenes.fields import FROZEN, Int, Real

#: what a metric's values are: 0/1 ("binary", the only kind a ``proportion`` may aggregate),
#: event counts ("count") or measurements ("continuous")
METRIC_KINDS: tuple[str, ...] = ("binary", "count", "continuous")


#: a sampling seed
Seed = Annotated[Int, Field(ge=0, le=2**32 - 1)]


_Offset = Annotated[Real, Field(ge=-50.0, le=50.0)]


class _Params(BaseModel):
    model_config = FROZEN


class TwinSmokeParams(_Params):
    offset_x_mm: _Offset = Field(0.0, description="drill target from the setpoints' centre, {R} x")
    offset_y_mm: _Offset = Field(0.0, description="drill target from the setpoints' centre, {R} y")
    offset_z_mm: _Offset = Field(0.0, description="drill target from the setpoints' centre, {R} z")


class HwCheckParams(_Params):
    offset_x_mm: _Offset = Field(0.0, description="move target from the home pose, {R} x")
    offset_y_mm: _Offset = Field(0.0, description="move target from the home pose, {R} y")
    offset_z_mm: _Offset = Field(2.0, description="move target from the home pose, {R} z")


class CalibrationParams(_Params):
    keypoint_noise_px: Real = Field(0.0, ge=0.0, le=50.0,
                                    description="Gaussian noise per axis added to every keypoint detection")
    extra_setpoints: Int = Field(0, ge=0, le=1000, description="random calibration setpoints beyond the paper's")
    validation_setpoints: Int = Field(20, ge=1, le=10000, description="random setpoints the calibration is scored on")


class SurfaceFitParams(_Params):
    keypoint_noise_px: Real = Field(0.0, ge=0.0, le=50.0,
                                    description="Gaussian noise per axis added to every keypoint detection")


class MillingJobParams(_Params):
    perception: Literal["cnn", "oracle"] = Field("cnn", description='completion sensing: the CNN or the SIM-ONLY '
                                                                    'oracle (true completion + noise)')
    oracle_mae: Real = Field(0.2432, ge=0.0, le=1.0,
                             description="the oracle's mean absolute error (completion units), or with "
                                         "oracle_error = \"relative\" its mean absolute percentage error as a "
                                         "fraction (paper: 24.32 % MAPE = 0.2432)")
    oracle_error: Literal["absolute", "relative"] = Field(
        "absolute", description="the oracle's error model (twin/completion_oracle.py): absolute in completion "
                                "units, or relative (a percentage of c, the paper's MAPE)")
    oracle_end_exponent: Real = Field(0.0, ge=0.0, le=8.0,
                                      description="relative error only: the percentage error falls as (1 - c) to this "
                                                  "power towards c = 1 (0: uniform)")
    oracle_rho: Real = Field(0.0, ge=0.0, le=0.999,
                             description="correlation of a point's error from one reading to the next (AR(1))")
    calibration_seed: Seed = Field(0, description="seeds the rig calibration's random choices")
    record_loop_crops: Annotated[bool, Strict()] = Field(
        False, description="SIM-ONLY: write the thickness crops the loop sees with the twin's labels to "
                           "artifacts/loop_crops_caseNNN.npz (scenarios/loop_crops.py; the data of "
                           "`micromill train thickness --loop-data`)")
    # Faults as properties (issue 14; scenarios/fault_injection.py, docs/faults.md). All zero: no fault.
    # Timed faults start at a time from the cut's start (the first period with the drill on).
    fault_dropped_frames: Real = Field(0.0, ge=0.0, le=0.2,
                                       description="fraction of camera exposures lost (whole session)")
    fault_image_latency_s: Real = Field(0.0, ge=0.0, le=0.1,
                                        description="extra latency of every camera frame, s (whole session)")
    fault_keypoint_outliers: Real = Field(0.0, ge=0.0, le=0.1,
                                          description="fraction of keypoint detections (fit stage) moved 20-60 px")
    fault_completion_outliers: Real = Field(0.0, ge=0.0, le=0.1,
                                            description="fraction of completion readings replaced by 0 or 1")
    fault_joint_delay_s: Real = Field(0.0, ge=0.0, le=0.5,
                                      description="extra joint-state delay during its window, s")
    fault_joint_delay_start_s: Real = Field(0.0, ge=0.0, le=300.0,
                                            description="start of the joint-state delay, s from the cut's start")
    fault_joint_delay_duration_s: Real = Field(0.0, ge=0.0, le=60.0,
                                               description="duration of the joint-state delay, s (0: none)")
    fault_joint_freeze_start_s: Real = Field(0.0, ge=0.0, le=300.0,
                                             description="start of a joint-state freeze, s from the cut's start")
    fault_joint_freeze_duration_s: Real = Field(0.0, ge=0.0, le=60.0,
                                                description="duration of the joint-state freeze, s (0: none)")
    fault_disconnect_start_s: Real = Field(0.0, ge=0.0, le=300.0,
                                           description="start of a lost connection, s from the cut's start")
    fault_disconnect_duration_s: Real = Field(0.0, ge=0.0, le=60.0,
                                              description="duration of the lost connection, s (0: none)")
    fault_disconnect_permanent: Annotated[bool, Strict()] = Field(False, description="the connection is lost for good at its start")


#: types of parameters registered by default value (bounded, so that sampling cannot overflow)
_PY_TYPES = {bool: Annotated[bool, Strict()], int: Annotated[Int, Field(ge=-2**62, le=2**62)],
             float: Annotated[Real, Field(ge=-1e300, le=1e300)], str: Annotated[str, Strict(), Field(max_length=4096)]}


def _model_from_defaults(name: str, defaults: dict[str, Any]) -> type[BaseModel]:
    """A parameter model typed by a ``name -> default`` dict (for jobs registered that way)."""
    fields = {k: (_PY_TYPES.get(type(v), Any), v) for k, v in defaults.items()}
    return create_model(re.sub(r"\W", "_", name) or "Params", __base__=_Params, **fields)


@dataclass(frozen=True)
class JobEntry:
    """A job: ``target`` "module:function"; ``parameters`` its parameter model (pydantic, each
    field with bounds; or a ``name -> default`` dict, typed by the defaults); ``metrics`` name ->
    kind (or a tuple of names, all "continuous"); ``backends`` it runs on.

    After construction ``parameters`` is the ``name -> default`` dict (what a case starts from,
    ``dict(entry.parameters)``), ``params_model`` the model and ``metrics`` the name -> kind dict.
    """

    target: str                                   # "module:function"
    parameters: Any
    metrics: Any
    backends: tuple[str, ...] = ("twin",)         # jobs scored with the twin's ground truth run on it only
    params_model: type[BaseModel] = field(init=False, repr=False)

    def __post_init__(self):
        model = self.parameters if isinstance(self.parameters, type) else \
            _model_from_defaults(self.target, dict(self.parameters))
        defaults = {k: f.default for k, f in model.model_fields.items()}
        metrics = dict(self.metrics) if isinstance(self.metrics, dict) else {m: "continuous" for m in self.metrics}
        bad = {k: v for k, v in metrics.items() if v not in METRIC_KINDS}
        if bad:
            raise ValueError(f"JobEntry {self.target}: metric kinds {bad} are not in {METRIC_KINDS}")
        object.__setattr__(self, "params_model", model)
        object.__setattr__(self, "parameters", defaults)
        object.__setattr__(self, "metrics", metrics)

    def load(self):
        module, fn = self.target.split(":")
        return getattr(importlib.import_module(module), fn)


_B, _N, _C = "binary", "count", "continuous"

JOBS: dict[str, JobEntry] = {
    "twin_smoke": JobEntry(
        "scenarios.jobs.twin_smoke:run_case", TwinSmokeParams,
        {"fk_pybullet_error_m": _C, "reach_error_m": _C, "tip_reprojection_error_px": _C, "tip_visible_fraction": _C,
         "tip_on_drill": _B, "frame_age_s": _C, "render_pair_ms": _C}),
    "calibration": JobEntry(
        "scenarios.jobs.calibration:run_case", CalibrationParams,
        {"keypoint_rmse_px": _C, "keypoint_max_px": _C, "calibration_rmse_mm": _C, "calibration_max_mm": _C,
         "n_over_1mm": _N, "expected_error_mm": _C, "calibration_residual_mm": _C, "model_error_mm": _C,
         "model_fit_rms_mm": _C, "not_found": _N}),
    "surface_fit": JobEntry(
        "scenarios.jobs.surface_fit:run_case", SurfaceFitParams,
        {"bregma_rmse_px": _C, "lambda_rmse_px": _C, "centre_rmse_px": _C, "height_error_rms_mm": _C,
         "height_error_max_mm": _C, "height_error_provisional_rms_mm": _C, "normal_error_mean_deg": _C,
         "normal_error_max_deg": _C, "centre_3d_error_mm": _C, "trajectory_found": _B,
         "calibration_residual_mm": _C}),
    "milling": JobEntry(
        "scenarios.jobs.milling:run_case", MillingJobParams,
        {"success": _B, "detachable": _B, "breached": _B, "breaches": _N, "complete": _B, "milling_time_min": _C,
         "idle_time_s": _C, "contact_time_sd_s": _C, "max_bridge_um": _C, "peak_force_n": _C,
         "max_deflection_um": _C, "perception_mae": _C, "realtime_factor": _C, "floor_clamps": _N,
         "fit_height_error_rms_mm": _C, "fault_stops": _N, "unsafe_stop": _B, "drill_on_after_stop_s": _C,
         "stopped": _B, "resumed": _B, "resume_failed": _B, "thickness_mae_um": _C, "loop_crops": _C}),
    "hw_check": JobEntry(
        "scenarios.jobs.hw_check:run_case", HwCheckParams,
        {"contract_checks_passed": _C, "reach_error_m": _C, "move_duration_s": _C, "joint_state_age_max_s": _C,
         "frame_age_s": _C},
        backends=("twin", "mock", "coppeliasim", "sas")),
}


def job_backend_problem(job: str, backend: str, field: str = "backend") -> str | None:
    """None when ``job`` can run on ``backend``; else a message naming ``field`` and what is allowed."""
    allowed = JOBS[job].backends
    if backend in allowed:
        return None
    close = difflib.get_close_matches(backend, allowed, n=1)
    return (f"{field}={backend!r}: job {job!r} runs on {', '.join(allowed)} only"
            + (" (it is scored against the twin's ground truth)" if allowed == ("twin",) else "")
            + (f"; did you mean {close[0]!r}?" if close else ""))


def check_job_backend(job: str, backend: str, source: str) -> None:
    """ConfigError unless ``job`` can run on ``backend``."""
    from scenes.schema import ConfigError

    problem = job_backend_problem(job, backend)
    if problem is not None:
        raise ConfigError(source, [problem])
