"""Compiled (numba) forms of the bone model's per-cell passes, bit-identical to their NumPy forms.

``twin.milling`` computed the swept envelope and the cut with some thirty whole-array float32
NumPy operations per period on the burr's footprint (a few thousand cells); each kernel here
does the same operations, in the same order and precision, in one pass per cell (no fast-math:
no reordering, no fused multiply-add). ``tests/test_milling_physics.py`` compares them with the
NumPy forms (``tests/milling_reference.py``) with ``np.array_equal``. Float32 sums stay in
NumPy (its pairwise summation order is part of the result).
"""
from __future__ import annotations

import numpy as np
from numba import njit

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_INF = np.float32(np.inf)


@njit(cache=True, nogil=True, inline="always")
def _fmin(a, b):
    """``np.fmin``: the smaller, ignoring a NaN."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a <= b else b


@njit(cache=True, nogil=True)
def swept_envelope(X: np.ndarray, Y: np.ndarray, r2: np.float32, consts: np.ndarray, oblique: bool,
                   level: bool, low_is_a: bool, env: np.ndarray) -> None:
    """Compiled form of ``twin.milling._swept_envelope`` (see there and the module docstring of
    ``twin.milling``): ``env[i, j]`` (m) for cell offsets ``X[j]``, ``Y[i]`` (float32, m, from the
    start point a). ``consts`` float32: dx / L2, dy / L2, L2, dz, a_z, b_z, dx, dy (segment
    a-b, L2 = dx^2 + dy^2). ``oblique``: c* is evaluated (L2 above its threshold); ``level``:
    dz = 0 (c* covers both ends); ``low_is_a``: the lower endpoint is a (else b)."""
    cx, cy, L2, dz, az, bz, dx, dy = (consts[0], consts[1], consts[2], consts[3], consts[4], consts[5],
                                      consts[6], consts[7])
    for i in range(Y.size):
        ry = r2 - Y[i] * Y[i]
        yb = Y[i] - dy
        ryb = r2 - yb * yb
        ty = Y[i] * cy
        for j in range(X.size):
            qa = ry - X[j] * X[j]
            if low_is_a:
                low = az - np.sqrt(qa)
            else:
                xb = X[j] - dx
                low = bz - np.sqrt(ryb - xb * xb)
            if oblique:
                T = ty + X[j] * cx
                s = max(T, _F0)
                s = min(s, _F1)
                w = ((s - T) - T) * s * L2
                w = np.sqrt(qa - w)
                e = (s * dz + az) - w
                if not level:
                    e = _fmin(e, low)
            else:
                e = low
            env[i, j] = _fmin(e, _INF)


@njit(cache=True, nogil=True)
def cut(env: np.ndarray, outer: np.ndarray, inner: np.ndarray, inv_hardness: np.ndarray, neg_v_dt: np.float32,
        cutting: bool, through_tol: np.float32, gate_per_m: np.float32, zc: np.float32, inv_r: np.float32,
        cos_min: np.float32, crack: np.float32, old_out: np.ndarray, new_out: np.ndarray, removed_out: np.ndarray,
        thick_out: np.ndarray) -> tuple:
    """Compiled form of the cut and the interference in ``twin.milling.BoneMill._mill``: per cell,
    ``old`` = outer, ``cos = clip((zc - env) / r, cos_min, 1)`` (the burr surface's tilt);
    cutting: ``new = min(fmax(old + inv_hardness * -v dt / cos, env), old)``, cracked through
    (``new = inner``) where the burr cut the cell and left less than ``crack``, then
    ``new = max(new, inner)``; not cutting: ``new = old``. ``removed = old - new``;
    ``thick = new - inner``. With ``e = new - env`` (vertical overlap), returns (min thick,
    max of ``e cos cos``, max of its through-gated form ``fmin(e cos cos, (thick - through_tol) *
    gate_per_m)``, max of ``e cos``, max of its gated form), all float32 (m): the head's vertical
    push and the normal overlap, if no cell is thin and if one is."""
    thick_min = _INF
    push_max = -_INF
    push_gated = -_INF
    normal_max = -_INF
    normal_gated = -_INF
    for i in range(env.shape[0]):
        for j in range(env.shape[1]):
            old = outer[i, j]
            inn = inner[i, j]
            ev = env[i, j]
            cos = (zc - ev) * inv_r
            if not cos >= cos_min:          # also NaN / -inf off the footprint
                cos = cos_min
            elif cos > np.float32(1.0):
                cos = np.float32(1.0)
            if cutting:
                new = inv_hardness[i, j] * neg_v_dt / cos + old
                if not (new >= ev or ev != ev):             # np.fmax
                    new = ev
                new = min(new, old)
                if new < old and new - inn < crack:
                    new = inn
                new = max(new, inn)
            else:
                new = old
            old_out[i, j] = old
            new_out[i, j] = new
            removed_out[i, j] = old - new
            th = new - inn
            thick_out[i, j] = th
            thick_min = min(thick_min, th)
            e = new - ev
            gate = (th - through_tol) * gate_per_m
            normal = e * cos
            push = normal * cos
            push_max = max(push_max, push)
            push_gated = max(push_gated, _fmin(push, gate))
            normal_max = max(normal_max, normal)
            normal_gated = max(normal_gated, _fmin(normal, gate))
    return thick_min, push_max, push_gated, normal_max, normal_gated


@njit(cache=True, nogil=True)
def stamp_first_contact(times: np.ndarray, env: np.ndarray, old: np.ndarray, t: np.float32) -> None:
    """Compiled form of the first-contact stamp: ``times = fmin(times, t)`` (s, NaN = never)
    where the burr's envelope ``env`` reached below the period's starting surface ``old`` (m)."""
    for i in range(times.shape[0]):
        for j in range(times.shape[1]):
            if env[i, j] < old[i, j]:
                times[i, j] = _fmin(times[i, j], t)


@njit(cache=True, nogil=True)
def stamp_through(times: np.ndarray, removed: np.ndarray, thick: np.ndarray, through_tol: np.float32,
                  t: np.float32) -> None:
    """Compiled form of the through stamp: ``times = fmin(times, t)`` (s, NaN = never) where bone
    was cut this period (``removed`` > 0, m) and at most ``through_tol`` (m) is left (``thick``)."""
    for i in range(times.shape[0]):
        for j in range(times.shape[1]):
            if removed[i, j] > _F0 and thick[i, j] <= through_tol:
                times[i, j] = _fmin(times[i, j], t)
