"""Hypothesis strategies for fault schedules (issue 14 part 4): milling-job parameter dicts
(``fault_*``, see docs/faults.md) within the bounds of the job's parameter model
(``scenarios.jobs.MillingJobParams``, the one source: no range is restated here).

``faults()`` draws every fault kind (``FAULT_KINDS``) as ``one_of(just(no fault), <the kind's
parameters>)``: hypothesis shrinks a ``one_of`` to its first branch, so a failing schedule
shrinks kind by kind to "no fault", and within a kind towards the smallest sizes and earliest
times; what remains is what the failure needs. The result holds every ``fault_*`` parameter
(the defaults, i.e. no fault, where a kind was not drawn), ready to merge into a milling case's
job parameters: ``{**JOBS["milling"].parameters, **drawn}``.

The falsify helper's ``scenarios.testing.strategies`` may re-export ``faults`` (its
``SCENE_GROUPS`` extension point); this module depends on nothing there.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import annotated_types
from hypothesis import strategies as st

from scenarios.jobs import MillingJobParams

#: each fault kind and the job parameters that describe it
FAULT_KINDS: dict[str, tuple[str, ...]] = {
    "dropped_frames": ("fault_dropped_frames",),
    "image_latency": ("fault_image_latency_s",),
    "keypoint_outliers": ("fault_keypoint_outliers",),
    "completion_outliers": ("fault_completion_outliers",),
    "joint_state_delay": ("fault_joint_delay_s", "fault_joint_delay_start_s", "fault_joint_delay_duration_s"),
    "joint_state_freeze": ("fault_joint_freeze_start_s", "fault_joint_freeze_duration_s"),
    "disconnect": ("fault_disconnect_start_s", "fault_disconnect_duration_s", "fault_disconnect_permanent"),
}
#: every fault parameter of the milling job
FAULT_PARAMETERS: tuple[str, ...] = tuple(p for ps in FAULT_KINDS.values() for p in ps)


def fault_bounds(name: str) -> tuple[float, float]:
    """[lo, hi] of the milling job's numeric parameter ``name`` (from ``MillingJobParams``)."""
    field = MillingJobParams.model_fields[name]
    lo, hi = -math.inf, math.inf
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = float(m.ge)
        elif isinstance(m, annotated_types.Le):
            hi = float(m.le)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"MillingJobParams.{name}: no finite bounds [{lo}, {hi}] to draw from")
    return lo, hi


def no_faults() -> dict[str, Any]:
    """Every fault parameter at its default (no fault)."""
    return {p: MillingJobParams.model_fields[p].default for p in FAULT_PARAMETERS}


def _size(name: str) -> st.SearchStrategy[float]:
    """A size above zero (a kind drawn is a fault that fires), up to the bound; shrinks towards small."""
    lo, hi = fault_bounds(name)
    return st.floats(lo, hi, exclude_min=True, allow_nan=False, allow_infinity=False)


def _start(name: str, start_max_s: float) -> st.SearchStrategy[float]:
    lo, hi = fault_bounds(name)
    return st.floats(lo, min(hi, max(lo, start_max_s)), allow_nan=False, allow_infinity=False)


def _kind(kind: str, start_max_s: float) -> st.SearchStrategy[dict[str, Any]]:
    """One kind's parameters when it is drawn (each value makes it fire if the run lasts)."""
    names = FAULT_KINDS[kind]
    if len(names) == 1:
        return st.fixed_dictionaries({names[0]: _size(names[0])})
    if kind == "joint_state_delay":
        return st.fixed_dictionaries({names[0]: _size(names[0]), names[1]: _start(names[1], start_max_s),
                                      names[2]: _size(names[2])})
    if kind == "joint_state_freeze":
        return st.fixed_dictionaries({names[0]: _start(names[0], start_max_s), names[1]: _size(names[1])})
    start, duration, permanent = names
    return st.one_of(      # a lost connection for a while, or (the second branch: shrinks to the first) for good
        st.fixed_dictionaries({start: _start(start, start_max_s), duration: _size(duration)}),
        st.fixed_dictionaries({start: _start(start, start_max_s), permanent: st.just(True)}))


def faults(kinds: Iterable[str] = tuple(FAULT_KINDS), start_max_s: float = 60.0) -> st.SearchStrategy[dict[str, Any]]:
    """A fault schedule as milling-job parameters: each of ``kinds`` absent (its first branch, what
    shrinking goes to) or drawn within the job's bounds. ``start_max_s`` (s from the cut's start)
    caps the timed faults' starts (clipped to the bounds; 60 s, as scenarios/milling_faults.toml:
    a fault after the run has ended never fires)."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"faults(kinds={unknown!r}): unknown fault kind(s); allowed: {', '.join(FAULT_KINDS)}")
    groups = [st.one_of(st.just({}), _kind(k, start_max_s)) for k in kinds]
    return st.tuples(*groups).map(lambda parts: {**no_faults(), **{k: v for part in parts for k, v in part.items()}})
