"""Bone removal (twin.milling): material, swept volume, rate, force, breaches, the flap; the
incremental skull re-render; the milling world step."""
from __future__ import annotations

import copy
import dataclasses
import tomllib
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from scenes.milling_params import MillingParameterError, MillingParams
from scenes.robot_description import RobotDescription
from scenes.schema import ConfigError
from scenes.spec import DEFAULT_SCENE, MILLING_FIELDS_IN_FILE, load_scene
from twin.milling import COS_MIN, NO_CONTACT, BoneMill, carve_sphere
from twin.skull import CellBox, Skull, SkullParams

R_BURR = 0.5e-3
#: a small skull grid (x in [-2.5, 2.5] mm, y in [-5.1, 0.9] mm) keeps the tests quick
SMALL = SkullParams(milling_half_width_m=2.5e-3, milling_half_length_m=3e-3)
CENTRE = (0.0, -2.1e-3)
FAST = settings(max_examples=25, deadline=None)


@lru_cache(maxsize=1)
def _pristine() -> BoneMill:
    return BoneMill(Skull(SMALL), MillingParams())


def fresh_mill(params: MillingParams | None = None) -> BoneMill:
    """An untouched small skull with its mill (copies of one built once)."""
    mill = copy.deepcopy(_pristine())
    return mill if params is None else BoneMill(mill.skull, params)


def surface_point(sk: Skull, x: float, y: float) -> np.ndarray:
    return np.array([x, y, float(sk.outer_height(x, y))])


