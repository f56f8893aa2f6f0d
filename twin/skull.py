"""A parametric mouse skull: uneven dorsal surface, variable thickness, membrane, sutures.

Skull frame {S} (stereotaxic-like): origin at bregma, x mediolateral (right), y
anteroposterior (anterior +), z dorsal (up). Lambda lies at (0, -L) with L the
bregma-lambda distance. All lengths in metres.

Geometry (all fields are smooth, analytic and seeded, so any grid samples the same skull):
- outer surface ``z = dome(x, y) + unevenness(x, y)``: an elliptic paraboloid (radii of
  curvature ``dome_radius_ml_m`` across, ``dome_radius_ap_m`` along the midline, apex at the
  bregma-lambda midpoint) plus a random Fourier field of wavelengths 1.5-6 mm whose peak
  magnitude over the milling region equals ``unevenness_amplitude_m``;
- thickness: a second random Fourier field (wavelengths 2-8 mm) mapped linearly onto
  [``thickness_min_m``, ``thickness_max_m``] by its min/max over the milling region;
  thickness is measured along z (height-field representation);
- inner surface = outer - thickness; the membrane (dura) lies on the initial inner surface
  and stays there when bone is removed.

Material state: ``outer_z`` and ``inner_z`` are height fields on a grid of ``grid_cell_m``
(<= 10 um) over the milling region; the milling model (``twin.milling``) lowers ``outer_z``.
Whoever edits them calls ``mark_changed`` with the changed cells: ``version`` increments and
the cell box is logged, so caches (renderers) can ask ``changed_since(version)`` and redo
only that part.

Approximations: the skull is a height field (no overhangs, thickness along z, not along
the normal; at the <= 25 deg slopes of the dorsal skull the two differ by < 10 %). Sutures
are surface markings only (colour), not mechanical discontinuities.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice

import numpy as np
from scipy import ndimage

from scenes.skull_params import SkullParameterError, SkullParams  # noqa: F401 (re-exported)


class FourierField:
    """Smooth random field: a sum of plane waves, evaluated separably on grids.

    ``value(x, y) = sum_k a_k sin(kx_k x + ky_k y + phi_k)``; wavelengths uniform in
    [lambda_min, lambda_max], directions and phases uniform.
    """

    def __init__(self, rng: np.random.Generator, n_waves: int, wavelength_min_m: float,
                 wavelength_max_m: float):
        lam = rng.uniform(wavelength_min_m, wavelength_max_m, n_waves)
        ang = rng.uniform(0.0, np.pi, n_waves)
        k = 2 * np.pi / lam
        self.kx, self.ky = k * np.cos(ang), k * np.sin(ang)
        self.phi = rng.uniform(0.0, 2 * np.pi, n_waves)
        self.amp = rng.normal(1.0, 0.3, n_waves) / np.sqrt(n_waves)

    #: rows of the grid summed at a time (the temporaries stay in the CPU cache)
    GRID_BLOCK_ROWS = 16

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Values on the grid ``ys x xs`` (rows are y). sin(a+b) = sin a cos b + cos a sin b.

        Every value is amp_k (cos b_k sin a_k + sin b_k cos a_k) summed over the waves in order,
        whatever the grid, so any sub-grid gets the very same numbers; blocks of
        ``GRID_BLOCK_ROWS`` rows only keep the work in the cache (~3x faster on large grids)."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        out = np.zeros((ys.size, xs.size))
        a = [kx * xs + phi for kx, phi in zip(self.kx, self.phi)]
        sin_a, cos_a = [np.sin(v) for v in a], [np.cos(v) for v in a]
        b = [ky * ys for ky in self.ky]
        cos_b, sin_b = [np.cos(v) for v in b], [np.sin(v) for v in b]
        n = self.GRID_BLOCK_ROWS
        t, u = np.empty((n, xs.size)), np.empty((n, xs.size))
        for r0 in range(0, ys.size, n):
            rows = slice(r0, min(r0 + n, ys.size))
            o, tt, uu = out[rows], t[:rows.stop - r0], u[:rows.stop - r0]
            for k, amp in enumerate(self.amp):
                np.multiply.outer(cos_b[k][rows], sin_a[k], out=tt)
                np.multiply.outer(sin_b[k][rows], cos_a[k], out=uu)
                tt += uu
                tt *= amp
                o += tt
        return out

    def points(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)[..., None]
        y = np.asarray(y, dtype=float)[..., None]
        return np.sum(self.amp * np.sin(self.kx * x + self.ky * y + self.phi), axis=-1)


@dataclass(frozen=True)
class Grid:
    """A regular grid: x = x0 + j * cell (columns), y = y0 + i * cell (rows)."""

    x0: float
    y0: float
    cell: float
    nx: int
    ny: int

    @property
    def xs(self) -> np.ndarray:
        return self.x0 + self.cell * np.arange(self.nx)

    @property
    def ys(self) -> np.ndarray:
        return self.y0 + self.cell * np.arange(self.ny)

    def contains(self, x, y) -> np.ndarray:
        """Inside the grid's extent (with 1e-6 cell of slack for float rounding at the edges)."""
        x, y = np.asarray(x), np.asarray(y)
        eps = 1e-6 * self.cell
        return ((x >= self.x0 - eps) & (x <= self.x0 + self.cell * (self.nx - 1) + eps)
                & (y >= self.y0 - eps) & (y <= self.y0 + self.cell * (self.ny - 1) + eps))


