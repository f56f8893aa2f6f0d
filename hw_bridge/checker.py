"""An API checker shared by all backends (like Gymnasium's ``check_env``).

``check_hardware(factory)`` runs every check in ``CHECKS`` against fresh instances from
``factory()`` and raises ``AssertionError`` naming the first broken rule. The contract test
suite parametrizes over backends and checks, so a new backend passes the same rules.
Motions are small and rate-limited: a few mm of tool travel at most (``follows_commands`` moves
back where it started; ``velocity_limits`` moves 50 ms at full speed).

``FAULT_CHECKS`` are the safety layer's fault cases (connection dropped mid-run, delayed or
frozen joint states, NaN from the robot). They need a ``FaultInjector`` for the backend (the
twin's world, the CoppeliaSim test server or the SAS twin driver provides one) and check that
the fault stops the run: ``SafetyStop`` within ``FAULT_REACTION_S``, the interface inactive,
the drill off, the robot holding, and a clean re-activation once the fault is gone.

``check_seeded_determinism(factory)`` is for backends that are not real time (their clock is
simulated): two instances built with the same seed and driven by the same commands give
identical joint states, and identical images where they have cameras. ``check_hardware`` runs it
on such backends.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from hw_bridge.errors import CommandRejected, LifecycleError, SafetyStop
from hw_bridge.interface import Hardware, JointState, Lifecycle
from scenes.robot_description import PRISMATIC


def _expect(exc_type, fn, what: str) -> str:
    try:
        fn()
    except exc_type as exc:
        return str(exc)
    raise AssertionError(f"{what}: expected {exc_type.__name__}")


def check_lifecycle(hw: Hardware) -> None:
    assert hw.state is Lifecycle.UNCONFIGURED, f"new hardware is {hw.state}, expected unconfigured"
    _expect(LifecycleError, hw.read, "read() before configure()")
    hw.configure()
    assert hw.state is Lifecycle.INACTIVE
    q = hw.read().position
    _expect(LifecycleError, lambda: hw.write(q), "write() while inactive")
    _expect(LifecycleError, lambda: hw.set_drill(True, 1000.0), "set_drill() while inactive")
    hw.activate()
    assert hw.state is Lifecycle.ACTIVE
    hw.write(q)
    hw.deactivate()
    assert hw.state is Lifecycle.INACTIVE
    _expect(LifecycleError, lambda: hw.write(q), "write() after deactivate()")
    hw.close()
    hw.close()
    assert hw.state is Lifecycle.FINALIZED
    _expect(LifecycleError, hw.read, "read() after close()")


def check_joint_state(hw: Hardware) -> None:
    hw.configure()
    hw.activate()
    s0 = hw.read()
    n = hw.limits.position_min.size
    assert s0.position.shape == (n,) and s0.velocity.shape == (n,), "joint state has the wrong shape"
    assert np.all(np.isfinite(s0.position)) and np.all(np.isfinite(s0.velocity)), "joint state not finite"
    assert np.all(s0.position >= hw.limits.position_min - 1e-6) and np.all(s0.position <= hw.limits.position_max + 1e-6)
    for _ in range(5):
        hw.write(s0.position)
        hw.advance()
    s1 = hw.read()
    assert s1.stamp_s > s0.stamp_s, f"joint-state stamps do not advance ({s0.stamp_s} -> {s1.stamp_s})"
    hw.close()


def check_rejects_bad_commands(hw: Hardware) -> None:
    """Every bad command is refused, stops the run safely (inactive, drill off) and says why."""
    hw.configure()
    hw.activate()
    q = hw.read().position
    n = q.size
    for bad, why in [(np.full(n, np.nan), "NaN"), (np.full(n, np.inf), "inf"), (q[:-1], "wrong shape"),
                     (np.where(np.arange(n) == 0, hw.limits.position_max[0] + 0.01, q), "above limit"),
                     (np.where(np.arange(n) == n - 1, hw.limits.position_min[-1] - 0.01, q), "below limit"),
                     (q + 10 * hw.limits.velocity_max * hw.period_s, "too fast")]:
        hw.set_drill(True, 1000.0)
        msg = _expect(CommandRejected, lambda: hw.write(bad), f"write({why})")
        assert msg, f"rejection of {why} has no message"
        assert hw.state is Lifecycle.INACTIVE, f"write({why}) was refused but the run did not stop ({hw.state})"
        assert hw.fault and "rejected" in hw.fault, f"write({why}): the stop does not say why ({hw.fault!r})"
        assert not hw.drill_state().on, f"write({why}): the drill is still on after the safety stop"
        hw.activate()
    for _ in range(3):
        hw.write(q)
        hw.advance()
    moved = np.abs(hw.read().position - q)
    assert np.all(moved < 1e-4), f"robot moved after rejected commands: {moved}"
    hw.close()


#: how long ``check_velocity_limits`` holds still to measure the noise of the joint states (s)
NOISE_HOLD_S = 0.2
#: a measured speed may exceed a limit by this many standard deviations of the joint-state noise
#: measured while holding still (velocities a driver estimates from two noisy position samples)
NOISE_ALLOWANCE_SIGMAS = 5.0
#: the speed judged from positions is averaged over at least this span (s), so noise and stamp
#: jitter of single samples barely count ...
SPEED_SPAN_S = 0.03
#: ... and may exceed a limit by this fraction (a robot 10 % too fast still fails)
SPEED_TOLERANCE = 0.03


def _distinct_samples(hw: Hardware, command: Callable[[int], np.ndarray], periods: int) -> list[JointState]:
    """Write ``command(k)`` and advance for k = 1..periods; every joint state read with a new stamp."""
    samples = [hw.read()]
    for k in range(1, periods + 1):
        hw.write(command(k))
        hw.advance()
        s = hw.read()
        if s.stamp_s > samples[-1].stamp_s:
            samples.append(s)
    return samples


def check_velocity_limits(hw: Hardware) -> None:
    """A rate-limited command stream (50 ms at full speed, whatever the period) is accepted and the
    robot never exceeds its limits.

    Speeds are judged twice: the reported velocities, and the speed from positions over spans of at
    least ``SPEED_SPAN_S`` (within ``SPEED_TOLERANCE``). Real joint states are noisy (a
    position-only SAS driver's velocities are estimated from two noisy samples), so the reported
    velocities may exceed a limit by ``NOISE_ALLOWANCE_SIGMAS`` standard deviations of the
    velocity noise measured first while holding still (``NOISE_HOLD_S``); a noise-free backend
    (twin, mock) gets no allowance."""
    hw.configure()
    hw.activate()
    q0 = hw.read().position
    vmax = hw.limits.velocity_max
    still = _distinct_samples(hw, lambda k: q0, int(round(NOISE_HOLD_S / hw.period_s)))
    noise = (np.std([s.velocity for s in still], axis=0, ddof=1) if len(still) > 2 else np.zeros_like(vmax))
    allowed = vmax + NOISE_ALLOWANCE_SIGMAS * noise
    direction = np.where(q0 < (hw.limits.position_min + hw.limits.position_max) / 2, 1.0, -1.0)
    moving = _distinct_samples(hw, lambda k: q0 + direction * vmax * hw.period_s * k, int(round(0.05 / hw.period_s)))
    reported = np.max([np.abs(s.velocity) for s in moving], axis=0)
    j = int(np.argmax(reported / allowed))
    assert reported[j] <= allowed[j] * (1 + 1e-6), (
        f"joint {j} reported a speed of {reported[j] / vmax[j]:.4f} x its limit (allowed: "
        f"{allowed[j] / vmax[j]:.4f} x, the limit plus {NOISE_ALLOWANCE_SIGMAS:g} standard deviations of the "
        f"velocity noise measured while holding still)")
    spans = [(a, b) for i, a in enumerate(moving) for b in moving[i + 1:] if b.stamp_s - a.stamp_s >= SPEED_SPAN_S]
    if spans:
        speed = np.max([np.abs(b.position - a.position) / (b.stamp_s - a.stamp_s) for a, b in spans], axis=0)
        j = int(np.argmax(speed / vmax))
        assert speed[j] <= vmax[j] * (1 + SPEED_TOLERANCE), (
            f"joint {j} moved at {speed[j] / vmax[j]:.4f} x its limit (from its positions over at least "
            f"{SPEED_SPAN_S:g} s; tolerance {SPEED_TOLERANCE:.0%})")
    moved = hw.read().position - q0
    assert np.all(moved * direction > 0), (
        f"the robot did not follow the commanded direction at joints {np.flatnonzero(moved * direction <= 0).tolist()}")
    hw.close()


#: how far ``check_follows_commands`` moves each joint: this long at half its speed limit (s)
FOLLOW_MOVE_S = 0.1
#: how long the robot gets to cover ``FOLLOW_FRACTION`` of the commanded motion (s)
FOLLOW_TIMEOUT_S = 1.0
FOLLOW_FRACTION = 0.5


def check_follows_commands(hw: Hardware) -> None:
    """The measured joints follow a small rate-limited move (each joint towards the middle of its
    range, ``FOLLOW_MOVE_S`` at half its speed limit) by at least ``FOLLOW_FRACTION`` within
    ``FOLLOW_TIMEOUT_S``; the robot is then moved back. Catches joints that ignore their commands
    (a driver without its enable, a passive or stuck joint)."""
    hw.configure()
    hw.activate()
    q0 = hw.read().position
    direction = np.where(q0 < (hw.limits.position_min + hw.limits.position_max) / 2, 1.0, -1.0)
    step = direction * 0.5 * hw.limits.velocity_max * hw.period_s
    n = int(round(FOLLOW_MOVE_S / hw.period_s))
    commanded = step * n
    for k in range(1, n + 1):
        hw.write(q0 + step * k)
        hw.advance()
    t_end = hw.now() + FOLLOW_TIMEOUT_S
    moved = hw.read().position - q0
    while np.any(moved * direction < FOLLOW_FRACTION * np.abs(commanded)) and hw.now() < t_end:
        hw.write(q0 + commanded)
        hw.advance()
        moved = hw.read().position - q0
    lagging = np.flatnonzero(moved * direction < FOLLOW_FRACTION * np.abs(commanded))
    for k in range(n - 1, -1, -1):           # back where it was, at the same rate
        hw.write(q0 + step * k)
        hw.advance()
    hw.close()
    unit = np.where(hw.robot.joint_types == PRISMATIC, "m", "rad")
    assert lagging.size == 0, "the robot did not follow the commands: " + "; ".join(
        f"joint {j} commanded {commanded[j]:+.3g} {unit[j]}, measured {moved[j]:+.3g} {unit[j]}" for j in lagging)


def check_stereo(hw: Hardware) -> None:
    """Frames arrive within 2 s, uint8 BGR, not from the future; a backend without cameras
    (``has_cameras`` False) gives None."""
    hw.configure()
    hw.activate()
    if not hw.has_cameras:
        for _ in range(3):
            assert hw.grab_stereo() is None, "a backend without cameras gave a stereo frame"
            hw.write(hw.read().position)
            hw.advance()
        hw.close()
        return
    frame = None
    for _ in range(int(2.0 / hw.period_s)):
        frame = hw.grab_stereo()
        if frame is not None:
            break
        hw.write(hw.read().position)
        hw.advance()
    assert frame is not None, "no stereo frame within 2 s"
    for img in (frame.left, frame.right):
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, f"image {img.dtype} {img.shape}"
    assert frame.left.shape == frame.right.shape
    assert frame.stamp_s <= hw.now() + 1e-9, "frame stamped in the future"
    hw.close()


def check_drill(hw: Hardware) -> None:
    hw.configure()
    hw.activate()
    hw.set_drill(True, 10000.0)
    st = hw.drill_state()
    assert st.on and st.speed_rpm == 10000.0, f"drill state {st}"
    _expect(CommandRejected, lambda: hw.set_drill(True, float("nan")), "set_drill(nan)")
    assert hw.state is Lifecycle.INACTIVE and not hw.drill_state().on, "set_drill(nan) did not stop the run"
    hw.activate()
    _expect(CommandRejected, lambda: hw.set_drill(True, -1.0), "set_drill(-1)")
    hw.activate()
    hw.set_drill(True, 10000.0)
    hw.deactivate()
    assert not hw.drill_state().on, "deactivate() must stop the drill"
    hw.close()


CHECKS: dict[str, Callable[[Hardware], None]] = {
    f.__name__.removeprefix("check_"): f
    for f in (check_lifecycle, check_joint_state, check_rejects_bad_commands, check_follows_commands,
              check_velocity_limits, check_stereo, check_drill)
}


class FaultInjector(Protocol):
    """Provokes a fault in what a backend's robot sends (kinds: the keys of ``FAULT_CHECKS``)."""

    def inject(self, kind: str) -> None: ...
    def clear(self) -> None: ...


#: the longest a fault may go unnoticed by a running controller loop (s of the backend clock)
FAULT_REACTION_S = 2.0


def _run_until_stopped(hw: Hardware, q: np.ndarray, limit_s: float) -> str:
    """Hold ``q`` as a controller would (read, write, advance) until a SafetyStop; its message."""
    t0 = hw.now()
    while hw.now() - t0 < limit_s:
        try:
            hw.read()
            hw.write(q)
            hw.advance()
        except SafetyStop as exc:
            return str(exc)
    raise AssertionError(f"no safety stop within {limit_s} s of the fault")


def _check_fault(hw: Hardware, faults: FaultInjector, kind: str, keywords: tuple[str, ...]) -> None:
    hw.configure()
    hw.activate()
    q = hw.read().position
    hw.set_drill(True, 1000.0)
    for _ in range(5):
        hw.write(q)
        hw.advance()
    faults.inject(kind)
    try:
        reason = _run_until_stopped(hw, q, FAULT_REACTION_S)
    finally:
        faults.clear()
    assert hw.state is Lifecycle.INACTIVE, f"{kind}: the run was not stopped ({hw.state})"
    assert any(k in reason for k in keywords), f"{kind}: the stop says {reason!r}, expected one of {keywords}"
    _expect(LifecycleError, lambda: hw.write(q), f"{kind}: write() after the safety stop")
    t_end = hw.now() + 0.3
    while hw.now() < t_end:        # let the robot settle on the held command, states fresh again
        hw.advance()
    assert not hw.drill_state().on, f"{kind}: the drill is still on after the safety stop"
    held = hw.read().position
    for _ in range(5):
        hw.advance()
    drift = float(np.max(np.abs(hw.read().position - held)))
    assert drift < 1e-4, f"{kind}: the robot kept moving after the safety stop ({drift:.2e})"
    hw.activate()                   # the fault is gone: the run can be resumed deliberately
    hw.write(hw.read().position)
    hw.advance()
    hw.close()


def check_fault_nan_joint_states(hw: Hardware, faults: FaultInjector) -> None:
    _check_fault(hw, faults, "nan_joint_states", ("non-finite",))


def check_fault_freeze_joint_states(hw: Hardware, faults: FaultInjector) -> None:
    _check_fault(hw, faults, "freeze_joint_states", ("stale",))


def check_fault_delay_joint_states(hw: Hardware, faults: FaultInjector) -> None:
    _check_fault(hw, faults, "delay_joint_states", ("stale",))


def check_fault_disconnect(hw: Hardware, faults: FaultInjector) -> None:
    _check_fault(hw, faults, "disconnect", ("connection lost", "stale"))


def check_fault_ignore_commands(hw: Hardware, faults: FaultInjector) -> None:
    """Joints that ignore their commands (a driver that lost its enable, a stuck or passive joint):
    a small move of the joint that moves the tool least (half its velocity limit, at most 0.3 s of
    full speed away, then held) must stop the run because the joint does not follow, before anything
    else trips. Afterwards the robot goes back where it was."""
    hw.configure()
    hw.activate()
    q0 = hw.read().position
    vmax = hw.limits.velocity_max
    tool_shift = [np.linalg.norm(hw.robot.tool_position(q0 + e * 1e-4) - hw.robot.tool_position(q0)) * v
                  for e, v in zip(np.eye(q0.size), vmax)]
    j = int(np.argmin(tool_shift))
    sign = 1.0 if q0[j] < (hw.limits.position_min[j] + hw.limits.position_max[j]) / 2 else -1.0
    hw.set_drill(True, 1000.0)
    faults.inject("ignore_commands")
    q = q0.copy()
    reason = None
    try:
        t0 = hw.now()
        while reason is None and hw.now() - t0 < FAULT_REACTION_S:
            q[j] = q0[j] + sign * min(0.5 * vmax[j] * (hw.now() - t0), 0.3 * vmax[j])
            try:
                hw.read()
                hw.write(q)
                hw.advance()
            except SafetyStop as exc:
                reason = str(exc)
    finally:
        faults.clear()
    assert reason is not None, f"ignore_commands: no safety stop within {FAULT_REACTION_S} s (joint {j} commanded " \
                               f"{q[j] - q0[j]:+.3g} from where it stayed)"
    assert hw.state is Lifecycle.INACTIVE, f"ignore_commands: the run was not stopped ({hw.state})"
    assert "does not follow" in reason, f"ignore_commands: the stop says {reason!r}, expected 'does not follow'"
    assert not hw.drill_state().on, "ignore_commands: the drill is still on after the safety stop"
    t_end = hw.now() + 0.3
    while hw.now() < t_end:         # the fault is gone: the robot settles on the held command
        hw.advance()
    hw.activate()                   # then goes back to where the check started
    q = hw.read().position
    while np.any(np.abs(q - q0) > 1e-9):
        q = q + np.clip(q0 - q, -0.5 * vmax * hw.period_s, 0.5 * vmax * hw.period_s)
        hw.write(q)
        hw.advance()
    for _ in range(int(round(0.05 / hw.period_s))):
        hw.write(q0)
        hw.advance()
    hw.close()


FAULT_CHECKS: dict[str, Callable[[Hardware, FaultInjector], None]] = {
    f.__name__.removeprefix("check_fault_"): f
    for f in (check_fault_nan_joint_states, check_fault_freeze_joint_states, check_fault_delay_joint_states,
              check_fault_disconnect, check_fault_ignore_commands)
}


#: how long ``check_seeded_determinism`` drives each instance (s of the backend clock)
DETERMINISM_RUN_S = 0.2


def _seeded_run(hw: Hardware, duration_s: float) -> tuple[list[tuple], list[tuple]]:
    """Drive ``hw`` with a fixed, rate-limited command sequence (every joint on a 2 Hz sine of at most
    1e-3 rad or m); every joint state read, and every new frame (index, stamp, left, right)."""
    try:
        hw.configure()
        hw.activate()
        q0 = hw.read().position
        f_hz = 2.0
        amplitude = np.minimum(1e-3, 0.5 * hw.limits.velocity_max / (2 * np.pi * f_hz))
        sign = np.where(np.arange(q0.size) % 2 == 0, 1.0, -1.0)
        states, frames = [], []
        for k in range(int(round(duration_s / hw.period_s))):
            hw.write(q0 + sign * amplitude * np.sin(2 * np.pi * f_hz * (k + 1) * hw.period_s))
            hw.advance()
            s = hw.read()
            states.append((s.stamp_s, s.position.copy(), s.velocity.copy()))
            frame = hw.grab_stereo()
            if frame is not None and (not frames or frames[-1][0] != frame.index):
                frames.append((frame.index, frame.stamp_s, frame.left.copy(), frame.right.copy()))
        return states, frames
    finally:
        hw.close()


def check_seeded_determinism(factory: Callable[[], Hardware], duration_s: float = DETERMINISM_RUN_S) -> None:
    """Two instances from ``factory`` (same scene, same seed), the same commands: identical joint
    states (stamps, positions, velocities) and, with cameras, identical frames. Only for backends
    that are not real time: a wall clock cannot repeat a run."""
    first, second = factory(), factory()
    try:
        if first.realtime:
            raise AssertionError(f"{first.name}: seeded determinism is only defined for backends that are not "
                                 f"real time (realtime = True)")
        assert first.seed == second.seed, f"factory gave seeds {first.seed} and {second.seed}"
        s1, f1 = _seeded_run(first, duration_s)
        s2, f2 = _seeded_run(second, duration_s)
    finally:
        first.close()
        second.close()
    assert len(s1) == len(s2) > 0
    for k, (a, b) in enumerate(zip(s1, s2)):
        same = a[0] == b[0] and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a[1:], b[1:]))
        assert same, (
            f"joint states differ at period {k + 1} of two runs with seed {first.seed}: "
            f"stamps {a[0]!r} / {b[0]!r}, max position difference {np.nanmax(np.abs(a[1] - b[1])):.3g}")
    if first.has_cameras:
        assert f1, f"no stereo frame within {duration_s} s: cannot compare images"
        assert [f[:2] for f in f1] == [f[:2] for f in f2], "the two runs got different frames (index, stamp)"
        for a, b in zip(f1, f2):
            assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3]), (
                f"frame {a[0]}: images differ between two runs with seed {first.seed}")


def check_hardware(factory: Callable[[], Hardware]) -> None:
    """Run all checks, each on a fresh instance (and ``check_seeded_determinism`` when the backend is
    not real time); raise AssertionError on the first failure."""
    for name, check in CHECKS.items():
        hw = factory()
        try:
            check(hw)
        except AssertionError as exc:
            raise AssertionError(f"{hw.name}: check {name!r} failed: {exc}") from exc
        finally:
            hw.close()
    if not hw.realtime:
        try:
            check_seeded_determinism(factory)
        except AssertionError as exc:
            raise AssertionError(f"{hw.name}: check 'seeded_determinism' failed: {exc}") from exc