def exact_lower_envelope(sk: Skull, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Exact lower surface (m) of the capsule a-b of radius r over the whole grid (+inf off it).

    For a fixed cell p, f(s) = c_z(s) - sqrt(r^2 - |p - c_xy(s)|^2) is convex in s on the
    interval where the sphere covers p, so a ternary search finds its minimum."""
    g = sk.grid
    out = np.full((g.ny, g.nx), np.inf)
    j0, j1 = (np.clip((np.array([min(a[0], b[0]) - r, max(a[0], b[0]) + r]) - g.x0) / g.cell, 0, g.nx - 1)
              .astype(int) + [0, 2])
    i0, i1 = (np.clip((np.array([min(a[1], b[1]) - r, max(a[1], b[1]) + r]) - g.y0) / g.cell, 0, g.ny - 1)
              .astype(int) + [0, 2])
    X, Y = np.meshgrid(g.xs[j0:j1], g.ys[i0:i1])
    w = b - a
    px, py = X - a[0], Y - a[1]
    L2 = w[0] ** 2 + w[1] ** 2
    if L2 > 0:           # |p - a - s w|^2 <= r^2: s in [s_lo, s_hi]
        pw = (px * w[0] + py * w[1]) / L2
        disc = pw ** 2 - (px ** 2 + py ** 2 - r * r) / L2
        ok = disc >= 0
        root = np.sqrt(np.where(ok, disc, 0.0))
        lo, hi = np.maximum(pw - root, 0.0), np.minimum(pw + root, 1.0)
        ok &= lo <= hi
    else:
        ok = px ** 2 + py ** 2 <= r * r
        lo, hi = np.zeros_like(px), np.ones_like(px)

    def f(s):
        d2 = (px - s * w[0]) ** 2 + (py - s * w[1]) ** 2
        return a[2] + s * w[2] - np.sqrt(np.maximum(r * r - d2, 0.0))

    for _ in range(60):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        left = f(m1) <= f(m2)
        hi, lo = np.where(left, m2, hi), np.where(left, lo, m1)
    out[i0:i1, j0:j1] = np.where(ok, f(0.5 * (lo + hi)), np.inf)
    return out


# ---- parameters and scene ------------------------------------------------------------------
def test_scene_milling_section_loads_and_overrides():
    s = load_scene()
    raw = tomllib.loads(DEFAULT_SCENE.read_text())["milling"]
    for key, field_name, scale in MILLING_FIELDS_IN_FILE:          # file units -> SI
        assert getattr(s.milling, field_name) == pytest.approx(raw[key] * scale, rel=1e-12)
    assert s.milling.burr_radius_m == s.drill.burr_radius_m
    o = load_scene(overrides={"milling.hardness_max": 1.6, "milling.skull_stiffness_n_per_mm": 2.0,
                              "drill.burr_radius_mm": 0.4}).milling
    assert o.hardness_max == 1.6 and o.skull_stiffness_n_per_m == pytest.approx(2000.0)
    assert o.burr_radius_m == pytest.approx(0.4e-3)
    with pytest.raises(ConfigError) as exc:
        load_scene(overrides={"milling.hardness_min": 2.0, "milling.max_deflection_um": -1})
    text = str(exc.value)
    assert "milling.max_deflection_um=-1 is outside" in text and "milling.hardness_min=2 exceeds" in text


def test_milling_params_name_bad_fields():
    with pytest.raises(MillingParameterError, match=r"milling.cut_rate_m_s=-1.0 is outside \[1e-06, 0.005\]"):
        MillingParams(cut_rate_m_s=-1.0)
    with pytest.raises(MillingParameterError, match="breach_tolerance_m=nan must be a finite number"):
        MillingParams(breach_tolerance_m=float("nan"))


def test_hardness_field_is_seeded_by_the_skull_and_in_range():
    a, b = fresh_mill(), BoneMill(Skull(dataclasses.replace(SMALL, seed=7)))
    assert np.array_equal(a.hardness, fresh_mill().hardness) and not np.array_equal(a.hardness, b.hardness)
    assert a.hardness.min() == pytest.approx(0.8, abs=1e-5) and a.hardness.max() == pytest.approx(1.4, abs=1e-5)


def test_skull_change_log_unions_boxes():
    sk = Skull(SMALL)
    v = sk.version
    assert sk.changed_since(v) is None
    sk.mark_changed(slice(10, 20), slice(30, 40))
    sk.mark_changed(slice(15, 50), slice(5, 35))
    assert sk.changed_since(v) == CellBox(10, 50, 5, 40)
    assert sk.changed_since(v + 1) == CellBox(15, 50, 5, 35)
    sk.mark_changed()
    assert sk.changed_since(v + 2) == CellBox(0, sk.grid.ny, 0, sk.grid.nx)
    assert sk.changed_since(-1) == CellBox(0, sk.grid.ny, 0, sk.grid.nx)


# ---- material ----------------------------------------------------------------------------------
step_moves = st.lists(st.tuples(st.floats(-0.8e-3, 0.8e-3), st.floats(-0.8e-3, 0.8e-3),
                                st.floats(-0.3e-3, 0.15e-3), st.booleans(), st.floats(0.0, 40000.0),
                                st.floats(1e-3, 0.5)), min_size=2, max_size=10)


@FAST
@given(step_moves)
def test_material_never_reappears(moves):
    mill = fresh_mill()
    sk = mill.skull
    t, prev = 0.0, None
    for x, y, dz_bottom, on, rpm, dt in moves:
        p = surface_point(sk, CENTRE[0] + x, CENTRE[1] + y) + [0.0, 0.0, R_BURR + dz_bottom]
        before = sk.outer_z.copy()
        t += dt
        mill.step(t, p if prev is None else prev, p, on, rpm, dt)
        prev = p
        assert np.all(sk.outer_z <= before)
        assert np.all(sk.outer_z >= sk.inner_z)
        if not (on and rpm > 0):
            assert np.array_equal(sk.outer_z, before)


@FAST
@given(st.floats(-0.5e-3, 0.5e-3), st.floats(-0.5e-3, 0.5e-3), st.floats(-0.3e-3, 0.0),
       st.floats(-0.3e-3, 0.3e-3), st.floats(-0.3e-3, 0.3e-3), st.floats(-0.2e-3, 0.2e-3))
@example(0.0, 0.00021650293909262304, -0.00022372065303528728, 0.0, 0.0, -0.0001893947840768341)  # cracks through
def test_removal_is_confined_to_the_swept_volume(x, y, depth, dx, dy, dz):
    """With ample time (no rate limit) no cell is cut below the capsule's exact lower envelope
    unless the cut left it thinner than the crack thickness (it then cracked through to the inner
    surface), cells off its xy footprint are untouched, and the approximation stays within the
    period's vertical travel of the exact envelope."""
    mill = fresh_mill()
    sk = mill.skull
    a = surface_point(sk, CENTRE[0] + x, CENTRE[1] + y) + [0.0, 0.0, R_BURR + depth]
    b = a + [dx, dy, dz]
    before = sk.outer_z.copy()
    mill.step(1.0, a, b, True, 30000.0, 100.0)
    lower = exact_lower_envelope(sk, a, b, R_BURR)
    new = sk.outer_z
    off = ~np.isfinite(lower)
    assert np.array_equal(new[off], before[off])
    cracked = (new <= sk.inner_z) & (np.minimum(before, lower) - sk.inner_z
                                     < mill.params.crack_thickness_m + abs(dz) + 1e-9)
    assert np.all((new >= np.minimum(before, lower) - 1e-9) | cracked)
    bound = np.maximum(np.minimum(before, lower + abs(dz) + 1e-9), sk.inner_z)
    assert np.all(new[~off] <= bound[~off] + 1e-9)


@FAST
@given(st.floats(-0.5e-3, 0.5e-3), st.floats(-0.5e-3, 0.5e-3), st.floats(0.0, 0.4e-3),
       st.floats(1e-3, 0.1), st.floats(1000.0, 40000.0))
def test_one_step_removes_at_most_rate_times_dt(x, y, depth, dt, rpm):
    """The depth of cut along the burr's normal is at most rate * dt: a cell under a part of the
    sphere tilted by phi loses at most rate * dt / cos(phi) of height (cos from the geometry
    here: the sphere at the move's lower end, whose centre height the model uses), unless the cut left it thinner than the crack
    thickness (then it is through)."""
    mill = fresh_mill()
    sk, p = mill.skull, mill.params
    a = surface_point(sk, CENTRE[0] + x, CENTRE[1] + y) + [0.0, 0.0, R_BURR - depth]
    before = sk.outer_z.copy()
    c = mill.step(dt, a + [0.0, 0.0, 1e-4], a, True, rpm, dt)
    v = p.cut_rate_m_s * min(rpm / p.nominal_speed_rpm, 1.0) / mill.hardness
    removed = before - sk.outer_z
    rho2 = (sk.grid.xs[None, :] - a[0]) ** 2 + (sk.grid.ys[:, None] - a[1]) ** 2
    cos = np.clip(np.sqrt(np.maximum(R_BURR ** 2 - rho2, 0.0)) / R_BURR, COS_MIN, 1.0)
    cracked = (sk.outer_z <= sk.inner_z) & (before - sk.inner_z < v * dt / cos + p.crack_thickness_m + 1e-9)
    assert np.all((removed <= v * dt / cos * (1 + 1e-4) + 1e-10) | cracked)
    assert c.removed_volume_m3 == pytest.approx(removed.sum(dtype=np.float64) * sk.grid.cell ** 2, rel=1e-4)
    if depth > 5e-6:     # the cut is limited by the rate and by how deep the burr reaches
        assert c.in_contact and removed.max() > 0.9 * min(float(v.min()) * dt, depth)


def test_thin_bone_under_the_burr_cracks_through():
    """A cut that leaves less than crack_thickness_m of bone takes the cell through; one that
    leaves more does not, and with a crack thickness of 0 nothing cracks."""
    for crack, expect_through in ((10e-6, True), (0.0, False)):
        sk = copy.deepcopy(_pristine().skull)
        mill = BoneMill(sk, MillingParams(crack_thickness_m=crack))
        i, j = sk.grid.ny // 2, sk.grid.nx // 2
        x, y = float(sk.grid.xs[j]), float(sk.grid.ys[i])
        # burr bottom 6 um above the inner surface at the cell, ample time: the cut leaves 6 um
        a = np.array([x, y, float(sk.inner_z[i, j]) + 6e-6 + R_BURR])
        mill.step(100.0, a, a, True, 30000.0, 100.0)
        left = float(sk.outer_z[i, j] - sk.inner_z[i, j])
        assert (left <= 0.0) == expect_through, (crack, left)
        if not expect_through:
            assert left == pytest.approx(6e-6, abs=0.2e-6)


def test_no_contact_fast_path_changes_nothing():
    mill = fresh_mill()
    sk = mill.skull
    a = surface_point(sk, *CENTRE) + [0.0, 0.0, R_BURR + 0.3e-3]
    v = sk.version
    assert mill.step(0.02, a, a + [60e-6, 0.0, 0.0], True, 38000.0, 0.02) is NO_CONTACT
    assert sk.version == v and np.all(np.isnan(mill.first_contact_s))
    far = np.array([20e-3, 0.0, 0.0])                       # off the milling grid
    assert mill.step(0.02, far, far, True, 38000.0, 0.02) is NO_CONTACT


def test_time_maps_record_first_contact_and_through():
    mill = fresh_mill()
    sk = mill.skull
    top = surface_point(sk, *CENTRE) + [0.0, 0.0, R_BURR]
    bottom = np.array([*CENTRE, float(sk.inner_height(*CENTRE)) + R_BURR - 0.05e-3])
    mill.step(0.02, top, bottom, True, 38000.0, 0.02)
    for k in range(2, 1000):
        mill.step(0.02 * k, bottom, bottom, True, 38000.0, 0.02)
    i = int(round((CENTRE[1] - sk.grid.y0) / sk.grid.cell))
    j = int(round((CENTRE[0] - sk.grid.x0) / sk.grid.cell))
    fc, th = mill.first_contact_s[i, j], mill.through_s[i, j]
    assert fc == pytest.approx(0.02) and np.isfinite(th) and th > fc
    assert np.isnan(mill.first_contact_s[0, 0]) and np.isnan(mill.through_s[0, 0])
    assert mill.true_completion(*CENTRE) == pytest.approx(1.0)
    assert mill.true_completion(np.array([-2.0e-3]), np.array([CENTRE[1]]))[0] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="outside the skull's milling grid"):
        mill.true_completion(10e-3, 0.0)


