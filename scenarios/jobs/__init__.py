"""Jobs: what one scenario case runs. Registered by name, imported lazily.

A job is ``run_case(ctx: CaseContext) -> CaseOutput``; it declares its parameters (which
``[parameters.job]`` may sample), the metrics it reports (which ``[metrics]`` may name) and the
backends it can run on: jobs scored against the twin's ground truth run on the twin only;
``hw_check`` runs on any backend that drives a robot.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class JobEntry:
    target: str                       # "module:function"
    parameters: dict[str, float]      # name -> default value
    metrics: tuple[str, ...]
    backends: tuple[str, ...] = ("twin",)   # jobs scored with the twin's ground truth run on it only

    def load(self):
        module, fn = self.target.split(":")
        return getattr(importlib.import_module(module), fn)


JOBS: dict[str, JobEntry] = {
    "twin_smoke": JobEntry(
        "scenarios.jobs.twin_smoke:run_case",
        {"offset_x_mm": 0.0, "offset_y_mm": 0.0, "offset_z_mm": 0.0},
        ("fk_pybullet_error_m", "reach_error_m", "tip_reprojection_error_px", "tip_visible_fraction", "tip_on_drill",
         "frame_age_s", "render_pair_ms")),
    "calibration": JobEntry(
        "scenarios.jobs.calibration:run_case",
        {"camera_model": "estimate", "keypoint_noise_px": 0.0, "extra_setpoints": 0, "validation_setpoints": 20,
         "radius_mm": 2.0},
        ("keypoint_rmse_px", "keypoint_max_px", "calibration_rmse_mm", "calibration_max_mm", "n_over_1mm",
         "expected_error_mm", "calibration_residual_mm", "model_error_mm", "model_fit_rms_mm", "not_found")),
    "surface_fit": JobEntry(
        "scenarios.jobs.surface_fit:run_case",
        {"camera_model": "estimate", "keypoint_noise_px": 0.0, "radius_mm": 2.0},
        ("bregma_rmse_px", "lambda_rmse_px", "centre_rmse_px", "height_error_rms_mm", "height_error_max_mm",
         "height_error_provisional_rms_mm",
         "normal_error_mean_deg", "normal_error_max_deg", "centre_3d_error_mm", "trajectory_found",
         "calibration_residual_mm")),
    "milling": JobEntry(
        "scenarios.jobs.milling:run_case",
        {"camera_model": "estimate", "radius_mm": 2.0, "perception": "cnn", "oracle_mae": 0.2432, "calibration_seed": 0,
         "initialisation": "fitted", "traverse_speed_mm_s": 4.0},
        ("success", "detachable", "breached", "breaches", "complete", "milling_time_min", "idle_time_s",
         "contact_time_sd_s", "max_bridge_um", "peak_force_n", "max_deflection_um", "perception_mae",
         "realtime_factor", "floor_clamps", "fit_height_error_rms_mm")),
    "hw_check": JobEntry(
        "scenarios.jobs.hw_check:run_case",
        {"offset_x_mm": 0.0, "offset_y_mm": 0.0, "offset_z_mm": 2.0},
        ("contract_checks_passed", "reach_error_m", "move_duration_s", "joint_state_age_max_s", "frame_age_s"),
        backends=("twin", "coppeliasim", "sas")),
}


def job_backend_problem(job: str, backend: str, field: str = "backend") -> str | None:
    """None when ``job`` can run on ``backend``; else a message naming ``field`` and what is allowed."""
    allowed = JOBS[job].backends
    if backend in allowed:
        return None
    return (f"{field}={backend!r}: job {job!r} runs on {', '.join(allowed)} only"
            + (" (it is scored against the twin's ground truth)" if allowed == ("twin",) else ""))


def check_job_backend(job: str, backend: str, source: str) -> None:
    """ConfigError unless ``job`` can run on ``backend``."""
    from scenes.schema import ConfigError

    problem = job_backend_problem(job, backend)
    if problem is not None:
        raise ConfigError(source, [problem])
