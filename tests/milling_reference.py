"""NumPy reference forms of the bone model's compiled passes (``twin.milling_kernels``): the
swept envelope, the cut and the time stamps as ``twin.milling`` computed them with whole-array float32 NumPy
operations before they were compiled. The tests check the compiled model against these bit for
bit."""
from __future__ import annotations

import numpy as np

from twin.milling import _THROUGH_GATE_PER_M, COS_MIN, NO_CONTACT, THROUGH_TOL_M, BoneMill, CellBox, MillContact, _Scratch


class Scratch(_Scratch):
    """``twin.milling._Scratch`` with the constant arrays the NumPy form used."""

    def const(self, name: str, value: float, shape: tuple[int, int]) -> np.ndarray:
        """A float32 array of ``value`` (never written by callers)."""
        n = shape[0] * shape[1]
        buf = self._flat.get(name)
        if buf is None or buf.size < n:
            buf = self._flat[name] = np.full(max(n, 4096), value, np.float32)
        return buf[:n].reshape(shape)


def swept_envelope(xs: np.ndarray, ys: np.ndarray, box: CellBox, a: tuple[float, float, float],
                    b: tuple[float, float, float], r: float, sc: Scratch) -> np.ndarray:
    """Lower envelope z (m) of a sphere of radius ``r`` swept from ``a`` to ``b`` on the cells of
    ``box`` (float32 work array of ``sc``; +inf off the footprint): min over the spheres at ``a``,
    ``b`` and ``c*`` (see the module docstring). The higher endpoint's sphere never lies below
    c*'s (its centre is no lower and no nearer in xy), so only the lower endpoint is evaluated.
    Call under ``np.errstate(invalid="ignore")``: square roots of negatives mark cells off a
    sphere's footprint with NaN, which ``np.fmin`` then skips."""
    ax, ay, az = a
    dx, dy, dz = b[0] - ax, b[1] - ay, b[2] - az
    X = (xs[box.cols] - ax).astype(np.float32)
    Y = (ys[box.rows] - ay).astype(np.float32)
    shape = (Y.size, X.size)
    r2 = np.float32(r * r)
    qa = sc.take("qa", shape)
    np.subtract((r2 - Y * Y)[:, None], X * X, out=qa)          # r^2 - |p - a|^2
    env = sc.take("env", shape)
    L2 = dx * dx + dy * dy
    if L2 > (1e-4 * r) ** 2:       # else c* is within 0.05 um of an endpoint: the lower one suffices
        # s = clip(T, 0, 1), T = (p - a).w / |w|^2 with w the segment's xy direction; then
        # r^2 - |p - a - s w|^2 = (r^2 - |p - a|^2) - L2 s (s - 2 T).
        T = sc.take("T", shape)
        np.add((Y * np.float32(dy / L2))[:, None], X * np.float32(dx / L2), out=T)
        s = sc.take("s", shape)
        np.maximum(T, sc.const("zero", 0.0, shape), out=s)
        np.minimum(s, sc.const("one", 1.0, shape), out=s)
        w = sc.take("w", shape)
        np.subtract(s, T, out=w)
        np.subtract(w, T, out=w)
        np.multiply(w, s, out=w)
        np.multiply(w, np.float32(L2), out=w)
        np.subtract(qa, w, out=w)
        np.sqrt(w, out=w)
        np.multiply(s, np.float32(dz), out=env)                 # c*_z - sqrt(...)
        np.add(env, np.float32(az), out=env)
        np.subtract(env, w, out=env)
        if dz == 0:                                             # level: c* covers both ends
            np.fmin(env, sc.const("inf", np.inf, shape), out=env)   # NaN (no sphere) -> +inf
            return env
        low = sc.take("w", shape)
    else:
        low = env
    if dz > 0 or (dz == 0 and L2 == 0):                        # a is the lower endpoint
        np.sqrt(qa, out=low)
        np.subtract(np.float32(az), low, out=low)
    else:
        XB, YB = X - np.float32(dx), Y - np.float32(dy)
        np.subtract((r2 - YB * YB)[:, None], XB * XB, out=low)  # r^2 - |p - b|^2
        np.sqrt(low, out=low)
        np.subtract(np.float32(b[2]), low, out=low)
    if low is not env:
        np.fmin(env, low, out=env)
    np.fmin(env, sc.const("inf", np.inf, shape), out=env)       # NaN (no sphere) -> +inf
    return env


def _record_first(times: np.ndarray, mask: np.ndarray, t_s: float, sc: _Scratch) -> None:
    """``times = t_s`` where ``mask`` and ``times`` is NaN (never): fmin with (t_s or NaN). Call
    under ``np.errstate(invalid="ignore")``."""
    stamp = sc.take("stamp", mask.shape)
    np.copyto(stamp, mask)                          # 1.0 / 0.0
    np.divide(stamp, stamp, out=stamp)              # 1.0 / NaN (0/0)
    np.multiply(stamp, np.float32(t_s), out=stamp)
    np.fmin(times, stamp, out=times)


