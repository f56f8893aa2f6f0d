"""Closed (periodic) constrained cubic spline of Kruger (2003), for the milling trajectory.

C. Kruger, "Constrained cubic spline interpolation" (2003): a piecewise cubic Hermite
interpolant whose slope at knot i is the harmonic mean of its two neighbouring secant slopes,

    f'(x_i) = 2 / ((x_{i+1} - x_i) / (y_{i+1} - y_i) + (x_i - x_{i-1}) / (y_i - y_{i-1}))
            = 2 s_{i-1} s_i / (s_{i-1} + s_i),       s_i = (y_{i+1} - y_i) / (x_{i+1} - x_i),

when s_{i-1} and s_i have the same sign, and 0 when they differ in sign or either is 0.
Kruger writes each segment's cubic through its second derivatives at the ends; those follow
from the two end values and slopes, so the segment is exactly the cubic Hermite segment built
here with ``scipy.interpolate.CubicHermiteSpline``.

No overshoot: a harmonic mean of two same-signed numbers is at most twice the smaller, so on
segment [x_i, x_{i+1}] both end slopes lie between 0 and 2 s_i (or are 0). That is inside
Fritsch and Carlson's monotonicity region (slope / secant in [0, 3] at both ends), so every
segment is monotone and stays within the range of its two end values: the smoothed milling
path never dips below the lower of two neighbouring planned heights.

Why this is written here and not taken from SciPy: ``scipy.interpolate.PchipInterpolator``
(Fritsch-Butland) uses a *weighted* harmonic mean, weights 2 h_i + h_{i-1} and h_i + 2 h_{i-1}
from the two interval lengths; for equally spaced knots the weights are equal and its slopes
equal Kruger's. But PCHIP has no periodic mode (its end slopes come from a one-sided
three-point formula), and the milling path is a closed circle: the slope at point 0 must use
point n-1 as its left neighbour. This class computes Kruger's slopes with wrapped neighbours
and hands them to ``CubicHermiteSpline``.

Knots are angles theta_i (rad), strictly increasing in [0, 2 pi); the paper uses
theta_i = 2 pi i / n. The curve closes with the segment from theta_{n-1} to theta_0 + 2 pi;
evaluation wraps theta modulo 2 pi. Values and slopes have the values' units (per rad for
slopes); the planner passes heights in metres.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import CubicHermiteSpline, PPoly

from controllers.planning.validation import PlanningParameterError, finite_vector

__all__ = ["TWO_PI", "ClosedConstrainedSpline", "closed_kruger_slopes"]

TWO_PI = 2.0 * np.pi
_MIN_KNOTS = 3


def closed_kruger_slopes(theta_knots_rad: NDArray[np.float64],
                         values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Kruger's knot slopes (value units per rad) of the closed curve, neighbours wrapped.

    ``theta_knots_rad``: strictly increasing knots in [0, 2 pi) (not checked here; see
    ``ClosedConstrainedSpline``); ``values``: one value per knot.
    """
    h = np.diff(np.append(theta_knots_rad, theta_knots_rad[0] + TWO_PI))
    secant = np.diff(np.append(values, values[0])) / h      # secant[i]: knot i -> knot i+1
    before, after = np.roll(secant, 1), secant
    same_sign = np.sign(before) * np.sign(after) > 0
    slopes = np.zeros_like(secant)
    b, a = before[same_sign], after[same_sign]
    slopes[same_sign] = 2.0 * b * a / (b + a)
    return slopes