# ---- force, deflection, breach ------------------------------------------------------------
def _interference(sk: Skull, c: np.ndarray) -> tuple[float, float]:
    """Largest overlap (m) of a burr at c with bone along the burr's normal, and the largest
    vertical push it gives an equally compliant head (normal overlap * cos(tilt)), computed
    directly on the grid."""
    X, Y = np.meshgrid(sk.grid.xs, sk.grid.ys)
    d2 = (X - c[0]) ** 2 + (Y - c[1]) ** 2
    inside = d2 <= R_BURR ** 2
    root = np.sqrt(np.maximum(R_BURR ** 2 - d2, 0.0))
    cos = np.clip(root / R_BURR, COS_MIN, 1.0)
    normal = (sk.outer_z - (c[2] - root)) * cos
    return max(float(normal[inside].max()), 0.0), max(float((normal * cos)[inside].max()), 0.0)


@FAST
@given(st.floats(-0.8e-3, 0.8e-3), st.floats(-0.8e-3, 0.8e-3), st.floats(1e-6, 0.4e-3))
def test_pushing_with_the_drill_off_is_a_spring_and_springs_back(x, y, push):
    mill = fresh_mill()
    sk, p = mill.skull, mill.params
    c = surface_point(sk, CENTRE[0] + x, CENTRE[1] + y) + [0.0, 0.0, R_BURR - push]
    before = sk.outer_z.copy()
    contact = mill.step(0.02, c, c, False, 0.0, 0.02)
    normal, push_down = _interference(sk, c)
    assert np.array_equal(sk.outer_z, before)
    assert contact.in_contact and contact.removed_volume_m3 == 0.0
    assert contact.force_n == pytest.approx(p.skull_stiffness_n_per_m * normal, rel=1e-4)
    assert contact.deflection_m == pytest.approx(min(push_down, p.max_deflection_m), rel=1e-4)
    assert contact.overload == (push_down > p.max_deflection_m)
    lifted = c + [0.0, 0.0, push + 0.1e-3]
    mill.step(0.04, c, lifted, False, 0.0, 0.02)         # still touching as the period starts
    again = mill.step(0.06, lifted, lifted, False, 0.0, 0.02)
    assert again.deflection_m == 0.0 and again.force_n == 0.0 and not again.in_contact
    assert mill.peak_force_n == pytest.approx(contact.force_n) and mill.overload == contact.overload


