"""Bone removal by the spherical burr: material, contact force, membrane breaches, the flap.

Everything is in the skull frame {S} (z dorsal), in metres, seconds and newtons.
``BoneMill.step`` is called once per control period with the burr centre's motion; the
model is quasi-static (no dynamics within or across periods):

1. **Swept envelope.** The burr (radius r) moves from ``a`` to ``b`` in undeflected skull
   coordinates. On every cell ``p`` of the footprint's bounding box the lower surface of the
   swept burr is approximated by

       env(p) = min over c in {a, b, c*(p)} of  c_z - sqrt(r^2 - |p - c_xy|^2)

   (a sphere counts only where ``|p - c_xy| <= r``; off the footprint ``env = +inf``), with
   ``c*(p)`` the point of the segment closest to ``p`` in xy. Every ``c`` is a point of the
   segment, so ``env`` is never below the true swept volume and removal stays inside it. It
   is exact for horizontal and for vertical moves; for oblique ones it lies at most the
   period's vertical travel above the true envelope (a few um at milling speeds).
2. **Cutting** (drill on, speed > 0). The cut rate is a depth of cut per second along the
   burr's surface normal (chips are cut perpendicular to the burr): a cell under a part of the
   burr tilted by phi loses height ``v / cos(phi)`` per second, ``cos(phi) = (z_c - env) / r``
   (``z_c`` the lower end's burr-centre height, exact for level and vertical moves and at most
   the period's vertical travel off for oblique ones; clipped to ``COS_MIN``, 87 deg, at the rim),
   with ``v = cut_rate / hardness * min(speed / nominal_speed, 1)``:

       outer' = max(min(outer, max(env, outer - v dt / cos(phi))), inner)

   bone above the envelope goes, at most ``v dt / cos(phi)`` per cell and period, never below
   the inner surface (a cell whose outer surface reaches the inner one is *through*). **Thin bone
   cracks**: a cell the burr cut this period that is left thinner than ``crack_thickness_m``
   breaks through (a strip of bone ~10 um thick is softer than the head in its holder, so it
   flexes away from the burr and fractures instead of being cut; see docs/bone_model.md).
   Drill off: no cut. ``hardness`` is a smooth random field (``FourierField``, 8 waves,
   wavelengths 2-6 mm, seeded by the skull's seed) mapped linearly onto
   [hardness_min, hardness_max]. (Before issue 13 the rate was vertical: cells on the steep
   flank of the groove, grazed by the burr's rim, could lose only ``v dt`` of height per period
   and stood up to 150 um above the burr's surface, which the model read as a 150 um push on the
   head; see docs/bone_model.md.)
3. **Interference, deflection, force.** With ``e = outer' - env`` (vertical overlap) on cells
   holding bone (cells with at most 0.1 um of bone left hold none), the overlap along the burr's
   surface normal is ``e cos(phi)``. The head, a spring of stiffness ``k`` in its holder, equally
   compliant in every direction (an assumption), gives way along that normal; its vertical
   deflection is ``delta = min(max(e cos^2(phi)), max_deflection)``: a push on the burr's bottom
   moves the head down by the full overlap, a push on a steep groove wall mostly sideways. The
   contact force is ``F = k max(e cos(phi))``. ``max(e cos^2(phi)) > max_deflection`` is an
   *overload* fault: the holder is solid there, the real force exceeds ``F`` and the burr
   overlaps bone. The head springs back at once (quasi-static: a head of a few grams on a spring
   of a few N/mm rings at 100-400 Hz, faster than the 20 ms control period): the next period
   starts undeflected. The cut is evaluated against the undeflected skull, so the cut rate, not
   the compliance, bounds how fast the burr sinks; deflection only stores the excess.
4. **Breach.** The membrane moves with the skull, so relative to it the burr's lower surface
   is at ``env + delta``. At through cells, ``env + delta < membrane - breach_tolerance`` is a
   breach of depth ``membrane - (env + delta)``: one ``Breach`` (the deepest cell) per period
   that has any, and a count.
5. **Bookkeeping.** Per-cell float32 maps ``first_contact_s`` (first period end at which the
   burr's envelope reached the cell's bone surface) and ``through_s`` (when the cell went
   through), NaN = never; peak force, largest deflection, overload (latched), removed volume.

``outcome`` judges the window: along each of 720 radial segments [R - r, R + r] across the
milled circle the thinnest remaining bone is that angle's *bridge*; the flap detaches when the
thickest bridge is at most ``break_threshold``. (Radial segments stand in for any path from
flap to skull; the groove is annular, so the thinnest crossing is radial.)

The per-cell passes of steps 1-3 and 5 (envelope, cut, interference, time stamps) run as numba
kernels (``twin.milling_kernels``) that repeat the float32 NumPy operations one for one; the
results are bit-identical to the NumPy form kept in ``tests/milling_reference.py``.

Approximations, beyond the above: bone is a height field (no undercuts; thickness along z);
only the skull's milling grid holds bone (a burr elsewhere touches nothing); the cut rate
does not depend on contact area, feed direction, heat, chip clearing or burr wear; the lateral
deflection of the head is not carried over to the burr's position (the membrane moves with the
skull, and only vertical motion brings the burr closer to it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scenes.milling_params import MillingParameterError, MillingParams  # noqa: F401 (re-exported)
from twin import milling_kernels as kernels
from twin.skull import CellBox, FourierField, Grid, Skull

#: a cell with at most this much bone left (m) is through
THROUGH_TOL_M = 0.1e-6
#: cosine of the steepest burr-surface tilt the normal-direction cut rate and push use (87 deg):
#: at the burr's rim the normal is horizontal, and a cut rate divided by it would be unbounded
COS_MIN = 0.05
#: cells per side of the blocks of the coarse maximum maps (fast no-contact test)
_BLOCK = 16
#: (thickness - THROUGH_TOL_M) * this caps a cell's interference: 0 for through cells, >= 7 mm
#: (far above any burr overlap) one float32 step above the tolerance
_THROUGH_GATE_PER_M = 1e12


@dataclass(frozen=True)
class Breach:
    """The burr pressed into the membrane: at time ``t_s`` (s), cell (``x_s``, ``y_s``) (m, {S}),
    ``depth_below_membrane_m`` (m, > breach tolerance) below the membrane's surface."""

    t_s: float
    x_s: float
    y_s: float
    depth_below_membrane_m: float


