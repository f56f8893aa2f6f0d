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

A robot that really moves is moved only when armed (``--arm`` and ``safety.armed = true``).
Unarmed, it is a dry run that checks the link without moving anything: only the checks in
``DRY_RUN_CHECKS`` (they command the robot to stay where it is, so nothing is lost by not
sending), no move, and the move metrics are NaN (the case notes say ``dry_run``).
"""
from __future__ import annotations

import math

import numpy as np

from controllers.pipeline import open_session
from hw_bridge.checker import CHECKS
from hw_bridge.registry import backend_armed
from scenes.frames import make_transform
from scenes.spec import load_scene
from scenarios.cases import CaseContext, CaseOutput, case_hardware


#: the checks that need no motion (a dry run can pass them): connection, lifecycle, fresh joint
#: states, refusal of bad commands, stereo frames
DRY_RUN_CHECKS = ("lifecycle", "joint_state", "rejects_bad_commands", "stereo")


def run_case(ctx: CaseContext) -> CaseOutput:
    scene = load_scene(ctx.scene_path, ctx.scene_overrides)
    dry_run = not backend_armed(ctx.backend, ctx.armed, scene)
    checks = DRY_RUN_CHECKS if dry_run else tuple(CHECKS)
    failures = {}
    for name in checks:
        hw = case_hardware(ctx, scene, tag=f"_{name}")
        try:
            CHECKS[name](hw)
        except AssertionError as exc:
            failures[name] = str(exc)
        finally:
            hw.close()
    n_checks = len(checks)
    if dry_run:
        return CaseOutput(
            metrics={"contract_checks_passed": 1.0 - len(failures) / n_checks, "reach_error_m": math.nan,
                     "move_duration_s": math.nan, "joint_state_age_max_s": math.nan, "frame_age_s": math.nan},
            notes={"failed_checks": failures, "backend": ctx.backend, "dry_run": True,
                   "checks_run": list(DRY_RUN_CHECKS)})

    hw = case_hardware(ctx, scene, tag="_move")
    try:
        session = open_session(hw)
        loop, robot = session.loop, hw.rig.robot
        p = ctx.job_parameters
        T0 = robot.fk(loop.state.position)
        target = T0[:3, 3] + 1e-3 * np.array([p["offset_x_mm"], p["offset_y_mm"], p["offset_z_mm"]])
        worst_age = 0.0
        t0 = hw.now()
        T_target = make_transform(T0[:3, :3], target)
        reached = False
        while hw.now() - t0 < 20.0 and not reached:
            loop.command(session.pc.command(loop.state.position, loop.q_cmd, T_target))
            s = loop.state
            worst_age = max(worst_age, hw.now() - s.stamp_s)
            reached = np.linalg.norm(robot.tool_position(s.position) - target) <= 5e-6
        duration = hw.now() - t0
        loop.hold(0.1)
        reach = float(np.linalg.norm(robot.tool_position(loop.state.position) - target))
        frame = hw.grab_stereo()
        age = hw.now() - frame.stamp_s if frame is not None else math.nan
    finally:
        hw.close()
    return CaseOutput(
        metrics={"contract_checks_passed": 1.0 - len(failures) / n_checks, "reach_error_m": reach,
                 "move_duration_s": duration, "joint_state_age_max_s": worst_age, "frame_age_s": age},
        notes={"failed_checks": failures, "backend": ctx.backend, "dry_run": False})