def _drill_vertically(mill: BoneMill, x: float, y: float, z_end: float, hold_s: float, dt: float = 0.02,
                      descent_m_s: float = 1e-3) -> float:
    """Lower the burr (drill on, 38000 rpm) from 0.1 mm above the surface to centre height
    ``z_end``, then hold there for ``hold_s``. Returns the end time."""
    sk = mill.skull
    z = float(sk.outer_height(x, y)) + R_BURR + 0.1e-3
    t = 0.0
    while True:
        z_next = max(z - descent_m_s * dt, z_end)
        t += dt
        mill.step(t, np.array([x, y, z]), np.array([x, y, z_next]), True, 38000.0, dt)
        if z_next == z_end:
            break
        z = z_next
    for _ in range(int(hold_s / dt)):
        t += dt
        mill.step(t, np.array([x, y, z_end]), np.array([x, y, z_end]), True, 38000.0, dt)
    return t


@settings(max_examples=8, deadline=None)
@given(st.floats(-0.8e-3, 0.8e-3), st.floats(-0.8e-3, 0.8e-3))
def test_breach_is_detected_when_driving_through_the_bone(x, y):
    mill = fresh_mill()
    sk = mill.skull
    x, y = CENTRE[0] + x, CENTRE[1] + y
    membrane = float(sk.membrane_height(x, y))
    _drill_vertically(mill, x, y, membrane - 0.1e-3 + R_BURR, hold_s=10.0)
    assert mill.breaches, "driving 0.1 mm below the membrane must breach it"
    b = mill.breaches[0]
    # (within 10 um: the membrane may rise towards the burr's side faster than the burr does)
    assert mill.params.breach_tolerance_m < b.depth_below_membrane_m <= 0.1e-3 + 10e-6
    assert np.hypot(b.x_s - x, b.y_s - y) < R_BURR
    out = mill.outcome(np.array(CENTRE), 1.5e-3)
    assert out.breaches == len(mill.breaches) and out.first_breach == b


