"""hw_check: is this robot, simulator or twin fit to run the controllers? Any backend.

One case, through ``hw_bridge`` only (no ground truth: it runs the same on the twin,
CoppeliaSim and the real SmartArmStack arm):
- ``contract_checks_passed``: fraction of the hardware contract's checks (``hw_bridge.checker``:
  lifecycle, joint states, refused commands, velocity limits, stereo, drill) that pass, each on
  a fresh session; failures are listed in the case notes;
- a move of the drill by (offset_x/y/z_mm) from home with the DQ pose controller, then:
  ``reach_error_m`` (tool position from the measured joints vs the target), ``move_duration_s``
  (backend clock), ``joint_state_age_max_s`` (oldest joint state read during the move, backend
  clock), ``frame_age_s`` (age of the newest stereo frame at the end; NaN without cameras).

It moves the robot, so a robot that really moves must be armed (``--arm`` and
``safety.armed = true``); a dry run is refused with that message before anything is sent.
"""
from __future__ import annotations

import math

import numpy as np

from controllers.motion.pose_control import PoseController
from hw_bridge.checker import CHECKS
from scenes.frames import make_transform
from scenes.spec import load_scene
from scenarios.runner import CaseContext, CaseOutput, case_hardware


def run_case(ctx: CaseContext) -> CaseOutput:
    scene = load_scene(ctx.scene_path, ctx.scene_overrides)
    failures = {}
    for name, check in CHECKS.items():
        hw = case_hardware(ctx, scene, tag=f"_{name}")
        if not hw.armed:
            hw.close()
            raise RuntimeError(f"hw_check moves the robot: backend {ctx.backend!r} is not armed (a dry run); "
                               f"run with --arm and safety.armed = true in the scene")
        try:
            check(hw)
        except AssertionError as exc:
            failures[name] = str(exc)
        finally:
            hw.close()

    hw = case_hardware(ctx, scene, tag="_move")
    try:
        hw.configure()
        hw.activate()
        p = ctx.job_parameters
        T0 = hw.robot.fk(hw.read().position)
        target = T0[:3, 3] + 1e-3 * np.array([p["offset_x_mm"], p["offset_y_mm"], p["offset_z_mm"]])
        pc = PoseController(hw)
        worst_age = 0.0
        t0 = hw.now()
        T_target = make_transform(T0[:3, :3], target)
        reached = False
        while hw.now() - t0 < 20.0 and not reached:
            pc.step(T_target)
            s = hw.read()
            worst_age = max(worst_age, hw.now() - s.stamp_s)
            reached = np.linalg.norm(hw.robot.tool_position(s.position) - target) <= 5e-6
        duration = hw.now() - t0
        pc.hold(0.1)
        reach = float(np.linalg.norm(hw.robot.tool_position(hw.read().position) - target))
        frame = hw.grab_stereo()
        age = hw.now() - frame.stamp_s if frame is not None else math.nan
    finally:
        hw.close()
    return CaseOutput(
        metrics={"contract_checks_passed": 1.0 - len(failures) / len(CHECKS), "reach_error_m": reach,
                 "move_duration_s": duration, "joint_state_age_max_s": worst_age, "frame_age_s": age},
        notes={"failed_checks": failures, "backend": ctx.backend})
