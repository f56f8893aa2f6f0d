"""The demo's dry run: link checks on a robot that really moves but is not armed.

Nothing moves in a dry run (commands are logged, never sent), so running the window would only
wind the pose controller up against a still robot until the workspace box stops it. Instead
``link_checks`` checks what can be checked without moving, and the demo stops there, saying so:

1. **configure** and **activate** the interface (activation checks the first joint state);
2. **joint states** over ``JOINT_STATE_PERIODS`` control periods: finite and fresh (the
   watchdog's rules, ``safety.max_joint_state_age_s``) and within the joint position limits.
   A backend whose joint states legitimately stand still (``Hardware.idle_reason``: a dry run
   watching a CoppeliaSim simulation that is stopped, which only the armed run may start) is not
   activated: one reading is checked (finite, within limits) and a note says why freshness waits
   for the armed run;
3. **stereo frame**: the interface is deactivated (no watchdog on images while inactive) and the
   newest frame is awaited for up to ``FRAME_WAIT_S`` of the backend's clock. A backend without
   cameras, or one that gives no frame (none in time, or an error other than a lost connection
   while grabbing), is reported, not failed: the link to the robot is fine;
4. **perception** on that frame: whether the drill-tip keypoint CNN finds the tip and the cranial
   CNN finds bregma and lambda in each image. This is reported, never failed (the tip may be out
   of view at the start pose), and tells the user before arming whether the CNNs can read this
   camera's images at all.

A ``HardwareError`` in steps 1-3 is a failed check (the later steps are not run); any other
exception propagates to the caller (the demo stops the hardware and reports it).
"""
from __future__ import annotations

import numpy as np

from controllers.pipeline import Networks
from hw_bridge.errors import ConnectionLost, HardwareError
from hw_bridge.interface import Hardware, StereoFrame

#: control periods over which the joint states are read and checked
JOINT_STATE_PERIODS = 10
#: backend time (s) to wait for the first stereo frame
FRAME_WAIT_S = 2.0

NOT_ARMED_HINT = "arm with --arm and safety.armed = true"


def link_checks(hw: Hardware, networks: Networks, frame_wait_s: float = FRAME_WAIT_S) -> dict:
    """Run the checks on the unconfigured, unarmed ``hw`` (left open: the caller closes it).

    Returns ``{"passed": bool, "checks": [{"name", "passed", "detail"}], "frame": None | {...},
    "perception": None | {image: {keypoint: found}}, "notes": [str]}``; ``passed`` is False
    when a check failed (a check that could not run for want of cameras is not a failure)."""
    checks: list[dict] = []
    notes: list[str] = []
    out = {"passed": False, "checks": checks, "frame": None, "perception": None, "notes": notes}

    def record(name: str, passed: bool, detail: str) -> bool:
        checks.append({"name": name, "passed": passed, "detail": detail})
        return passed

    step = "configure"
    try:
        hw.configure()
        record(step, True, f"{hw.name} connected and configured")
        idle = hw.idle_reason()
        if idle is None:
            step = "activate"
            hw.activate()
            record(step, True, "activated; commands are logged, not sent")
            step = "joint states"
            if not record(step, *_joint_state_check(hw)):
                return out
            hw.deactivate()
        else:                             # a stopped simulation: read once, freshness cannot be shown
            step = "joint states"
            notes.append(f"{idle}: joint states read once, their freshness is checked when the armed run starts")
            if not record(step, *_joint_state_once(hw)):
                return out
        step = "stereo frame"
        try:
            frame, why_none = _wait_for_frame(hw, frame_wait_s)
        except ConnectionLost:
            raise
        except HardwareError as exc:      # e.g. a dry run that left the simulator's sensors alone
            frame, why_none = None, f"no stereo frame from {hw.name} ({type(exc).__name__}: {exc})"
    except HardwareError as exc:
        record(step, False, f"{type(exc).__name__}: {exc}")
        return out
    out["passed"] = True
    if frame is None:
        notes.append(f"{why_none}: the CNNs could not be checked on this camera before arming")
        return out
    left, right = frame.left, frame.right
    record(step, True, f"{left.shape[1]}x{left.shape[0]} px pair at {frame.stamp_s:.3f} s")
    out["frame"] = {"stamp_s": round(frame.stamp_s, 6), "width_px": int(left.shape[1]), "height_px": int(left.shape[0])}
    found: dict[str, dict[str, bool]] = {"left": {}, "right": {}}
    for detector in (networks.tip, networks.cranial):          # the keypoints of each: drill_tip; bregma, lambda
        for side, image in (("left", left), ("right", right)):
            found[side].update({k.name: bool(k.found) for k in detector.detect(image)})
    out["perception"] = found
    missing = [f"{name} ({side})" for side, hits in found.items() for name, ok in hits.items() if not ok]
    if missing:
        notes.append(f"not found by the CNNs: {', '.join(missing)}. At the start pose the tip or a landmark may be "
                     f"out of view or hidden; if it is in view, the CNN cannot read this camera's images and the "
                     f"armed run will fail in calibration or fit")
    return out