class ClosedConstrainedSpline:
    """Kruger's constrained cubic spline through (theta_i, value_i), closed over 2 pi.

    ``theta_knots_rad``: knot angles (rad), strictly increasing, in [0, 2 pi), at least 3;
    ``values``: the value at each knot (any unit, e.g. heights in m), finite.
    ``spline(theta)`` and ``spline.derivative(theta)`` (value units per rad) accept any finite
    angles (scalar or array, rad) and wrap them modulo 2 pi; the result has theta's shape.
    Raises ``PlanningParameterError`` for bad knots, values or angles.
    """

    def __init__(self, theta_knots_rad: ArrayLike, values: ArrayLike):
        theta = finite_vector("theta_knots_rad", theta_knots_rad, min_length=_MIN_KNOTS)
        y = finite_vector("values", values, length=theta.size)
        if theta[0] < 0.0:
            raise PlanningParameterError("theta_knots_rad[0]", float(theta[0]), "in [0, 2 pi)")
        if theta[-1] >= TWO_PI:
            raise PlanningParameterError(f"theta_knots_rad[{theta.size - 1}]", float(theta[-1]),
                                         "in [0, 2 pi)")
        not_increasing = np.flatnonzero(np.diff(theta) <= 0.0)
        if not_increasing.size:
            i = int(not_increasing[0]) + 1
            raise PlanningParameterError(f"theta_knots_rad[{i}]", float(theta[i]),
                                         f"> theta_knots_rad[{i - 1}]={theta[i - 1]!r} "
                                         "(strictly increasing)")
        d = closed_kruger_slopes(theta, y)
        # One wrapped segment on each side, so that every angle in [0, 2 pi] (the range of
        # np.mod) lies inside the breakpoints and each knot theta_i is itself a breakpoint:
        # evaluation there returns values[i] exactly.
        x_ext = np.concatenate(([theta[-1] - TWO_PI], theta, [theta[0] + TWO_PI]))
        y_ext = np.concatenate(([y[-1]], y, [y[0]]))
        d_ext = np.concatenate(([d[-1]], d, [d[0]]))
        self._theta = theta
        self._values = y
        self._slopes = d
        self._pp: PPoly = CubicHermiteSpline(x_ext, y_ext, d_ext)
        self._dpp: PPoly = self._pp.derivative()
        # The same pieces as Python floats, for one-angle evaluation without PPoly's array overhead.
        self._breaks: list[float] = self._pp.x.tolist()
        self._pieces: list[list[float]] = self._pp.c.T.tolist()
        self._dpieces: list[list[float]] = self._dpp.c.T.tolist()

    @property
    def knots_rad(self) -> NDArray[np.float64]:
        """Knot angles (rad), a copy."""
        return self._theta.copy()

    @property
    def values(self) -> NDArray[np.float64]:
        """Values at the knots, a copy."""
        return self._values.copy()

    @property
    def slopes(self) -> NDArray[np.float64]:
        """Kruger's slopes at the knots (value units per rad), a copy."""
        return self._slopes.copy()

    def __call__(self, theta_rad: ArrayLike) -> NDArray[np.float64]:
        """The spline at angles ``theta_rad`` (rad, any finite value, wrapped modulo 2 pi)."""
        return self._pp(self._wrap(theta_rad))

    def derivative(self, theta_rad: ArrayLike) -> NDArray[np.float64]:
        """d(value)/d(theta) (value units per rad) at angles ``theta_rad`` (rad, wrapped)."""
        return self._dpp(self._wrap(theta_rad))

    def value_and_derivative(self, theta_rad: float) -> tuple[float, float]:
        """The spline (value units) and its derivative (value units per rad) at one angle
        ``theta_rad`` (rad, wrapped): ``spline(theta)`` and ``derivative(theta)`` bit for bit,
        evaluated as SciPy's PPoly does (the piece x_i <= theta < x_i+1, the last piece at the
        last breakpoint; sum of c_k (theta - x_i)^k from the constant term up, powers by repeated
        multiplication) on Python floats, ~10x faster for one angle."""
        theta = float(self._wrap(theta_rad))
        i = min(bisect_right(self._breaks, theta) - 1, len(self._breaks) - 2)
        s = theta - self._breaks[i]
        return self._power_sum(self._pieces[i], s), self._power_sum(self._dpieces[i], s)

    @staticmethod
    def _power_sum(coef: list[float], s: float) -> float:
        """sum_k coef[-1 - k] s^k (coefficients highest power first, as PPoly stores them)."""
        res, z = 0.0, 1.0
        for kp in range(len(coef)):
            res = res + coef[-1 - kp] * z
            if kp < len(coef) - 1:
                z *= s
        return res

    @staticmethod
    def _wrap(theta_rad: ArrayLike) -> NDArray[np.float64]:
        theta = np.asarray(theta_rad, dtype=float)
        if not np.all(np.isfinite(theta)):
            bad = np.flatnonzero(~np.isfinite(theta.ravel()))[0]
            raise PlanningParameterError(f"theta_rad[{bad}]", float(theta.ravel()[bad]), "finite")
        return np.mod(theta, TWO_PI)
