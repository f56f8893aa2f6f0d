"""hw_check: is this robot, simulator or twin fit to run the controllers? Any backend.

One case, through ``hw_bridge`` only (no ground truth: it runs the same on the twin,
CoppeliaSim and the real SmartArmStack arm):
- ``contract_checks_passed``: fraction of the hardware contract's checks (``hw_bridge.checker``:
  lifecycle, joint states, refused commands, following commands, velocity limits, stereo, drill)
  that pass, each on a fresh session; whatever a check raises (its own AssertionError, a
  SafetyStop, a HardwareError, anything) is that check's failure, listed with its type and
  message in the case notes (``failed_checks``), and the other checks still run;
- a move of the drill by (offset_x/y/z_mm) from home with the DQ pose controller, then:
  ``reach_error_m`` (tool position from the measured joints vs the target), ``move_duration_s``
  (backend clock), ``joint_state_age_max_s`` (oldest joint state read during the move, backend
  clock), ``frame_age_s`` (age of the newest stereo frame at the end; NaN without cameras).
  The notes' ``move`` says how it went: ``done``, ``stopped: <error type>: <message>`` (the
  safety stop or error that ended it; the move metrics are then NaN) or ``not run: <why>``; it
  is not run when ``follows_commands`` failed (a pose controller winding up against a robot
  that does not move would only end at the workspace box).

A robot that really moves is moved only when armed (``--arm`` and ``safety.armed = true``).
Unarmed, it is a dry run that checks the link without moving anything: only the checks in
``DRY_RUN_CHECKS`` (they command the robot to stay where it is, so nothing is lost by not
sending), no move, and the move metrics are NaN (the case notes say ``dry_run``). A dry run
against a CoppeliaSim simulation that is stopped (a dry run never starts it) skips the check
whose joint-state stamps must advance; ``skipped_checks`` says so and why.

Tests inject faults by wrapping this module's ``case_hardware`` (tests/test_hw_check.py).
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
#: the dry-run checks that need joint-state stamps to advance: skipped (``skipped_checks`` in the
#: notes, with the reason) when the backend says they cannot (``Hardware.idle_reason``)
STAMPS_MUST_ADVANCE = ("joint_state",)
#: the metrics of the move (NaN when it did not run or was stopped)
MOVE_METRICS = ("reach_error_m", "move_duration_s", "joint_state_age_max_s", "frame_age_s")


def _idle_reason(ctx: CaseContext, scene) -> str | None:
    """``Hardware.idle_reason`` of a configured session: why the joint states of this dry run
    legitimately stand still (a stopped CoppeliaSim simulation, which a dry run may not start)."""
    hw = case_hardware(ctx, scene, tag="_probe")
    try:
        hw.configure()
        return hw.idle_reason()
    finally:
        hw.close()


def _failure(exc: Exception) -> str:
    """What a check's failure says: its own verdict (AssertionError), else the error's type and message."""
    return str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"


def _run_check(ctx: CaseContext, scene, name: str) -> str | None:
    """One contract check on a fresh session: None when it passed, else why it failed (a failure to
    close the session counts too)."""
    hw, failure = None, None
    try:
        hw = case_hardware(ctx, scene, tag=f"_{name}")
        CHECKS[name](hw)
    except Exception as exc:  # noqa: BLE001 - whatever a check raises is its failure, reported with its cause
        failure = _failure(exc)
        if hw is not None:
            hw.stop(f"check {name} failed: {failure}")
    if hw is not None:
        try:
            hw.close()
        except Exception as exc:  # noqa: BLE001
            failure = "; ".join(filter(None, [failure, f"closing the session: {_failure(exc)}"]))
    return failure


def _move(ctx: CaseContext, scene) -> dict[str, float]:
    """The pose move (module docstring); its metrics. Raises whatever stopped it."""
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
        return {"reach_error_m": reach, "move_duration_s": duration, "joint_state_age_max_s": worst_age,
                "frame_age_s": age}
    except Exception as exc:
        hw.stop(f"hw_check move failed: {_failure(exc)}")
        raise
    finally:
        hw.close()


def run_case(ctx: CaseContext) -> CaseOutput:
    scene = load_scene(ctx.scene_path, ctx.scene_overrides)
    dry_run = not backend_armed(ctx.backend, ctx.armed, scene)
    checks = DRY_RUN_CHECKS if dry_run else tuple(CHECKS)
    skipped = {}
    if dry_run and (idle := _idle_reason(ctx, scene)) is not None:
        skipped = {name: idle for name in STAMPS_MUST_ADVANCE}
        checks = tuple(c for c in checks if c not in skipped)
    failures = {name: why for name in checks if (why := _run_check(ctx, scene, name)) is not None}
    notes = {"failed_checks": failures, "backend": ctx.backend, "dry_run": dry_run, "checks_run": list(checks),
             "skipped_checks": skipped}
    metrics = dict.fromkeys(MOVE_METRICS, math.nan)
    if dry_run:
        notes["move"] = "not run: dry run"
    elif "follows_commands" in failures:
        notes["move"] = "not run: the robot did not follow the commands (failed_checks.follows_commands)"
    else:
        try:
            metrics.update(_move(ctx, scene))
            notes["move"] = "done"
        except Exception as exc:  # noqa: BLE001 - a stopped move is a result: its cause goes into the notes
            notes["move"] = f"stopped: {_failure(exc)}"
    metrics["contract_checks_passed"] = 1.0 - len(failures) / len(checks)
    return CaseOutput(metrics=metrics, notes=notes)