@settings(max_examples=8, deadline=None)
@given(st.floats(-0.8e-3, 0.8e-3), st.floats(-0.8e-3, 0.8e-3))
def test_no_breach_when_stopping_at_the_inner_surface(x, y):
    """The burr lowered until it touches the inner surface (tangent to it) and held there
    mills through but does not breach."""
    mill = fresh_mill()
    sk = mill.skull
    x, y = CENTRE[0] + x, CENTRE[1] + y
    X, Y = np.meshgrid(sk.grid.xs, sk.grid.ys)
    d2 = (X - x) ** 2 + (Y - y) ** 2
    inside = d2 <= R_BURR ** 2
    z_touch = float((sk.inner_z + np.sqrt(np.maximum(R_BURR ** 2 - d2, 0.0)))[inside].max())
    _drill_vertically(mill, x, y, z_touch, hold_s=10.0)
    assert mill.through_s.size and np.isfinite(mill.through_s).any()
    assert not mill.breaches


# ---- the flap --------------------------------------------------------------------------------
def _carve_ring(sk: Skull, radius: float, skip_angle: float | None = None, skip_arc_m: float = 0.0) -> None:
    """Carve through along a circle about CENTRE, sphere centres 0.3 mm above the inner surface
    (through within ~0.4 mm of the circle), except within ``skip_arc_m`` (arc length) of ``skip_angle``."""
    n = int(np.ceil(2 * np.pi * radius / 20e-6))
    for th in 2 * np.pi * np.arange(n) / n:
        if skip_angle is not None and radius * abs(np.angle(np.exp(1j * (th - skip_angle)))) < skip_arc_m:
            continue
        x, y = CENTRE[0] + radius * np.cos(th), CENTRE[1] + radius * np.sin(th)
        carve_sphere(sk, np.array([x, y, float(sk.inner_height(x, y)) + 0.3e-3]), R_BURR)


def test_fully_carved_ring_is_detachable():
    mill = fresh_mill()
    _carve_ring(mill.skull, 1.2e-3)
    out = mill.outcome(np.array(CENTRE), 1.2e-3)
    assert out.detachable and out.max_bridge_m <= mill.params.break_threshold_m
    assert out.breaches == 0 and out.first_breach is None and not out.overload


