"""Jobs: what one scenario case runs. Registered by name, imported lazily.

A job is ``run_case(ctx: CaseContext) -> CaseOutput``; it declares its parameters (which
``[parameters.job]`` may sample) and the metrics it reports (which ``[metrics]`` may name).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class JobEntry:
    target: str                       # "module:function"
    parameters: dict[str, float]      # name -> default value
    metrics: tuple[str, ...]

    def load(self):
        module, fn = self.target.split(":")
        return getattr(importlib.import_module(module), fn)


JOBS: dict[str, JobEntry] = {
    "twin_smoke": JobEntry(
        "scenarios.jobs.twin_smoke:run_case",
        {"offset_x_mm": 0.0, "offset_y_mm": 0.0, "offset_z_mm": 0.0},
        ("fk_pybullet_error_m", "reach_error_m", "tip_reprojection_error_px", "tip_visible_fraction", "tip_on_drill",
         "frame_age_s", "render_pair_ms")),
}
