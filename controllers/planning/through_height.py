"""Where each point goes through, estimated from the remaining-thickness readings and where the
burr has been: a per-point depth limit for the planner (issue 13/15).

Why: with the damper alone, a point keeps descending at the cutting speed (13-31 um a lap)
until a reading says it is through; the burr passes a point once a lap (3.1 s at r = 2 mm,
4 mm/s), so the pass after the one that nearly cut through goes up to a lap's descent past the
inner surface, and a through point read a lap late goes further: both breach the membrane
(> 20 um) in the twin even when each reading is good to ~7 um. A thickness sensor says how
much bone is left, so the controller can bound how far down it goes.

The estimate, per point i, in the window frame's height along the axis (m):

- ``h_pass_i``: the lowest burr-centre height over point i so far, from the MEASURED tool
  position (joint states) every control period: with the burr centre at horizontal distance d
  (< ``reach_m``) from the point, its sphere reaches down to the point at the centre height
  h + R - sqrt(R^2 - d^2) (R the burr radius). The groove's bottom at the point is never lower
  than that (bone does not grow back; the head deflecting under the burr only makes the true
  cut shallower), so ``h_pass_i`` is an upper bound of the bottom, in burr-centre terms.
- every reading with a filtered thickness t_i inside ``informative_m`` (default 15-80 um: the
  classifier's classes are accurate there, and "through" readings saturate at 0 and say
  nothing about how far below the inner surface the burr is) gives one estimate of the
  point's through height H_i = h_pass_i - t_i; the estimate is the median of the last
  ``window`` such readings;
- the depth limit is H_i - ``overcut_m``: the burr may go ``overcut_m`` (default 5 um) past
  the estimated inner surface to cut the last layer cleanly, well inside the 20 um the
  membrane tolerates (the estimate's own error, ~7 um, adds to it). Points without an
  estimate yet have no limit (NaN).

Approximations, named: the thickness reading is taken as the bone under the groove's bottom at
the point (the classifier's label is the thinnest bone across the groove within +-0.15 mm);
h_pass is the running minimum up to the reading, not at the image's exposure (a pass between
the exposure and the reading would hide the point behind the burr, so the reading is NaN); the
head's deflection at the deepest pass is not known (measured burr heights are lower than the
cut by that deflection, which makes the limit lower by as much: 0-10 um near through in the
twin).

Runs on the real robot: only measured tool positions and sensor readings.
"""
from __future__ import annotations

from collections import deque

import numpy as np


class ThroughHeightEstimator:
    """Per-point estimate of the through height and the resulting depth limit (module docstring).

    ``points_xy_m`` (n, 2): the sampling points in the window plane (m); ``burr_radius_m`` (m);
    ``overcut_m`` (m, >= 0); ``informative_m`` (lo, hi) (m); ``window`` (>= 1) readings;
    ``reach_m`` (m, <= burr radius): how far from a point the burr's passes count."""

    def __init__(self, points_xy_m: np.ndarray, burr_radius_m: float, overcut_m: float = 5e-6,
                 informative_m: tuple[float, float] = (15e-6, 80e-6), window: int = 5, reach_m: float = 0.2e-3):
        pts = np.asarray(points_xy_m, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise ValueError(f"ThroughHeightEstimator.points_xy_m: shape {pts.shape}, expected (n >= 3, 2)")
        if not 0 < reach_m <= burr_radius_m:
            raise ValueError(f"ThroughHeightEstimator.reach_m={reach_m!r}: must be in (0, burr radius "
                             f"{burr_radius_m!r}] m")
        if overcut_m < 0 or window < 1 or not 0 <= informative_m[0] < informative_m[1]:
            raise ValueError(f"ThroughHeightEstimator: overcut_m={overcut_m!r} (>= 0), window={window!r} (>= 1), "
                             f"informative_m={informative_m!r} (0 <= lo < hi) m")
        self.points_xy = pts
        self.radius = float(burr_radius_m)
        self.overcut = float(overcut_m)
        self.informative = (float(informative_m[0]), float(informative_m[1]))
        self.reach = float(reach_m)
        self.h_pass = np.full(len(pts), np.nan)
        self._estimates = [deque(maxlen=window) for _ in range(len(pts))]

    @property
    def n_points(self) -> int:
        return len(self.points_xy)

    def observe_burr(self, burr_w: np.ndarray) -> None:
        """One measured burr-centre position in window coordinates (x, y, h) (m)."""
        d = np.hypot(self.points_xy[:, 0] - burr_w[0], self.points_xy[:, 1] - burr_w[1])
        near = d < self.reach
        if near.any():
            reach_down = burr_w[2] + self.radius - np.sqrt(self.radius ** 2 - d[near] ** 2)
            self.h_pass[near] = np.fmin(self.h_pass[near], reach_down)

    def observe_thickness(self, thickness_m: np.ndarray) -> None:
        """The (filtered) remaining thickness per point (m, NaN: unseen) of one reading."""
        t = np.asarray(thickness_m, dtype=float)
        if t.shape != (self.n_points,):
            raise ValueError(f"observe_thickness: shape {t.shape}, expected ({self.n_points},)")
        lo, hi = self.informative
        for i in np.flatnonzero(np.isfinite(t) & (t >= lo) & (t <= hi) & np.isfinite(self.h_pass)):
            self._estimates[i].append(self.h_pass[i] - t[i])

    def through_height_m(self) -> np.ndarray:
        """Estimated through height per point (m; NaN: no informative reading yet)."""
        return np.array([np.median(e) if e else np.nan for e in self._estimates])

    def depth_limit_m(self) -> np.ndarray:
        """The lowest burr-centre height each point may be planned at (m; NaN: no limit yet)."""
        return self.through_height_m() - self.overcut
