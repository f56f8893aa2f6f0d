"""The milling motion controller: virtual floor geometry and the QP never commanding below it.
The closed-loop tests run on the mock backend (the twin's servo model without a world) over the
twin's skull geometry: motion is the point, not images or bone."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.motion.milling_control import (MillingControlParams, MillingMotionController, QuadprogSolver,
                                                VirtualFloor, WindowFrame)
from controllers.pipeline import open_session
from hw_bridge.registry import make_hardware
from scenes.frames import apply, make_transform
from scenes.spec import load_scene
from twin.skull import Skull, SkullParams

N = 16
THETA = 2 * np.pi * np.arange(N) / N


def _frame(tilt: float = 0.2) -> WindowFrame:
    axis = np.array([np.sin(tilt), 0.0, np.cos(tilt)])
    e1 = np.array([np.cos(tilt), 0.0, -np.sin(tilt)])
    return WindowFrame(np.array([0.05, -0.17, 1.04]), axis, e1, np.cross(axis, e1))


floors = st.lists(st.floats(-1e-3, 1e-3), min_size=N, max_size=N).map(np.array)


@given(floors, st.floats(0, 2 * np.pi, exclude_max=True))
def test_floor_interpolates_knots_and_is_continuous(fl, theta):
    f = VirtualFloor(_frame(), THETA, fl)
    np.testing.assert_allclose(f.height_at(THETA), fl, atol=1e-15)
    lo, hi = min(fl.min(), fl.max()), max(fl.min(), fl.max())
    assert lo - 1e-15 <= f.height_at(theta) <= hi + 1e-15
    eps = 1e-9
    assert abs(f.height_at(theta + eps) - f.height_at(theta - eps)) <= 1e-3 * 2 * eps * N   # Lipschitz: continuous
    assert abs(f.height_at(2 * np.pi - 1e-12) - fl[0]) < 1e-9                              # wraps


@given(floors, st.floats(0.5e-3, 3e-3), st.floats(0, 2 * np.pi), st.floats(-1e-3, 1e-3))
def test_clearance_gradient_matches_finite_differences(fl, r, theta, h):
    fr = _frame()
    f = VirtualFloor(fr, THETA, fl)
    p = fr.point(theta, r, h)
    g = f.clearance_gradient(p)
    d = 1e-9
    fd = np.array([(f.clearance(p + d * e) - f.clearance(p - d * e)) / (2 * d) for e in np.eye(3)])
    # Away from a knot the floor is linear in angle; at a knot the slope jumps (skip those).
    k = np.argmin(np.abs(np.angle(np.exp(1j * (theta - THETA)))))
    if abs(np.angle(np.exp(1j * (theta - THETA[k])))) * r > 1e-7:
        np.testing.assert_allclose(g, fd, atol=1e-5)


def test_floor_rejects_bad_knots():
    with pytest.raises(ValueError, match="theta_rad"):
        VirtualFloor(_frame(), THETA[::-1], np.zeros(N))
    with pytest.raises(ValueError, match="finite"):
        VirtualFloor(_frame(), THETA, np.full(N, np.nan))


def test_params_validated():
    with pytest.raises(ValueError, match="velocity_scale"):
        MillingControlParams(velocity_scale=1.5)


def test_quadprog_solver_meets_constraints():
    """min |u - (2, 2)|^2 s.t. u1 + u2 <= 1, u1 = 0.2 -> (0.2, 0.8)."""
    u = QuadprogSolver().solve_quadratic_program(2 * np.eye(2), -4 * np.ones(2), np.array([[1.0, 1.0]]),
                                                 np.array([1.0]), np.array([[1.0, 0.0]]), np.array([0.2]))
    np.testing.assert_allclose(u, [0.2, 0.8], atol=1e-9)


@pytest.fixture(scope="module")
def rig():
    scene = load_scene("default", overrides={"control.period_s": 0.02})
    hw = make_hardware("mock", scene, seed=3)
    hw.configure()
    sk, T = Skull(SkullParams(**scene.skull.params)), scene.T_s_to_r
    c_s = np.array([0.0, -1.4e-3, 0.0])
    c_s[2] = sk.outer_height(c_s[0], c_s[1])
    pts_s = np.stack([2e-3 * np.cos(THETA), -1.4e-3 + 2e-3 * np.sin(THETA), np.zeros(N)], 1)
    pts_s[:, 2] = sk.outer_height(pts_s[:, 0], pts_s[:, 1])
    nrm_r = sk.outer_normal(pts_s[:, 0], pts_s[:, 1]) @ T[:3, :3].T
    fr = WindowFrame.from_points(apply(T, c_s), apply(T, pts_s), nrm_r)
    s = open_session(hw)
    R = s.R_tool_to_r
    assert s.pc.move_to(s.loop, make_transform(R, fr.point(0.0, 2e-3, 1.5e-3)), timeout_s=30).reached
    yield hw, s, fr, R
    hw.close()


def _circle_over_floor(rig, floor: VirtualFloor, target_height, periods: int):
    """From 1 mm above point 0, step the controller around the 2 mm circle at 3 mm/s towards
    ``target_height(theta)`` for ``periods``; returns it and each command's floor clearance (m)."""
    hw, s, fr, R = rig
    loop = s.loop
    s.pc.move_to(loop, make_transform(R, fr.point(0.0, 2e-3, 1.0e-3)), timeout_s=30)
    mc = MillingMotionController(hw.rig, floor, R)
    theta, omega = 0.0, 3e-3 / 2e-3
    clearances = []
    for _ in range(periods):
        theta += omega * loop.period_s
        loop.command(mc.command(loop.state.position, loop.q_cmd, fr.point(theta, 2e-3, target_height(theta)),
                                np.zeros(3)))
        clearances.append(floor.clearance(hw.robot.tool_position(loop.q_cmd)))
    return mc, clearances


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(-0.3e-3, 0.3e-3), min_size=N, max_size=N), st.floats(-3e-3, 1e-3))
def test_controller_never_commands_below_the_floor(rig, floor_offsets, target_h):
    """Whatever the target (often far below the floor), every command keeps the burr above it."""
    floor = VirtualFloor(rig[2], THETA, 0.4e-3 + np.asarray(floor_offsets))
    _, clearances = _circle_over_floor(rig, floor, lambda theta: target_h, 60)
    assert min(clearances) >= -1e-9