def test_ring_with_an_uncut_sector_is_not_detachable_and_points_at_it():
    mill = fresh_mill()
    sk = mill.skull
    gap = 2.0
    # Through reaches ~0.46 mm from each sphere centre at the inner surface: skip the centres
    # within 0.1 + 0.46 mm (arc) of the gap's angle to leave a ~0.2 mm wide bridge.
    _carve_ring(sk, 1.2e-3, skip_angle=gap, skip_arc_m=0.1e-3 + np.sqrt(R_BURR ** 2 - 0.2e-3 ** 2))
    out = mill.outcome(np.array(CENTRE), 1.2e-3)
    assert not out.detachable and out.max_bridge_m > 0.05e-3
    assert abs(np.angle(np.exp(1j * (out.bridge_angle_rad - gap)))) < 0.1e-3 / 1.2e-3 + 0.02
    with pytest.raises(ValueError, match="must exceed the burr radius"):
        mill.outcome(np.array(CENTRE), 0.4e-3)


def test_carve_sphere_returns_volume_and_marks_the_box():
    sk = Skull(SMALL)
    v = sk.version
    c = surface_point(sk, *CENTRE) + [0.0, 0.0, R_BURR - 0.1e-3]
    vol = carve_sphere(sk, c, R_BURR)
    cap = np.pi * 0.1e-3 ** 2 * (3 * R_BURR - 0.1e-3) / 3          # spherical cap, flat surface
    assert vol == pytest.approx(cap, rel=0.15)
    box = sk.changed_since(v)
    assert box is not None and (box.r1 - box.r0) <= 2 * R_BURR / sk.grid.cell + 2
    assert carve_sphere(sk, c + [0.0, 0.0, 1e-3], R_BURR) == 0.0 and sk.version == v + 1


