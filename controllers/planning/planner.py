"""Milling trajectory planner (Zhao et al., seed 004, section IV-B): initialise, update, smooth, stop.

State: n sampling points on the window circle at angles theta_i = 2 pi i / n (rad), the order
of the fitted trajectory and of the completion vector c. Each point has a burr-centre height
h_i (m) along the window axis (the axis points out of the bone, up; lowering h_i descends into
the bone), a virtual floor floor_i (m; h_i never goes below it) and the last known completion
level c_i in [0, 1] (0 untouched, 1 fully penetrated).

Initialise (``MillingPlanner.from_fitted`` / ``MillingPlanner.equal_height``):
  * current system: h_i from the 3D-fitted initial trajectory (p_ini,i, already offset by
    burr radius + safety margin above the surface), so every point reaches the bone after about
    the same descent;
  * prior system: every point starts at one height. The prior system started all points at
    z = 0 without a surface measurement; here the common height is the *maximum* of the fitted
    initial heights, so that no point starts inside bone. Points on lower bone then descend
    through more air, and past ``approach_depth_m`` at the slow cutting speed: the time the
    paper's 3D fitting saves.

Update (``MillingPlanner.update(c, dt_s)``): h_i -= v_i * dt_s, then h_i = max(h_i, floor_i).
v_i comes from a multimodal velocity damper on c_i (``DamperParams``; the paper: "descent speed
at the i-th point reduced proportionally to its completion level c_i"):

  mode 1, approach  c_i < contact_level:                  v = v_approach_m_s for the first
                    approach_depth_m below the point's start, then v_cut_max_m_s
  mode 2, cutting   contact_level <= c_i < through_level: v falls linearly in c_i from
                    v_cut_max_m_s (at contact_level) to v_cut_min_m_s (at through_level)
  mode 3, through   c_i >= through_level:                 v = v_cut_min_m_s down to its
                    over-cut below its height at the first through reading (or its floor),
                    then v = 0, and the point is done

Over-cut (``DamperParams.overcut_m``; only with a thickness sensor, else 0: done at the first
through reading, the paper's rule): the median of the point's last ``settle_readings``
thickness readings before the through reading, less the planned descent since the newest of
them, less ``overcut_margin_m``, clipped to [0, ``overcut_m``]. That is the bone that went
through faster than the burr could have cut it (thin bone that cracked away under the burr),
i.e. the burr's clearance above the membrane at the point; the groove between two such points
keeps a strip just thicker than the crack thickness, which the over-cut takes down. A point cut
through by the burr itself reads thin before it goes through and gets little or none; a point
its last settle found behind its plan gets none (the head is pressed down by the lag, and the
burr's clearance is less than the reading says).

Synchronised finish (``DamperParams.sync_level``): a point not read through with
c_i >= sync_level waits (speed 0) while any point not read through is below sync_level, so
the points go through the last of the bone together (``MillingPlanner.waiting``). A point whose
reading never reaches sync_level (a sensor stuck low, a point held by its floor) holds every
other point with it until the ``StopMonitor``'s timeout: a local failure becomes a whole-window
one, which the loop reports as a timeout with the points not through.

Settle (``DamperParams.settle_levels_m``; only when ``update`` is given the remaining thickness
r_i (m) a thickness sensor reads, NaN while the point is hidden, and the number of passes of the
burr over each point so far): the first time r_i <= ``settle_below_m`` a point holds (speed 0)
until a pass of the burr over it thinned it by at most ``settle_drop_m``, or for at most
``settle_max_s``. A pass's thinning is the median of the readings since the previous pass (or
since the settle began; at least ``settle_readings`` of them, else the pass is not judged) minus
the median of the first ``settle_readings`` after it (the milling loop leaves out the readings
right after a pass: they read thin). A plan that descended faster than the burr could cut
leaves the burr's planned height below the groove it really cut, the head pressed down by the
difference; holding lets the burr cut down to its plan while bone is still left under it,
instead of springing back into the membrane when the last bone gives way. A point that a judged
pass of its settle thinned by more than ``resettle_drop_m`` was behind its plan: it settles once
more when r_i first reads at most ``resettle_below_m``, ending on a pass that thins it by at most
``resettle_drop_m`` (the reading is more precise there). A point read through never settles.
Speed scale (``DamperParams.lag_target_m``; with the settle): a point's *lag* is the thinning
its first settle measured (the sum of its judged passes' drops, the one that ended it included).
Once 3 points have measured theirs (the scale is recomputed at each further one), every cutting
speed of every point (not the approach through air) is multiplied by
sqrt(``lag_target_m`` / the upper quartile of the lags), clipped to [``min_speed_scale``, 1]:
a pass of the burr (radius R) over bone standing e above its path cuts it for as long as the
burr's chord through that bone, 2 sqrt(2 R e), so the cut per pass grows as sqrt(e), and the lag
at which the cut keeps up with a plan descending at v per lap grows as v^2. Slow bone (a low cut
rate, a hard spot) needs a slower plan, or the head is pressed down by the lag and springs back
into the membrane when the last bone gives way. One scale for the whole circle, so the points
stay level with each other. Approximations: the square-root law is geometry at a constant cut
rate (assumed to hold on real bone), and the readings' noise and drift (a few um a pass) read as
a lag of ~5-20 um where there is none, which slows fast bone a little too.
Time is the sum of the ``dt_s`` given to ``update``. (Passes come from
the loop, which knows where the burr is; a gap in a point's readings is not one: the drill's
shank hides points the burr is not cutting.)

A NaN c_i (the point unseen this update, e.g. hidden behind the drill) keeps its last known
level (0 before any reading). With ``latch_done`` (default) a point once read through stays
through and once done stays done; without it both follow the last reading (the over-cut is
still measured from the first through height).

Smooth (``MillingPlanner.path()``): Kruger's constrained cubic spline through the n heights,
closed over the circle (``controllers.planning.spline``); it never overshoots, so the smoothed
path never goes below the lower of two neighbouring planned heights (hence not below the floor
where the floor is flat between them).

Stop: ``MillingPlanner.all_done`` (every point done: the paper's "c_i = 1 for all i", with the
threshold ``through_level``) and ``StopMonitor`` (timeout, lost perception, safety fault).

Runs on the real robot: it never imports ``twin``.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from controllers.planning.spline import TWO_PI, ClosedConstrainedSpline
from controllers.planning.validation import PlanningParameterError, finite_vector
from controllers.settings import DamperParams

__all__ = ["DamperParams", "MillingPlanner", "StopMonitor", "StopReason"]

_MIN_POINTS = 3
#: how many points' lags set a speed scale (the first to settle are the first to go through)
_MIN_LAGS = 3
#: the quantile of the points' measured lags that sets the speed scale: the upper quartile, so
#: the harder quarter of the skull (the hardness field varies ~2x over it) sets the pace
_LAG_QUANTILE = 0.75


def _check_finite(field: str, value: float) -> None:
    if not math.isfinite(value):
        raise PlanningParameterError(field, value, "finite")


def _heights_and_floor(heights_m: ArrayLike, floor_m: ArrayLike | float
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Checked heights (m) and floors (m, a scalar broadcast to every point), floor <= height."""
    heights = finite_vector("heights_m", heights_m, min_length=_MIN_POINTS)
    floor_arr = np.asarray(floor_m, dtype=float)
    floor = finite_vector("floor_m", np.full(heights.size, floor_arr) if floor_arr.ndim == 0
                          else floor_arr, length=heights.size)
    above = np.flatnonzero(floor > heights)
    if above.size:
        i = int(above[0])
        raise PlanningParameterError(f"floor_m[{i}]", float(floor[i]),
                                     f"<= the initial height heights_m[{i}]={heights[i]!r}")
    return heights, floor


