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
  mode 3, through   c_i >= through_level:                 v = 0, and the point is done

Synchronised finish (``DamperParams.sync_level``): a point that is not done with
c_i >= sync_level waits (speed 0) while any point that is not done is below sync_level, so
the points go through the last of the bone together (``MillingPlanner.waiting``). A point whose
reading never reaches sync_level (a sensor stuck low, a point held by its floor) holds every
other point with it until the ``StopMonitor``'s timeout: a local failure becomes a whole-window
one, which the loop reports as a timeout with the points not through.

A NaN c_i (the point unseen this update, e.g. hidden behind the drill) keeps its last known
level (0 before any reading). With ``latch_done`` (default) a point once done stays done.

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
        self._waiting = np.zeros(heights.size, dtype=bool)

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
        """Which points are through (latched with ``params.latch_done``)."""
        return self._done.copy()

    @property
    def waiting(self) -> NDArray[np.bool_]:
        """Which points the last update held at ``params.sync_level`` for the others to catch up."""
        return self._waiting.copy()

    @property
    def all_done(self) -> bool:
        """The stop condition: True exactly when every point is done."""
        return bool(self._done.all())

    def update(self, completion: ArrayLike, dt_s: float) -> None:
        """Advance the plan by ``dt_s`` (s, finite, >= 0) with the perceived levels.

        ``completion``: c_i for each point, in [0, 1] or NaN (unknown this update: the last
        known level is kept). Each h_i descends by v(c_i) dt_s (0 once done, and 0 while it
        waits at ``sync_level`` for a point still below it), then is clamped at its floor.
        Raises ``PlanningParameterError`` for a wrong length, a level outside [0, 1] (or
        infinite), or a bad ``dt_s``.
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
        p = self._params
        self._completion[known] = c[known]
        through = self._completion >= p.through_level
        self._done = (self._done | through) if p.latch_done else through
        at_sync = ~self._done & (self._completion >= p.sync_level)
        self._waiting = at_sync & bool(np.any(~self._done & ~at_sync))
        speed = np.where(self._done | self._waiting, 0.0, p.speed_m_s(self._completion, self._initial - self._heights))
        self._heights = np.maximum(self._heights - speed * dt_s, self._floor)

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