class ReferenceBoneMill(BoneMill):
    """``BoneMill`` with the NumPy form of ``_mill`` (stepped under ``np.errstate(invalid="ignore")``)."""

    def step(self, *args, **kwargs) -> MillContact:
        with np.errstate(invalid="ignore"):
            return super().step(*args, **kwargs)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scratch = Scratch()

    def _mill(self, t_s: float, box: CellBox, blocks: tuple[slice, slice], a: tuple[float, float, float],
              b: tuple[float, float, float], cutting: bool, v_dt: float) -> MillContact:
        """``step`` on the cells of ``box`` (the burr may touch bone there); ``v_dt`` (m): the
        period's largest cut at hardness 1 (the NumPy form). Runs under ``np.errstate(invalid="ignore")``."""
        p, sk, sc = self.params, self.skull, self._scratch
        r = p.burr_radius_m
        env = swept_envelope(self._xs, self._ys, box, a, b, r, sc)
        shape = env.shape
        outer = sk.outer_z[box.rows, box.cols]
        inner = sk.inner_z[box.rows, box.cols]
        old = sc.take("old", shape)
        np.copyto(old, outer)
        volume = 0.0
        cos = sc.take("cos", shape)
        np.subtract(np.float32(min(a[2], b[2])), env, out=cos)
        np.multiply(cos, np.float32(1.0 / r), out=cos)
        np.fmax(cos, np.float32(COS_MIN), out=cos)    # NaN, -inf off the footprint -> COS_MIN
        np.minimum(cos, np.float32(1.0), out=cos)
        if cutting:
            new = sc.take("new", shape)
            np.multiply(self._inv_hardness[box.rows, box.cols], np.float32(-v_dt), out=new)
            np.divide(new, cos, out=new)              # along the burr's normal
            np.add(new, old, out=new)                 # outer - v dt / cos
            np.fmax(new, env, out=new)                # +inf off the footprint ...
            np.minimum(new, old, out=new)             # ... so untouched there
            crack = sc.take("crack", shape, np.bool_)
            np.less(new, old, out=crack)
            np.logical_and(crack, new - inner < np.float32(p.crack_thickness_m), out=crack)
            np.copyto(new, inner, where=crack)        # thin bone cracks through
            np.maximum(new, inner, out=new)
            removed = sc.take("removed", shape)
            np.subtract(old, new, out=removed)
            depth_sum = float(removed.sum())       # float32 pairwise sum: ~1e-7 relative
            if depth_sum > 0:
                np.copyto(outer, new)
                sk.mark_changed(box.rows, box.cols)
                volume = depth_sum * sk.grid.cell ** 2
        else:
            new = old

        thick = sc.take("thick", shape)
        np.subtract(new, inner, out=thick)
        thin = float(thick.min()) <= THROUGH_TOL_M
        e_map = sc.take("e", shape)
        np.subtract(new, env, out=e_map)              # -inf off the footprint
        n_map = sc.take("n", shape)
        np.multiply(e_map, cos, out=n_map)            # overlap along the normal
        np.multiply(n_map, cos, out=e_map)            # vertical push
        if thin:                                      # through cells hold no bone to push on
            gate = sc.take("gate", shape)
            np.subtract(thick, np.float32(THROUGH_TOL_M), out=gate)
            np.multiply(gate, np.float32(_THROUGH_GATE_PER_M), out=gate)
            np.fmin(e_map, gate, out=e_map)
            np.fmin(n_map, gate, out=n_map)
        e = max(float(e_map.max()), 0.0)
        if volume == 0.0 and e == 0.0:
            return NO_CONTACT

        delta = min(e, p.max_deflection_m)
        overload = e > p.max_deflection_m
        force = p.skull_stiffness_n_per_m * max(float(n_map.max()), 0.0)
        mask = sc.take("mask", shape, np.bool_)
        np.less(env, old, out=mask)
        _record_first(self._first_contact[box.rows, box.cols], mask, t_s, sc)
        breach = None
        if thin:
            through = sc.take("through", shape, np.bool_)
            np.less_equal(thick, np.float32(THROUGH_TOL_M), out=through)
            if volume > 0:          # cells that went through now: through and cut this period
                np.greater(removed, np.float32(0.0), out=mask)
                np.logical_and(mask, through, out=mask)
                if mask.any():
                    _record_first(self._through[box.rows, box.cols], mask, t_s, sc)
            if min(a[2], b[2]) - r + delta < float(self._membrane_bound[blocks].max()) - p.breach_tolerance_m:
                breach = self._deepest_breach(t_s, box, env, through, delta)

        self.peak_force_n = max(self.peak_force_n, force)
        self.max_deflection_m = max(self.max_deflection_m, delta)
        self.overload = self.overload or overload
        self.removed_volume_m3 += volume
        if breach is not None:
            self.breaches.append(breach)
        return MillContact(True, force, delta, overload, volume, breach)