class MillingPlanner:
    """Per-point descent of the milling trajectory driven by the perceived completion levels.

    ``heights_m``: starting burr-centre height of each point (m, n >= 3, finite), point i at
    angle 2 pi i / n; ``floor_m``: the virtual floor (m), one per point or a scalar for all,
    each <= its starting height; ``params``: the damper (default ``DamperParams()``).
    Prefer the constructors ``from_fitted`` and ``equal_height``. Raises
    ``PlanningParameterError`` naming the bad field.
    """

    def __init__(self, heights_m: ArrayLike, floor_m: ArrayLike | float,
                 params: DamperParams | None = None):
        heights, floor = _heights_and_floor(heights_m, floor_m)
        self._params = DamperParams() if params is None else params
        self._initial = heights
        self._heights = heights.copy()
        self._floor = floor
        self._theta = TWO_PI * np.arange(heights.size) / heights.size
        self._completion = np.zeros(heights.size)
        self._done = np.zeros(heights.size, dtype=bool)
        self._through = np.zeros(heights.size, dtype=bool)
        self._through_h = np.full(heights.size, np.nan)         # m: planned height at the first through reading
        self._waiting = np.zeros(heights.size, dtype=bool)
        self._clock_s = 0.0
        self._settle = np.zeros(heights.size, dtype=bool)        # holding in a settle now
        self._settles = np.zeros(heights.size, dtype=np.int64)   # settles finished
        self._behind = np.zeros(heights.size, dtype=bool)        # a pass in its last settle thinned it > resettle_drop_m
        self._settle_start_s = np.full(heights.size, np.nan)
        self._readings: list[list[float]] = [[] for _ in range(heights.size)]  # m: since the last pass
        self._before_pass = np.full(heights.size, np.nan)    # m: median of the readings before the last pass
        self._passes = np.zeros(heights.size, dtype=np.int64)
        self._overcut = np.zeros(heights.size)                   # m: each point's over-cut, set when read through
        self._recent: list[list[float]] = [[] for _ in range(heights.size)]  # m: last readings before through
        self._recent_h = np.full(heights.size, np.nan)          # m: the height at the newest of them
        self._settle_thinning = np.zeros(heights.size)           # m: judged thinning in the current settle
        self._lag = np.full(heights.size, np.nan)                # m: each point's first settle's thinning

    @classmethod
    def from_fitted(cls, heights_ini_m: ArrayLike, floor_m: ArrayLike | float,
                    params: DamperParams | None = None) -> MillingPlanner:
        """Current system: each point starts at its 3D-fitted initial height (m)."""
        return cls(heights_ini_m, floor_m, params)

    @classmethod
    def equal_height(cls, heights_ini_m: ArrayLike, floor_m: ArrayLike | float,
                     params: DamperParams | None = None) -> MillingPlanner:
        """Prior system: every point starts at max(heights_ini_m) (m), so none starts in bone.

        ``heights_ini_m`` are the fitted initial heights (used only for their maximum);
        ``floor_m`` is checked against them as in ``from_fitted``.
        """
        heights, floor = _heights_and_floor(heights_ini_m, floor_m)
        return cls(np.full(heights.size, heights.max()), floor, params)

    @property
    def params(self) -> DamperParams:
        return self._params

    @property
    def n_points(self) -> int:
        return self._heights.size

    @property
    def theta_rad(self) -> NDArray[np.float64]:
        """Angle of each point on the circle (rad), 2 pi i / n."""
        return self._theta.copy()

    @property
    def initial_heights_m(self) -> NDArray[np.float64]:
        """Starting height of each point (m)."""
        return self._initial.copy()

    @property
    def heights_m(self) -> NDArray[np.float64]:
        """Current planned burr-centre height of each point (m)."""
        return self._heights.copy()

    @property
    def floor_m(self) -> NDArray[np.float64]:
        """Virtual floor of each point (m)."""
        return self._floor.copy()

    @property
    def completion(self) -> NDArray[np.float64]:
        """Last known completion level of each point, the one the last update used (0 at first)."""
        return self._completion.copy()

    @property
    def done(self) -> NDArray[np.bool_]:
        """Which points are through and have finished their over-cut (latched with
        ``params.latch_done``)."""
        return self._done.copy()

    @property
    def waiting(self) -> NDArray[np.bool_]:
        """Which points the last update held at ``params.sync_level`` for the others to catch up."""
        return self._waiting.copy()

    @property
    def settling(self) -> NDArray[np.bool_]:
        """Which points the last update held in their settle (``params.settle_below_m``)."""
        return self._settle.copy()

    @property
    def settles(self) -> NDArray[np.int64]:
        """How many settles each point has finished (at most one per level)."""
        return self._settles.copy()

    @property
    def lag_m(self) -> NDArray[np.float64]:
        """Each point's lag behind its plan as its first settle measured it (m): the sum of the
        judged passes' thinning; NaN before that settle ended (or when it ended by the point
        going through)."""
        return self._lag.copy()

    @property
    def speed_scale(self) -> float:
        """The factor on every point's cutting speed (module docstring): sqrt(lag_target_m / the
        upper quartile of the lags the first settles measured), in [min_speed_scale, 1]; 1 while
        fewer than 3 points have measured theirs (the first to go through are the first to settle:
        waiting for more came too late for them), or with ``lag_target_m = 0``."""
        p = self._params
        lags = self._lag[np.isfinite(self._lag)]
        if p.lag_target_m <= 0.0 or lags.size < _MIN_LAGS:
            return 1.0
        lag = float(np.quantile(lags, _LAG_QUANTILE))
        return 1.0 if lag <= p.lag_target_m else max(math.sqrt(p.lag_target_m / lag), p.min_speed_scale)

    @property
    def all_done(self) -> bool:
        """The stop condition: True exactly when every point is done."""
        return bool(self._done.all())

    def update(self, completion: ArrayLike, dt_s: float, remaining_m: ArrayLike | None = None,
               passes: ArrayLike | None = None) -> None:
        """Advance the plan by ``dt_s`` (s, finite, >= 0) with the perceived levels.

        ``completion``: c_i for each point, in [0, 1] or NaN (unknown this update: the last
        known level is kept). ``remaining_m``: the remaining bone thickness read at each point
        (m, >= 0, NaN: unknown), from a sensor that reads it, with ``passes``: how many times the
        burr has passed over each point so far (integers >= 0, never decreasing); both None (a
        completion-only sensor): no settle. Each h_i descends by v(c_i) dt_s (0 once done, 0
        while it waits at ``sync_level`` for a point still below it or holds in a settle), then
        is clamped at its floor. Raises
        ``PlanningParameterError`` for a wrong length, a level outside [0, 1] (or infinite), a
        negative or infinite thickness, a pass count that is not a whole number >= the last one,
        one of the two without the other, or a bad ``dt_s``.
        """
        c = np.asarray(completion, dtype=float)
        if c.shape != (self.n_points,):
            raise PlanningParameterError("completion", f"shape {c.shape}",
                                         f"shape ({self.n_points},), one level per point")
        known = ~np.isnan(c)
        outside = known & ~((c >= 0.0) & (c <= 1.0))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise PlanningParameterError(f"completion[{i}]", float(c[i]), "in [0, 1] or NaN")
        if not (math.isfinite(dt_s) and dt_s >= 0.0):
            raise PlanningParameterError("dt_s", dt_s, "finite and >= 0")
        if (remaining_m is None) != (passes is None):
            raise PlanningParameterError("remaining_m" if remaining_m is None else "passes", None,
                                         "given together with " + ("passes" if remaining_m is None else "remaining_m"))
        r = None
        if remaining_m is not None:
            r = np.asarray(remaining_m, dtype=float)
            if r.shape != (self.n_points,):
                raise PlanningParameterError("remaining_m", f"shape {r.shape}",
                                             f"shape ({self.n_points},), one thickness per point")
            bad = ~np.isnan(r) & ~((r >= 0.0) & np.isfinite(r))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise PlanningParameterError(f"remaining_m[{i}]", float(r[i]), ">= 0 and finite, or NaN")
            k = finite_vector("passes", passes, length=self.n_points)
            bad = ~((k == np.round(k)) & (k >= self._passes))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise PlanningParameterError(f"passes[{i}]", float(k[i]),
                                             f"a whole number >= the last count, {int(self._passes[i])}")
        p = self._params
        self._clock_s += dt_s
        self._completion[known] = c[known]
        reads_through = self._completion >= p.through_level
        self._through = (self._through | reads_through) if p.latch_done else reads_through
        first = self._through & np.isnan(self._through_h)
        self._through_h[first] = self._heights[first]
        if r is not None:
            self._set_overcut(first, r)
        overcut_end = np.where(self._through, self._through_h - self._overcut, -np.inf)   # m
        overcut_done = self._through & (self._heights <= np.maximum(overcut_end, self._floor) + 1e-12)
        self._done = (self._done | overcut_done) if p.latch_done else overcut_done
        if r is not None:
            passed = k > self._passes
            self._passes = k.astype(np.int64)
            if p.settle_levels_m:
                self._update_settle(r, passed)
        at_sync = ~self._through & (self._completion >= p.sync_level)
        self._waiting = at_sync & bool(np.any(~self._through & ~at_sync))
        hold = self._done | self._waiting | self._settle
        scale = self.speed_scale
        law = np.where(self._through, p.v_cut_min_m_s * scale,
                       p.speed_m_s(self._completion, self._initial - self._heights, scale))
        speed = np.where(hold, 0.0, law)
        lowered = np.maximum(self._heights - speed * dt_s, np.minimum(self._heights, overcut_end))
        self._heights = np.maximum(lowered, self._floor)

    def _set_overcut(self, first: NDArray[np.bool_], remaining_m: NDArray[np.float64]) -> None:
        """Each point read through for the first time gets its over-cut (module docstring); the
        others not through keep their last ``settle_readings`` thickness readings."""
        p = self._params
        for i in np.flatnonzero(first):
            recent = self._recent[i]
            if len(recent) == p.settle_readings and not self._behind[i]:
                clearance = float(np.median(recent)) - (self._recent_h[i] - self._heights[i])
                self._overcut[i] = min(max(clearance - p.overcut_margin_m, 0.0), p.overcut_m)
        for i in np.flatnonzero(~self._through & np.isfinite(remaining_m)):
            self._recent[i] = (self._recent[i] + [float(remaining_m[i])])[-p.settle_readings:]
            self._recent_h[i] = self._heights[i]

    def _update_settle(self, remaining_m: NDArray[np.float64], passed: NDArray[np.bool_]) -> None:
        """Start, follow and end each point's settle (module docstring) with this update's
        readings; ``passed``: the burr completed a pass over the point since the last update."""
        p, now = self._params, self._clock_s
        levels = p.settle_levels_m
        seen = np.isfinite(remaining_m)
        for i in range(self.n_points):
            ri = float(remaining_m[i])
            if not self._settle[i]:
                k = int(self._settles[i])
                if (k < len(levels) and (k == 0 or self._behind[i]) and not self._through[i]
                        and seen[i] and ri <= levels[k]):
                    self._settle[i], self._settle_start_s[i] = True, now
                    self._behind[i] = False
                    self._settle_thinning[i] = 0.0
                    self._readings[i] = [ri]
                    self._before_pass[i] = np.nan
                continue
            if self._through[i]:
                self._end_settle(i)
                continue
            readings = self._readings[i]
            if passed[i]:
                # the level before this pass: the median of at least settle_readings readings
                # since the last one (else none: a single reading just before a pass is too noisy)
                enough = len(readings) >= p.settle_readings
                self._before_pass[i] = float(np.median(readings)) if enough else np.nan
                readings = self._readings[i] = []
            if seen[i]:
                readings.append(ri)
                if len(readings) == p.settle_readings and math.isfinite(self._before_pass[i]):
                    drop = self._before_pass[i] - float(np.median(readings))
                    self._settle_thinning[i] += drop
                    self._behind[i] |= drop > p.resettle_drop_m
                    if drop <= (p.settle_drop_m if self._settles[i] == 0 else p.resettle_drop_m):
                        self._end_settle(i)
                        continue
            if now - self._settle_start_s[i] >= p.settle_max_s - 1e-9:
                self._end_settle(i)

    def _end_settle(self, i: int) -> None:
        """Point i is free again; its settle counts as finished. The first settle of a point not
        through records its lag (its judged thinning), from which ``speed_scale`` follows."""
        if self._settles[i] == 0 and not self._through[i] and math.isfinite(self._before_pass[i]):
            self._lag[i] = max(self._settle_thinning[i], 0.0)
        self._settle[i] = False
        self._settles[i] += 1
        self._readings[i] = []

    def path(self) -> ClosedConstrainedSpline:
        """The smoothed trajectory: height (m) as a function of the angle (rad) on the circle."""
        return ClosedConstrainedSpline(self._theta, self._heights)