@dataclass(frozen=True)
class MillContact:
    """What one period of milling did. ``force_n`` (N) = stiffness * interference;
    ``deflection_m`` (m): how far the head gave way; ``overload``: the interference exceeded the
    holder's travel; ``removed_volume_m3`` (m^3); ``breach``: this period's deepest breach."""

    in_contact: bool
    force_n: float
    deflection_m: float
    overload: bool
    removed_volume_m3: float
    breach: Breach | None = None


NO_CONTACT = MillContact(False, 0.0, 0.0, False, 0.0, None)


@dataclass(frozen=True)
class MillOutcome:
    """The window after milling. ``max_bridge_m`` (m): thickest bone bridge left across the
    circle, at polar angle ``bridge_angle_rad`` (rad, about the centre, from +x of {S});
    ``detachable``: every bridge is at most the break threshold; ``breaches``: number of periods
    with a membrane breach, ``first_breach`` the first; ``peak_force_n`` (N),
    ``max_deflection_m`` (m), ``overload`` over the whole run."""

    max_bridge_m: float
    bridge_angle_rad: float
    detachable: bool
    breaches: int
    first_breach: Breach | None
    peak_force_n: float
    max_deflection_m: float
    overload: bool


class MillTrace:
    """SIM-ONLY GROUND TRUTH: the milling physics per control period, for explaining failures
    (``scenarios.failure``). Controllers never see it (it lives on the twin world).

    One row per ``BoneMill.step`` (``TwinWorld.step``): ``t_s`` (s, end of the period, the
    hardware clock), the burr centre ``burr_s`` (m, {S}, undeflected, end of the period),
    ``force_n`` (N), ``deflection_m`` (m) and ``breach_depth_m`` (m below the membrane; NaN: no
    breach that period). Bounded: rows live in preallocated arrays of ``capacity`` rows; when
    they are full every other stored row is dropped (the older half of the run keeps half the
    time resolution, and so on), so memory stays fixed however long the run. Every breach is
    also in ``BoneMill.breaches`` at full resolution."""

    _COLUMNS = ("t_s", "x_s", "y_s", "z_s", "force_n", "deflection_m", "breach_depth_m")

    def __init__(self, capacity: int = 1 << 16):
        if capacity < 2 or capacity % 2:
            raise ValueError(f"MillTrace: capacity={capacity!r} must be an even number >= 2")
        self._rows = np.empty((capacity, len(self._COLUMNS)), np.float64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return self._rows.shape[0]

    def append(self, t_s: float, burr_s: np.ndarray, contact: MillContact) -> None:
        """Add one period's row (halving the stored rows first when full)."""
        if self._n == self.capacity:
            half = self.capacity // 2
            self._rows[:half] = self._rows[1::2]       # keep the later row of each pair (the newest stays)
            self._n = half
        b = contact.breach
        self._rows[self._n] = (t_s, burr_s[0], burr_s[1], burr_s[2], contact.force_n, contact.deflection_m,
                               math.nan if b is None else b.depth_below_membrane_m)
        self._n += 1

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored rows as columns (copies): ``t_s`` (s), ``burr_s`` (m, {S}, (N, 3)),
        ``force_n`` (N), ``deflection_m`` (m), ``breach_depth_m`` (m, NaN: none)."""
        r = self._rows[:self._n]
        return {"t_s": r[:, 0].copy(), "burr_s": r[:, 1:4].copy(), "force_n": r[:, 4].copy(),
                "deflection_m": r[:, 5].copy(), "breach_depth_m": r[:, 6].copy()}


class _Scratch:
    """Reusable work arrays, grown on demand, so that a step allocates no grid-sized arrays."""

    def __init__(self):
        self._flat: dict[str, np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, int], dtype=np.float32) -> np.ndarray:
        n = shape[0] * shape[1]
        buf = self._flat.get(name)
        if buf is None or buf.size < n:
            buf = self._flat[name] = np.empty(max(n, 4096), dtype)
        return buf[:n].reshape(shape)


def _footprint_box(grid: Grid, ax: float, ay: float, bx: float, by: float, r: float) -> CellBox | None:
    """Grid cells within ``r`` (xy) of the bounding box of segment a-b; None if off the grid."""
    inv = 1.0 / grid.cell
    j0 = max(math.ceil((min(ax, bx) - r - grid.x0) * inv), 0)
    j1 = min(math.floor((max(ax, bx) + r - grid.x0) * inv), grid.nx - 1) + 1
    i0 = max(math.ceil((min(ay, by) - r - grid.y0) * inv), 0)
    i1 = min(math.floor((max(ay, by) + r - grid.y0) * inv), grid.ny - 1) + 1
    if j1 <= j0 or i1 <= i0:
        return None
    return CellBox(i0, i1, j0, j1)


def _swept_envelope(xs: np.ndarray, ys: np.ndarray, box: CellBox, a: tuple[float, float, float],
                    b: tuple[float, float, float], r: float, sc: _Scratch) -> np.ndarray:
    """Lower envelope z (m) of a sphere of radius ``r`` swept from ``a`` to ``b`` on the cells of
    ``box`` (float32 work array of ``sc``; +inf off the footprint): min over the spheres at ``a``,
    ``b`` and ``c*`` (see the module docstring). The higher endpoint's sphere never lies below
    c*'s (its centre is no lower and no nearer in xy), so only the lower endpoint is evaluated;
    c* is skipped when it is within 0.05 um of an endpoint. Square roots of negatives mark cells
    off a sphere's footprint with NaN, which the minima skip. Compiled:
    ``milling_kernels.swept_envelope`` (float32 throughout)."""
    ax, ay, az = a
    dx, dy, dz = b[0] - ax, b[1] - ay, b[2] - az
    X = (xs[box.cols] - ax).astype(np.float32)
    Y = (ys[box.rows] - ay).astype(np.float32)
    env = sc.take("env", (Y.size, X.size))
    L2 = dx * dx + dy * dy
    oblique = L2 > (1e-4 * r) ** 2
    consts = np.array([dx / L2 if oblique else 0.0, dy / L2 if oblique else 0.0, L2, dz, az, b[2], dx, dy],
                      np.float64).astype(np.float32)
    kernels.swept_envelope(X, Y, np.float32(r * r), consts, oblique, dz == 0,
                           dz > 0 or (dz == 0 and L2 == 0), env)
    return env


def _block_max(field: np.ndarray, block: int) -> np.ndarray:
    """Maximum of ``field`` over blocks of ``block`` x ``block`` cells (edge blocks partial)."""
    ny, nx = field.shape
    pad = np.full((-(-ny // block) * block, -(-nx // block) * block), -np.inf, np.float32)
    pad[:ny, :nx] = field
    return pad.reshape(pad.shape[0] // block, block, pad.shape[1] // block, block).max(axis=(1, 3))


def _bilinear(grid: Grid, fields: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Bilinear samples of each grid field at points (x, y) (m); raises outside the grid."""
    if not np.all(grid.contains(x, y)):
        raise ValueError(
            f"query outside the skull's milling grid x in [{grid.x0:.4f}, "
            f"{grid.x0 + grid.cell * (grid.nx - 1):.4f}] m, y in "
            f"[{grid.y0:.4f}, {grid.y0 + grid.cell * (grid.ny - 1):.4f}] m")
    fx = (x - grid.x0) / grid.cell
    fy = (y - grid.y0) / grid.cell
    j = np.clip(np.floor(fx).astype(np.intp), 0, grid.nx - 2)
    i = np.clip(np.floor(fy).astype(np.intp), 0, grid.ny - 2)
    u, v = fx - j, fy - i
    return [(f[i, j] * (1 - u) + f[i, j + 1] * u) * (1 - v) + (f[i + 1, j] * (1 - u) + f[i + 1, j + 1] * u) * v
            for f in fields]


def carve_sphere(skull: Skull, centre_s: np.ndarray, radius_m: float) -> float:
    """Remove all bone inside a sphere (centre in {S}, m): no rate limit, no force (datasets
    and tests). Never below the inner surface. Returns the removed volume (m^3)."""
    c = tuple(float(v) for v in centre_s)
    g = skull.grid
    box = _footprint_box(g, c[0], c[1], c[0], c[1], radius_m)
    if box is None:
        return 0.0
    env = _swept_envelope(g.xs, g.ys, box, c, c, radius_m, _Scratch())
    outer = skull.outer_z[box.rows, box.cols]
    new = np.maximum(np.minimum(outer, env), skull.inner_z[box.rows, box.cols])
    removed = float((outer - new).sum()) * g.cell ** 2
    if removed > 0:
        outer[...] = new
        skull.mark_changed(box.rows, box.cols)
    return removed


class BoneMill:
    """The material-removal model of one ``Skull`` (which it edits): see the module docstring.
    Build it on the untouched skull: completion is measured from the thickness at construction."""

    def __init__(self, skull: Skull, params: MillingParams = MillingParams()):
        self.skull = skull
        self.params = p = params
        g = skull.grid
        self._xs, self._ys = g.xs, g.ys
        rng = np.random.default_rng(np.random.SeedSequence([int(skull.params.seed), 0x4A2D]))
        h = FourierField(rng, 8, 2e-3, 6e-3).grid(self._xs, self._ys)
        h = (h - h.min()) / max(float(h.max() - h.min()), 1e-12)
        #: relative hardness of each cell (dimensionless, in [hardness_min, hardness_max])
        self.hardness = (p.hardness_min + (p.hardness_max - p.hardness_min) * h).astype(np.float32)
        self._inv_hardness = (1.0 / self.hardness).astype(np.float32)
        #: bone thickness (m) per cell when the mill was built (build it on the untouched skull),
        #: the reference of ``true_completion``
        self.initial_thickness = skull.outer_z - skull.inner_z
        self._first_contact = np.full((g.ny, g.nx), np.nan, np.float32)
        self._through = np.full((g.ny, g.nx), np.nan, np.float32)
        # Conservative bounds for the no-contact test and the breach test: bone is only ever
        # removed and the membrane does not move, so maxima taken now stay upper bounds.
        self._outer_bound = _block_max(skull.outer_z, _BLOCK)
        self._membrane_bound = _block_max(skull.membrane_z, _BLOCK)
        self._scratch = _Scratch()
        self.breaches: list[Breach] = []
        self.peak_force_n = 0.0
        self.max_deflection_m = 0.0
        self.overload = False
        self.removed_volume_m3 = 0.0

    # ---- per-cell time maps ----------------------------------------------------------------
    @property
    def first_contact_s(self) -> np.ndarray:
        """(ny, nx) float32, read-only: time (s) the burr first reached each cell's bone; NaN never."""
        view = self._first_contact.view()
        view.flags.writeable = False
        return view

    @property
    def through_s(self) -> np.ndarray:
        """(ny, nx) float32, read-only: time (s) each cell went through; NaN never."""
        view = self._through.view()
        view.flags.writeable = False
        return view

    # ---- one period --------------------------------------------------------------------------
    def step(self, t_s: float, a_s: np.ndarray, b_s: np.ndarray, drill_on: bool, speed_rpm: float,
             dt_s: float) -> MillContact:
        """Advance one period of ``dt_s`` (s) ending at ``t_s`` (s): the burr centre moved from
        ``a_s`` to ``b_s`` (m, {S}, undeflected skull); the drill ran at ``speed_rpm`` if
        ``drill_on``. Edits the skull (and calls ``mark_changed``) where bone was removed."""
        if not dt_s > 0:
            raise ValueError(f"BoneMill.step: dt_s={dt_s!r} must be > 0")
        if not speed_rpm >= 0:
            raise ValueError(f"BoneMill.step: speed_rpm={speed_rpm!r} must be >= 0")
        p = self.params
        r = p.burr_radius_m
        ax, ay, az = (float(v) for v in a_s)
        bx, by, bz = (float(v) for v in b_s)
        if not all(map(math.isfinite, (ax, ay, az, bx, by, bz))):
            raise ValueError(f"BoneMill.step: burr centres a_s={a_s!r}, b_s={b_s!r} must be finite")
        sk = self.skull
        box = _footprint_box(sk.grid, ax, ay, bx, by, r)
        if box is None:
            return NO_CONTACT
        blocks = (slice(box.r0 // _BLOCK, (box.r1 - 1) // _BLOCK + 1),
                  slice(box.c0 // _BLOCK, (box.c1 - 1) // _BLOCK + 1))
        # A burr centre h above the bone's highest point z_top (bounded by the block maxima)
        # reaches bone only within sqrt(r^2 - h^2) of its path (farther, its lower surface is
        # above z_top): none if h >= r, else shrink the box to that (a shallow cut into
        # untouched bone evaluates a fraction of the cells; the result is the same).
        h = min(az, bz) - float(self._outer_bound[blocks].max())
        if h >= r:
            return NO_CONTACT
        if h > 0:
            box = _footprint_box(sk.grid, ax, ay, bx, by, math.sqrt(r * r - h * h))
            if box is None:
                return NO_CONTACT
        return self._mill(t_s, box, blocks, (ax, ay, az), (bx, by, bz), bool(drill_on) and speed_rpm > 0,
                          p.cut_rate_m_s * min(speed_rpm / p.nominal_speed_rpm, 1.0) * dt_s)

    def _mill(self, t_s: float, box: CellBox, blocks: tuple[slice, slice], a: tuple[float, float, float],
              b: tuple[float, float, float], cutting: bool, v_dt: float) -> MillContact:
        """``step`` on the cells of ``box`` (the burr may touch bone there); ``v_dt`` (m): the
        period's largest cut at hardness 1. The per-cell passes are compiled
        (``milling_kernels``)."""
        p, sk, sc = self.params, self.skull, self._scratch
        r = p.burr_radius_m
        env = _swept_envelope(self._xs, self._ys, box, a, b, r, sc)
        shape = env.shape
        outer = sk.outer_z[box.rows, box.cols]
        old, new, removed, thick = (sc.take(name, shape) for name in ("old", "new", "removed", "thick"))
        thick_min, push_free, push_gated, normal_free, normal_gated = kernels.cut(
            env, outer, sk.inner_z[box.rows, box.cols], self._inv_hardness[box.rows, box.cols], np.float32(-v_dt),
            cutting, np.float32(THROUGH_TOL_M), np.float32(_THROUGH_GATE_PER_M), np.float32(min(a[2], b[2])),
            np.float32(1.0 / r), np.float32(COS_MIN), np.float32(p.crack_thickness_m), old, new, removed, thick)
        volume = 0.0
        if cutting:
            depth_sum = float(removed.sum())       # float32 pairwise sum: ~1e-7 relative
            if depth_sum > 0:
                np.copyto(outer, new)
                sk.mark_changed(box.rows, box.cols)
                volume = depth_sum * sk.grid.cell ** 2
        thin = float(thick_min) <= THROUGH_TOL_M      # through cells hold no bone to push on
        e = max(float(push_gated if thin else push_free), 0.0)
        if volume == 0.0 and e == 0.0:
            return NO_CONTACT

        delta = min(e, p.max_deflection_m)
        overload = e > p.max_deflection_m
        force = p.skull_stiffness_n_per_m * max(float(normal_gated if thin else normal_free), 0.0)
        t32, tol32 = np.float32(t_s), np.float32(THROUGH_TOL_M)
        kernels.stamp_first_contact(self._first_contact[box.rows, box.cols], env, old, t32)
        breach = None
        if thin:
            if volume > 0:          # cells that went through now: through and cut this period
                kernels.stamp_through(self._through[box.rows, box.cols], removed, thick, tol32, t32)
            if min(a[2], b[2]) - r + delta < float(self._membrane_bound[blocks].max()) - p.breach_tolerance_m:
                breach = self._deepest_breach(t_s, box, env, thick <= tol32, delta)

        self.peak_force_n = max(self.peak_force_n, force)
        self.max_deflection_m = max(self.max_deflection_m, delta)
        self.overload = self.overload or overload
        self.removed_volume_m3 += volume
        if breach is not None:
            self.breaches.append(breach)
        return MillContact(True, force, delta, overload, volume, breach)

    def _deepest_breach(self, t_s: float, box: CellBox, env: np.ndarray, through: np.ndarray,
                        delta: float) -> Breach | None:
        """The through cell where the (deflected) burr is deepest below the membrane, if deeper
        than the tolerance (rare path: only near the membrane)."""
        depth = np.where(through, self.skull.membrane_z[box.rows, box.cols] - (env + np.float32(delta)), -np.inf)
        k = int(np.argmax(depth))
        d = float(depth.flat[k])
        if not d > self.params.breach_tolerance_m:
            return None
        i, j = divmod(k, depth.shape[1])
        return Breach(t_s, float(self._xs[box.c0 + j]), float(self._ys[box.r0 + i]), d)

    # ---- truth for scoring -------------------------------------------------------------------
    def true_completion(self, x_s, y_s) -> np.ndarray:
        """Completion ``clip(1 - thickness / initial thickness, 0, 1)`` at points (m, {S}),
        bilinear in the grid; the shape of ``x_s``. Raises ValueError off the milling grid."""
        x = np.asarray(x_s, dtype=float)
        y = np.asarray(y_s, dtype=float)
        sk = self.skull
        outer, inner, t0 = _bilinear(sk.grid, [sk.outer_z, sk.inner_z, self.initial_thickness], x, y)
        return np.clip(1.0 - (outer - inner) / t0, 0.0, 1.0)

    def completion_grid(self) -> np.ndarray:
        """(ny, nx) float32 completion of every cell of the skull's grid."""
        sk = self.skull
        return np.clip(1.0 - (sk.outer_z - sk.inner_z) / self.initial_thickness, 0.0, 1.0)

    def outcome(self, centre_xy_s: np.ndarray, radius_m: float, n_angles: int = 720) -> MillOutcome:
        """Judge the window of ``radius_m`` (m) about ``centre_xy_s`` (m, {S}): bridge thickness at
        ``n_angles`` angles = thinnest bone along the radial segment [R - r_burr, R + r_burr]
        (sampled every half cell); plus breaches, force and deflection records."""
        p = self.params
        rb = p.burr_radius_m
        if not radius_m > rb:
            raise ValueError(f"outcome: radius_m={radius_m!r} must exceed the burr radius {rb:g} m")
        sk = self.skull
        theta = 2 * np.pi * np.arange(n_angles) / n_angles
        rho = np.linspace(radius_m - rb, radius_m + rb, int(np.ceil(4 * rb / sk.grid.cell)) + 1)
        x = centre_xy_s[0] + np.cos(theta)[:, None] * rho
        y = centre_xy_s[1] + np.sin(theta)[:, None] * rho
        outer, inner = _bilinear(sk.grid, [sk.outer_z, sk.inner_z], x, y)
        bridge = np.maximum(outer - inner, 0.0).min(axis=1)
        k = int(np.argmax(bridge))
        return MillOutcome(float(bridge[k]), float(theta[k]), bool(bridge[k] <= p.break_threshold_m),
                           len(self.breaches), self.breaches[0] if self.breaches else None,
                           self.peak_force_n, self.max_deflection_m, self.overload)
