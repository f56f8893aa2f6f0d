"""Parameter checks shared by the milling planner and its spline."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["PlanningParameterError", "finite_vector"]


class PlanningParameterError(ValueError):
    """A parameter or input is out of its allowed range.

    ``field``: the parameter's name, with the index of the offending element for arrays
    (e.g. ``"floor_m[3]"``); ``value``: the offending value; ``allowed``: the allowed range,
    in words. The message names all three.
    """

    def __init__(self, field: str, value: object, allowed: str):
        super().__init__(f"{field}={value!r}: must be {allowed}")
        self.field = field
        self.value = value
        self.allowed = allowed


def finite_vector(field: str, values: ArrayLike, length: int | None = None,
                  min_length: int = 1) -> NDArray[np.float64]:
    """``values`` as a new 1-D float array, checked finite and of the given length.

    ``length``: the exact number of elements required (None: any number >= ``min_length``).
    Raises ``PlanningParameterError`` naming ``field`` (and the first bad index).
    """
    x = np.array(values, dtype=float)
    if x.ndim != 1:
        raise PlanningParameterError(field, f"shape {x.shape}", "a 1-D array")
    if length is not None and x.size != length:
        raise PlanningParameterError(f"len({field})", x.size, f"{length} (one per point)")
    if x.size < min_length:
        raise PlanningParameterError(f"len({field})", x.size, f">= {min_length}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise PlanningParameterError(f"{field}[{bad[0]}]", float(x[bad[0]]), "finite")
    return x