def test_controller_rides_an_uneven_floor(rig):
    """Targets on the floor itself (as the planner gives when every point sits on its floor):
    the burr follows it around the circle, never below it."""
    hw, s, fr, R = rig
    floor = VirtualFloor(fr, THETA, 0.4e-3 + 0.2e-3 * np.sin(3 * THETA))
    _, clearances = _circle_over_floor(rig, floor, lambda theta: float(floor.height_at(theta)), 150)
    assert min(clearances) >= -1e-9
    assert np.median(clearances[-50:]) < 5e-6   # on the floor (up to ~25 um over its peaks, where the slope flips)
    assert fr.angle_of(hw.robot.tool_position(s.loop.q_cmd)) > 4.0              # travelled ~4.5 rad


def test_controller_tracks_a_circle(rig):
    hw, s, fr, R = rig
    loop = s.loop
    floor = VirtualFloor(fr, THETA, np.full(N, -1e-3))
    s.pc.move_to(loop, make_transform(R, fr.point(0.0, 2e-3, 1.0e-3)), timeout_s=30)
    mc = MillingMotionController(hw.rig, floor, R)
    theta, omega, v = 0.0, 3e-3 / 2e-3, 3e-3
    errs = []
    for k in range(200):
        target = fr.point(theta, 2e-3, 1.0e-3)
        vel = v * (-np.sin(theta) * fr.e1_r + np.cos(theta) * fr.e2_r)
        loop.command(mc.command(loop.state.position, loop.q_cmd, target, vel))
        theta += omega * loop.period_s
        if k > 20:   # the command reaches where the target will be at the end of the period
            errs.append(np.linalg.norm(hw.robot.tool_position(loop.q_cmd) - fr.point(theta, 2e-3, 1.0e-3)))
    assert np.max(errs) < 10e-6     # a few um: the QP acts on measured joints (encoder noise 1e-6 rad)
    T = hw.robot.fk(loop.q_cmd)
    assert np.degrees(np.arccos(np.clip((np.trace(R.T @ T[:3, :3]) - 1) / 2, -1, 1))) < 0.01   # axis kept