# ---- rendering -------------------------------------------------------------------------------
def test_incremental_render_equals_a_full_render():
    """Mill in small steps, render after each (incremental refresh), then compare with a new
    renderer's full render of the same skull: within 1 DN, labels equal, same ray depths."""
    from twin.world import make_stereo_renderer

    half = {"mscs.width_px": 480, "mscs.height_px": 270, "mscs.left.cx_px": 240.0, "mscs.left.cy_px": 135.0,
            "mscs.right.cx_px": 240.0, "mscs.right.cy_px": 135.0}       # the central quarter: quicker
    scene = load_scene(overrides=half)
    sk = Skull(SkullParams(**scene.skull.params))
    mill = BoneMill(sk, scene.milling)
    renderer = make_stereo_renderer(scene, sk, 3)
    T = RobotDescription(scene.robot.description_path).fk(scene.robot.home_q)
    untouched = renderer.render(T, None).left.copy()
    cx, cy = 0.0, -sk.params.bregma_lambda_m / 3
    t, a = 0.0, None
    for k in range(12):
        th = 0.06 * k
        x, y = cx + 2e-3 * np.cos(th), cy + 2e-3 * np.sin(th)
        b = np.array([x, y, float(sk.inner_height(x, y)) + R_BURR + 0.1e-3 - 0.3e-3 * (k % 2)])
        t += 0.5
        mill.step(t, b if a is None else a, b, True, 38000.0, 5.0)
        a = b
        if k % 3 == 2:
            renderer.render(T, None)
    inc = renderer.render(T, None)
    full = make_stereo_renderer(scene, sk, 3).render(T, None)
    for got, want in ((inc.left, full.left), (inc.right, full.right)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert np.array_equal(inc.labels_left, full.labels_left) and np.array_equal(inc.labels_right, full.labels_right)
    assert mill.completion_grid().max() > 0.99             # the groove went through somewhere ...
    assert (np.abs(inc.left.astype(int) - untouched).max(axis=2) > 20).sum() > 200   # ... in view


# ---- the world -------------------------------------------------------------------------------
def test_world_mills_with_the_drill_on_and_pybullet_follows_lazily():
    from twin.world import TwinWorld

    scene = load_scene(overrides={"control.period_s": 0.02})
    world = TwinWorld(scene, seed=0)
    try:
        sk = world.skull
        x, y = 0.5e-3, -1.4e-3
        p = surface_point(sk, x, y) + [0.0, 0.0, R_BURR - 20e-6]
        q = world.joints_placing_burr_at(p, scene.robot.home_q)
        world.arm.reset(q)
        world.step()                                        # drill off: pushes, no cut
        assert world.last_contact.in_contact and world.last_contact.removed_volume_m3 == 0.0
        assert world.last_contact.force_n == pytest.approx(scene.milling.skull_stiffness_n_per_m * 20e-6, rel=0.3)
        world.drill_on, world.drill_speed_rpm = True, 38000.0
        before = float(sk.outer_height(x, y))
        world.step()
        assert world.last_contact.in_contact and world.last_contact.removed_volume_m3 > 0
        for _ in range(100):                               # the cut reaches the burr: contact ends
            world.step()
        assert not world.last_contact.in_contact
        assert float(sk.outer_height(x, y)) == pytest.approx(before - 20e-6, abs=2e-6)
        assert world.mill.true_completion(x, y) > 0.01
        tr = world.mill_trace.arrays()                      # the ground-truth trace: one row per period
        assert len(world.mill_trace) == 102 and tr["t_s"][-1] == pytest.approx(world.time_s)
        assert tr["force_n"][0] == pytest.approx(scene.milling.skull_stiffness_n_per_m * 20e-6, rel=0.3)
        assert tr["force_n"][-1] == 0.0 and np.all(np.isnan(tr["breach_depth_m"]))
        assert np.allclose(tr["burr_s"][-1], world.burr_centre_s(world.arm.state()[0]))
        # the arm moves; PyBullet's kinematics, synced on demand, agrees with DQ Robotics
        world.arm.set_target(world.joints_placing_burr_at(p + [0.3e-3, 0.0, 1e-3], q))
        for _ in range(10):
            world.step()
        pos, _ = world.arm.tool_pose_pybullet()
        assert np.linalg.norm(pos - world.robot.fk(world.arm.state()[0])[:3, 3]) < 1e-6
    finally:
        world.close()


def test_mill_trace_is_bounded_and_keeps_the_whole_run():
    from twin.milling import Breach, MillContact, MillTrace

    trace = MillTrace(capacity=8)
    for k in range(1, 21):
        breach = Breach(0.1 * k, 0.0, 0.0, 30e-6) if k == 20 else None
        trace.append(0.1 * k, np.array([k, 0.0, 0.0]), MillContact(True, 0.01 * k, 1e-6 * k, False, 0.0, breach))
    t = trace.arrays()["t_s"]
    assert len(trace) <= trace.capacity == 8
    assert np.all(np.diff(t) > 0) and t[-1] == pytest.approx(2.0) and t[0] <= 0.8   # newest kept, early run too
    a = trace.arrays()
    assert a["burr_s"][-1, 0] == 20 and a["deflection_m"][-1] == pytest.approx(20e-6)
    assert a["breach_depth_m"][-1] == pytest.approx(30e-6) and np.isnan(a["breach_depth_m"][:-1]).all()
    with pytest.raises(ValueError, match="even number"):
        MillTrace(capacity=7)


def test_compiled_mill_equals_the_numpy_reference():
    """The compiled envelope and cut (twin.milling_kernels) mill exactly as their NumPy form
    (tests/milling_reference.py): the same contacts, breaches, surfaces and time maps, bit for
    bit, along paths that are oblique, level, vertical and still, with the drill on and off,
    down through the bone and into the membrane."""
    from milling_reference import ReferenceBoneMill

    fast = fresh_mill()
    ref = ReferenceBoneMill(copy.deepcopy(_pristine().skull), MillingParams())
    rng = np.random.default_rng(7)
    sk = fast.skull
    p = surface_point(sk, CENTRE[0], CENTRE[1]) + [0.0, 0.0, 0.2e-3]
    moves = ([rng.normal(0.0, 30e-6, 3) for _ in range(60)] + [np.array([20e-6, 0.0, 0.0])] * 10
             + [np.array([0.0, 0.0, -15e-6])] * 80 + [np.zeros(3)] * 3 + [np.array([0.0, 10e-6, -2e-6])] * 40)
    for k, d in enumerate(moves):
        q = p + d + [0.0, 0.0, -3e-6]
        on = k % 17 != 5
        args = (0.02 * (k + 1), p, q, on, 60000.0 if on else 0.0, 0.02)
        assert fast.step(*args) == ref.step(*args)
        p = q
    for name in ("outer_z", "inner_z"):
        assert np.array_equal(getattr(fast.skull, name), getattr(ref.skull, name))
    assert np.array_equal(fast.first_contact_s, ref.first_contact_s, equal_nan=True)
    assert np.array_equal(fast.through_s, ref.through_s, equal_nan=True)
    assert fast.breaches and fast.breaches == ref.breaches
