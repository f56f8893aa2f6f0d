"""An API checker shared by all backends (like Gymnasium's ``check_env``).

``check_hardware(factory)`` runs every check in ``CHECKS`` against fresh instances from
``factory()`` and raises ``AssertionError`` naming the first broken rule. The contract test
suite parametrizes over backends and checks, so a new backend passes the same rules.
Every check leaves the robot where it was: motions are one rate-limited period.

``FAULT_CHECKS`` are the safety layer's fault cases (connection dropped mid-run, delayed or
frozen joint states, NaN from the robot). They need a ``FaultInjector`` for the backend (the
twin's world, the CoppeliaSim test server or the SAS twin driver provides one) and check that
the fault stops the run: ``SafetyStop`` within ``FAULT_REACTION_S``, the interface inactive,
the drill off, the robot holding, and a clean re-activation once the fault is gone.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from hw_bridge.errors import CommandRejected, LifecycleError, SafetyStop
from hw_bridge.interface import Hardware, Lifecycle


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


def check_velocity_limits(hw: Hardware) -> None:
    """A rate-limited command stream (50 ms at full speed, whatever the period) is accepted and the
    robot never exceeds its limits."""
    hw.configure()
    hw.activate()
    q0 = hw.read().position
    direction = np.where(q0 < (hw.limits.position_min + hw.limits.position_max) / 2, 1.0, -1.0)
    q_cmd = q0.copy()
    worst = 0.0
    for _ in range(int(round(0.05 / hw.period_s))):
        q_cmd = q_cmd + direction * hw.limits.velocity_max * hw.period_s
        hw.write(q_cmd)
        hw.advance()
        s = hw.read()
        worst = max(worst, float(np.max(np.abs(s.velocity) / hw.limits.velocity_max)))
    assert worst <= 1.0 + 1e-6, f"joint speed reached {worst:.6f} x its limit"
    moved = hw.read().position - q0
    assert np.all(moved * direction > 0), "robot did not follow the commanded direction"
    hw.close()


def check_stereo(hw: Hardware) -> None:
    hw.configure()
    hw.activate()
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
    for f in (check_lifecycle, check_joint_state, check_rejects_bad_commands, check_velocity_limits,
              check_stereo, check_drill)
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


FAULT_CHECKS: dict[str, Callable[[Hardware, FaultInjector], None]] = {
    f.__name__.removeprefix("check_fault_"): f
    for f in (check_fault_nan_joint_states, check_fault_freeze_joint_states, check_fault_delay_joint_states,
              check_fault_disconnect)
}


def check_hardware(factory: Callable[[], Hardware]) -> None:
    """Run all checks, each on a fresh instance; raise AssertionError on the first failure."""
    for name, check in CHECKS.items():
        hw = factory()
        try:
            check(hw)
        except AssertionError as exc:
            raise AssertionError(f"{hw.name}: check {name!r} failed: {exc}") from exc
        finally:
            hw.close()