@dataclass(frozen=True)
class CellBox:
    """Rows ``r0:r1`` and columns ``c0:c1`` (half-open) of a grid."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def rows(self) -> slice:
        return slice(self.r0, self.r1)

    @property
    def cols(self) -> slice:
        return slice(self.c0, self.c1)

    def union(self, other: "CellBox") -> "CellBox":
        return CellBox(min(self.r0, other.r0), max(self.r1, other.r1),
                       min(self.c0, other.c0), max(self.c1, other.c1))


class Skull:
    """The skull of one mouse, fully determined by ``SkullParams`` (including the seed)."""

    #: changes remembered for ``changed_since``; a cache further behind refreshes everything
    CHANGE_LOG_LENGTH = 4096

    def __init__(self, params: SkullParams = SkullParams()):
        params.validate()
        self.params = p = params
        rng = np.random.default_rng(np.random.SeedSequence([int(p.seed), 0x5CA11]))
        self._uneven = FourierField(rng, 10, 1.5e-3, 6e-3)
        self._thick = FourierField(rng, 8, 2e-3, 8e-3)
        wav = rng.normal(0.0, 1.0, 3) * p.suture_waviness_m / np.sqrt(3)
        self._sagittal_coef = wav                      # x = sum a_k sin(k pi y / L)
        self._coronal_curv = rng.uniform(0.04, 0.10) / 1e-3     # 1/m: y = -c x^2 (laterally back)
        self._lambdoid_curv = rng.uniform(0.10, 0.20) / 1e-3    # 1/m: y = -L + c x^2 (laterally forward)
        self._texture = FourierField(rng, 24, 0.15e-3, 1.2e-3)
        self.apex_y_m = -p.bregma_lambda_m / 2

        L = p.bregma_lambda_m
        n = int(round(2 * p.milling_half_width_m / p.grid_cell_m)) + 1
        m = int(round(2 * p.milling_half_length_m / p.grid_cell_m)) + 1
        self.grid = Grid(-p.milling_half_width_m, -L / 2 - p.milling_half_length_m, p.grid_cell_m, n, m)

        # Normalise the random fields over the milling region on a 50 um grid.
        coarse = Grid(self.grid.x0, self.grid.y0, 50e-6, int(n * p.grid_cell_m / 50e-6) + 1,
                      int(m * p.grid_cell_m / 50e-6) + 1)
        u = self._uneven.grid(coarse.xs, coarse.ys)
        self._uneven_scale = p.unevenness_amplitude_m / max(np.abs(u).max(), 1e-12)
        t = self._thick.grid(coarse.xs, coarse.ys)
        self._thick_lo, self._thick_hi = float(t.min()), float(t.max())

        self.outer_z = self.initial_outer_grid(self.grid.xs, self.grid.ys).astype(np.float32)
        thickness = self.initial_thickness_grid(self.grid.xs, self.grid.ys).astype(np.float32)
        self.inner_z = self.outer_z - thickness
        self.membrane_z = self.inner_z.copy()
        self.version = 0
        self._changes: deque[CellBox] = deque(maxlen=self.CHANGE_LOG_LENGTH)   # box of each version

    # ----- analytic initial fields (any grid) -------------------------------------------
    def _dome(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        p = self.params
        return -(xs[None, :] ** 2 / (2 * p.dome_radius_ml_m)
                 + (ys[:, None] - self.apex_y_m) ** 2 / (2 * p.dome_radius_ap_m))

    def initial_outer_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Untouched outer-surface height (m) on the grid ``ys x xs``."""
        return self._dome(xs, ys) + self._uneven_scale * self._uneven.grid(xs, ys)

    def initial_thickness_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Untouched bone thickness (m), within [thickness_min_m, thickness_max_m]."""
        p = self.params
        f = (self._thick.grid(xs, ys) - self._thick_lo) / max(self._thick_hi - self._thick_lo, 1e-12)
        return p.thickness_min_m + (p.thickness_max_m - p.thickness_min_m) * np.clip(f, 0.0, 1.0)

    # ----- landmarks --------------------------------------------------------------------
    @property
    def bregma_s(self) -> np.ndarray:
        """Bregma (m) on the outer surface, in {S}."""
        return np.array([0.0, 0.0, float(self.outer_height(0.0, 0.0))])

    @property
    def lambda_s(self) -> np.ndarray:
        """Lambda (m) on the outer surface, in {S}."""
        y = -self.params.bregma_lambda_m
        return np.array([0.0, y, float(self.outer_height(0.0, y))])

    def suture_distance(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Approximate in-plane distance (m) from each grid point to the nearest suture.

        Sagittal ``x = sum a_k sin(k pi y / L)`` (passes through bregma and lambda), coronal
        ``y = -c x^2`` (through bregma), lambdoid ``y = -L + c x^2`` (through lambda). Vertical
        / horizontal offsets are used as distances (the curves are shallow near the midline).
        """
        L = self.params.bregma_lambda_m
        X, Y = xs[None, :], ys[:, None]
        sag_x = sum(a * np.sin((k + 1) * np.pi * Y / L) for k, a in enumerate(self._sagittal_coef))
        d_sag = np.abs(X - sag_x)
        d_cor = np.abs(Y + self._coronal_curv * X ** 2) / np.sqrt(1 + (2 * self._coronal_curv * X) ** 2)
        d_lam = np.abs(Y + L - self._lambdoid_curv * X ** 2) / np.sqrt(1 + (2 * self._lambdoid_curv * X) ** 2)
        # The coronal suture runs laterally only; the sagittal one ends a little behind lambda.
        d_sag = np.where(Y > -L - 1.5e-3, d_sag, np.inf)
        return np.minimum(np.minimum(d_sag, d_cor), d_lam)

    def texture(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Fine bone texture in [-1, 1] (seeded), for appearance only."""
        t = self._texture.grid(xs, ys)
        return t / max(np.abs(t).max(), 1e-12)

    # ----- queries (skull frame, metres) ------------------------------------------------
    def _sample(self, field: np.ndarray, x, y) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if not np.all(self.grid.contains(x, y)):
            raise ValueError(
                f"query outside the skull's milling region x in [{self.grid.x0:.4f}, "
                f"{self.grid.x0 + self.grid.cell * (self.grid.nx - 1):.4f}] m, y in "
                f"[{self.grid.y0:.4f}, {self.grid.y0 + self.grid.cell * (self.grid.ny - 1):.4f}] m")
        cols = (x - self.grid.x0) / self.grid.cell
        rows = (y - self.grid.y0) / self.grid.cell
        out = ndimage.map_coordinates(field, [np.atleast_1d(rows).ravel(), np.atleast_1d(cols).ravel()],
                                      order=1, mode="nearest")
        return out.reshape(np.shape(x)) if np.ndim(x) else out[0]

    def outer_height(self, x, y) -> np.ndarray:
        """Outer (dorsal) surface height z (m) at (x, y) in {S}."""
        return self._sample(self.outer_z, x, y)

    def inner_height(self, x, y) -> np.ndarray:
        """Inner surface height z (m) at (x, y) in {S}."""
        return self._sample(self.inner_z, x, y)

    def membrane_height(self, x, y) -> np.ndarray:
        """Membrane (dura) height z (m) at (x, y) in {S}."""
        return self._sample(self.membrane_z, x, y)

    def thickness(self, x, y) -> np.ndarray:
        """Remaining bone thickness (m) along z at (x, y)."""
        return self._sample(self.outer_z - self.inner_z, x, y)

    def _normal(self, field: np.ndarray, x, y) -> np.ndarray:
        h = self.grid.cell
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        xc = np.clip(x, self.grid.x0 + h, self.grid.x0 + h * (self.grid.nx - 2))
        yc = np.clip(y, self.grid.y0 + h, self.grid.y0 + h * (self.grid.ny - 2))
        dzdx = (self._sample(field, xc + h, yc) - self._sample(field, xc - h, yc)) / (2 * h)
        dzdy = (self._sample(field, xc, yc + h) - self._sample(field, xc, yc - h)) / (2 * h)
        n = np.stack([-dzdx, -dzdy, np.ones_like(dzdx)], axis=-1)
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def outer_normal(self, x, y) -> np.ndarray:
        """Unit outward normal (pointing up, out of the bone) of the outer surface at (x, y)."""
        return self._normal(self.outer_z, x, y)

    def inner_normal(self, x, y) -> np.ndarray:
        """Unit normal (pointing up, into the bone) of the inner surface at (x, y)."""
        return self._normal(self.inner_z, x, y)

    def mark_changed(self, rows: slice | None = None, cols: slice | None = None) -> None:
        """Call after editing ``outer_z``/``inner_z`` so that caches (renderers) refresh.

        ``rows``, ``cols``: the grid rows and columns that changed (slices with step 1);
        None means all of them.
        """
        g = self.grid
        r0, r1, rs = (rows or slice(None)).indices(g.ny)
        c0, c1, cs = (cols or slice(None)).indices(g.nx)
        if rs != 1 or cs != 1:
            raise ValueError(f"mark_changed: rows={rows!r}, cols={cols!r} must be slices with step 1")
        self.version += 1
        self._changes.append(CellBox(r0, max(r1, r0), c0, max(c1, c0)))

    def changed_since(self, version: int) -> CellBox | None:
        """Union of the cells changed after ``version`` (None: nothing changed). A ``version``
        older than the change log (or negative) gets the whole grid."""
        n = self.version - version
        if n <= 0:
            return None
        if version < 0 or n > len(self._changes):
            return CellBox(0, self.grid.ny, 0, self.grid.nx)
        boxes = islice(reversed(self._changes), n)
        box = next(boxes)
        for b in boxes:
            box = box.union(b)
        return box