class StopReason(enum.Enum):
    """Why milling stops. ``StopMonitor.check`` documents the priority order."""

    COMPLETE = "complete"
    TIMEOUT = "timeout"
    PERCEPTION_LOST = "perception_lost"
    SAFETY_FAULT = "safety_fault"


@dataclass(frozen=True)
class StopMonitor:
    """Decides when milling must stop: halt the robot and the drill.

    ``timeout_s`` (> 0): longest milling time, counted from ``start_s``;
    ``perception_timeout_s`` (> 0): longest time without a completion reading (without one,
    the planner descends blind on stale levels); ``start_s``: when milling started (s, same
    clock as ``check``'s times, default 0).
    """

    timeout_s: float
    perception_timeout_s: float
    start_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("timeout_s", "perception_timeout_s", "start_s"):
            _check_finite(name, getattr(self, name))
        for name in ("timeout_s", "perception_timeout_s"):
            if getattr(self, name) <= 0.0:
                raise PlanningParameterError(name, getattr(self, name), "> 0")

    def check(self, now_s: float, last_perception_s: float | None, all_done: bool,
              safety_fault: str | None) -> StopReason | None:
        """The reason to stop now, or None to go on.

        ``now_s``: the current time (s, >= start_s); ``last_perception_s``: time of the last
        completion reading (s, <= now_s; None: none yet, counted from start_s);
        ``all_done``: the planner's stop condition; ``safety_fault``: a description of a fault
        raised by the safety layer (force, limits, drill), None when there is none.

        Priority, highest first:
        1. SAFETY_FAULT: whenever ``safety_fault`` is not None, whatever else holds; the stop
           must be reported as a fault to be investigated even if the window is complete.
        2. COMPLETE: every point is through; success even if perception has gone stale or the
           time has run out at the same moment.
        3. PERCEPTION_LOST: now_s - last reading >= perception_timeout_s; the more specific
           diagnosis when the time has also run out.
        4. TIMEOUT: now_s - start_s >= timeout_s.
        """
        _check_finite("now_s", now_s)
        if now_s < self.start_s:
            raise PlanningParameterError("now_s", now_s, f">= start_s={self.start_s!r}")
        if last_perception_s is not None:
            _check_finite("last_perception_s", last_perception_s)
            if last_perception_s > now_s:
                raise PlanningParameterError("last_perception_s", last_perception_s,
                                             f"<= now_s={now_s!r}")
        if safety_fault is not None:
            return StopReason.SAFETY_FAULT
        if all_done:
            return StopReason.COMPLETE
        last = self.start_s if last_perception_s is None else last_perception_s
        if now_s - last >= self.perception_timeout_s:
            return StopReason.PERCEPTION_LOST
        if now_s - self.start_s >= self.timeout_s:
            return StopReason.TIMEOUT
        return None