def _joint_state_check(hw: Hardware) -> tuple[bool, str]:
    """Joint states over ``JOINT_STATE_PERIODS`` periods: finite and fresh (``Hardware.read`` stops
    safely otherwise, raising ``SafetyStop``) and within the position limits."""
    lo, hi = hw.limits.position_min, hw.limits.position_max
    oldest = 0.0
    for _ in range(JOINT_STATE_PERIODS):
        state = hw.read()
        outside = np.flatnonzero((state.position < lo) | (state.position > hi))
        if outside.size:
            return (False, f"joints {outside.tolist()} outside their position limits: "
                    f"{np.round(state.position[outside], 5).tolist()} not in "
                    f"[{np.round(lo[outside], 5).tolist()}, {np.round(hi[outside], 5).tolist()}] (rad | m)")
        oldest = max(oldest, hw.now() - state.stamp_s)
        hw.advance()
    return (True, f"{len(lo)} joints finite, within limits, at most {oldest * 1e3:.1f} ms old "
            f"over {JOINT_STATE_PERIODS} periods")


def _joint_state_once(hw: Hardware) -> tuple[bool, str]:
    """One joint state read while inactive (no watchdog: its stamp cannot advance): finite and
    within the position limits."""
    state = hw.read()
    lo, hi = hw.limits.position_min, hw.limits.position_max
    bad = np.flatnonzero(~np.isfinite(state.position) | ~np.isfinite(state.velocity))
    if bad.size:
        return False, f"the robot sent non-finite joint states at joints {bad.tolist()}"
    outside = np.flatnonzero((state.position < lo) | (state.position > hi))
    if outside.size:
        return (False, f"joints {outside.tolist()} outside their position limits: "
                f"{np.round(state.position[outside], 5).tolist()} not in "
                f"[{np.round(lo[outside], 5).tolist()}, {np.round(hi[outside], 5).tolist()}] (rad | m)")
    return True, f"{len(lo)} joints finite and within limits (one reading; the simulation is not running)"


def _wait_for_frame(hw: Hardware, wait_s: float) -> tuple[StereoFrame | None, str]:
    """The newest stereo frame within ``wait_s`` of backend time, or None and why."""
    if not hw.has_cameras:
        return None, f"the {hw.name} backend has no stereo cameras configured"
    t0 = hw.now()
    while (frame := hw.grab_stereo()) is None:
        if hw.now() - t0 >= wait_s:
            return None, f"no stereo frame from {hw.name} within {wait_s:g} s"
        hw.advance()
    return frame, ""


def describe(dry: dict, commands_logged: int) -> list[str]:
    """The dry run's lines for the console: each check, the perception findings, the conclusion."""
    lines = [f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}" for c in dry["checks"]]
    if dry["perception"] is not None:
        seen = "; ".join(f"{side}: " + ", ".join(f"{k} {'found' if ok else 'NOT found'}" for k, ok in hits.items())
                         for side, hits in dry["perception"].items())
        lines.append(f"  perception on that frame: {seen}")
    lines += [f"  note: {n}" for n in dry["notes"]]
    if dry["passed"]:
        lines.append(f"DRY RUN: link checks passed ({', '.join(c['name'] for c in dry['checks'])}); nothing was "
                     f"sent ({commands_logged} commands logged); the window is not run in a dry run: {NOT_ARMED_HINT}")
    else:
        failed = next(c for c in dry["checks"] if not c["passed"])
        lines.append(f"DRY RUN: link check failed: {failed['name']}; nothing was sent; fix the link before arming")
    return lines
