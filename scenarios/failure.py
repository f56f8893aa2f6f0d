"""Why a milling run failed, in words and in one figure (GROUND TRUTH: twin only).

A run *failed* when the twin's verdict is FAILURE (the membrane was breached, or a bone bridge
thicker than the break threshold keeps the flap from detaching) or when the controller did not
stop with every point through (timeout, perception lost, safety fault). ``explain_failure``
names one cause, by priority: a breach; else a safety fault; else a bridge (the flap not
detachable); else the controller's own stop. Other failures of the same run follow in the text.

The evidence (``FailureEvidence``, built by ``failure_evidence`` from the twin world after a
run) is what the loop logged (``MillingLog``: filtered and raw c_i, planned heights h_i) beside
the truth: the twin's per-period ``MillTrace`` (burr centre, force, deflection, breach depth)
and the ``ScoredSensor``'s ``PerceptionTruth`` per reading (c_true, the groove's true bottom).

Definitions (SI; mm/um only in the text):
- **times** (``t_s`` fields) are on the hardware clock (= the twin's); the text gives them in
  seconds since drill on (``MillingReport.start_s``), as the milling figure does;
- **heights** are burr-centre heights along the window axis (``WindowFrame``), as the planner's
  h_i: the *true height* of point i is the height at which the burr's lowest point rests on the
  groove's true bottom (the lowest outer-surface point over the point's cross-section probes):
  bottom height + burr radius; the *through height* is the same with the inner surface under
  that probe: the burr centre there has cut the bone through (below it, it presses on the
  membrane);
- **read through**: the first update at which the loop's filtered c_i reached the planner's
  ``through_level`` (the point is done from then on);
- **point nearest** a breach: the sampling point (on the fitted surface, in {S} xy) nearest the
  breached cell; **angles** are the controller's path angles about the window axis
  (``WindowFrame.angle_of``: point i at 360 i / n deg): a bridge (found by ``BoneMill.outcome``
  at a polar angle in {S}) is placed on the path there and lies between the two sampling points
  nearest to it in angle.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controllers.milling import MillingReport
from controllers.planning import StopReason
from scenes.frames import apply, invert
from scenarios.jobs.premeasurement_common import new_figure, save_figure
from scenarios.scoring import PerceptionTruth
from twin.milling import MillOutcome

#: how far before the failure the figure looks (s)
FIGURE_WINDOW_S = 10.0


@dataclass(frozen=True)
class FailureEvidence:
    """What ``explain_failure`` reads. ``report``: the loop's report and log; ``outcome``: the
    twin's judgement of the window (``BoneMill.outcome`` about the report's centre);
    ``trace``: ``MillTrace.arrays()``; ``truth``: one ``PerceptionTruth`` per loop update;
    ``T_s_to_r`` (4x4): {S} -> {R}; ``burr_radius_m`` (m); ``through_level``: the planner's
    completion at which a point is done."""

    report: MillingReport
    outcome: MillOutcome
    trace: dict[str, np.ndarray]
    truth: list[PerceptionTruth]
    T_s_to_r: np.ndarray
    burr_radius_m: float
    through_level: float


@dataclass(frozen=True)
class FailureCause:
    """One failed run's cause. ``kind``: "breach", "safety_fault", "bridge", "timeout" or
    "perception_lost"; ``text``: the cause in words (every failure of the run, the main one
    first); ``point``: the sampling point it is about (index 0..n-1); ``t_s`` (s, hardware
    clock): when (the breach; the moment the point was read through or the run stopped);
    ``size_m`` (m): breach depth below the membrane, or the bridge's thickness (None otherwise);
    ``distance_m`` (m, {S} xy): from the breach cell to the point; ``angle_rad`` (rad, the path
    angle about the window axis, as the sampling points' ``theta_rad``): where the breach or
    bridge is; ``deflection_m`` (m): the head's deflection at ``t_s``; ``read_through_s`` (s):
    when the loop read the point through (None: never); ``c_read``, ``c_true``: raw reading (NaN:
    unseen) and true completion of the point at the last reading at or before ``t_s`` (None: no
    reading yet); ``points_not_through``: points the loop had not read through
    when it stopped."""

    kind: str
    text: str
    point: int
    t_s: float
    size_m: float | None = None
    distance_m: float | None = None
    angle_rad: float | None = None
    deflection_m: float | None = None
    read_through_s: float | None = None
    c_read: float | None = None
    c_true: float | None = None
    points_not_through: tuple[int, ...] = field(default_factory=tuple)

    def as_notes(self, start_s: float) -> dict:
        """JSON-ready fields (units in the names; times in s since drill on at ``start_s``, as
        in the text) for a case's notes."""
        return {"kind": self.kind, "point": self.point, "t_since_drill_on_s": self.t_s - start_s,
                "size_um": None if self.size_m is None else self.size_m * 1e6,
                "distance_mm": None if self.distance_m is None else self.distance_m * 1e3,
                "angle_deg": None if self.angle_rad is None else math.degrees(self.angle_rad),
                "deflection_um": None if self.deflection_m is None else self.deflection_m * 1e6,
                "read_through_since_drill_on_s": None if self.read_through_s is None
                else self.read_through_s - start_s, "c_read": _finite(self.c_read), "c_true": _finite(self.c_true),
                "points_not_through": list(self.points_not_through)}


def failure_evidence(world, report: MillingReport, truth: list[PerceptionTruth],
                     through_level: float) -> FailureEvidence:
    """The evidence of a run on the twin ``world`` (``hw.ground_truth``), after it."""
    centre_s = apply(invert(world.T_s_to_r), report.frame.origin_r)
    return FailureEvidence(report, world.mill.outcome(centre_s[:2], report.radius_m), world.mill_trace.arrays(),
                           truth, world.T_s_to_r, world.mill.params.burr_radius_m, through_level)


class _View:
    """Derived quantities of the evidence, shared by the cause and the figure."""

    def __init__(self, ev: FailureEvidence):
        self.ev = ev
        rep = ev.report
        T_r_to_s = invert(ev.T_s_to_r)
        self.n = rep.theta_rad.size
        self.points_s = apply(T_r_to_s, rep.points_r)
        self.centre_s = apply(T_r_to_s, rep.frame.origin_r)
        log = rep.log.arrays()
        self.t = log["t_s"]
        self.filtered = log["completion"].reshape(self.t.size, self.n)
        self.raw = log["raw_completion"].reshape(self.t.size, self.n)
        self.heights = log["heights_m"].reshape(self.t.size, self.n)
        self.truth_t = np.array([r.t_s for r in ev.truth])

    def since_start(self, t_s: float) -> float:
        return t_s - self.ev.report.start_s

    def axis_height(self, p_s: np.ndarray) -> np.ndarray:
        """Height along the window axis (m) of points ``p_s`` (m, {S})."""
        return self.ev.report.frame.to_window(apply(self.ev.T_s_to_r, p_s))[..., 2]

    def window_height(self, p_s: np.ndarray) -> np.ndarray:
        """Burr-centre height along the window axis (m) of a burr whose lowest point is at ``p_s``."""
        return self.axis_height(p_s) + self.ev.burr_radius_m

    def true_heights(self) -> tuple[np.ndarray, np.ndarray]:
        """(m, n) true heights and through heights (m) per truth row and point (module docstring)."""
        if not self.ev.truth:
            return np.empty((0, self.n)), np.empty((0, self.n))
        groove = np.stack([r.groove_s for r in self.ev.truth])
        inner = groove.copy()
        inner[..., 2] = np.stack([r.inner_z_s for r in self.ev.truth])
        return self.window_height(groove), self.window_height(inner)

    def read_through_s(self, i: int) -> float | None:
        hit = np.flatnonzero(np.nan_to_num(self.filtered[:, i], nan=-1.0) >= self.ev.through_level)
        return float(self.t[hit[0]]) if hit.size else None

    def truth_row_at(self, t_s: float) -> int | None:
        """Index of the last truth row at or before ``t_s``."""
        k = int(np.searchsorted(self.truth_t, t_s + 1e-9)) - 1
        return k if k >= 0 else None

    def log_row_at(self, t_s: float) -> int | None:
        k = int(np.searchsorted(self.t, t_s + 1e-9)) - 1
        return k if k >= 0 else None

    def deflection_at(self, t_s: float) -> float | None:
        tt = self.ev.trace["t_s"]
        if not tt.size:
            return None
        return float(self.ev.trace["deflection_m"][int(np.argmin(np.abs(tt - t_s)))])

    def path_angle(self, p_s: np.ndarray) -> float:
        """Path angle (rad) about the window axis of a point (m, {S})."""
        return float(self.ev.report.frame.angle_of(apply(self.ev.T_s_to_r, np.asarray(p_s, float))))

    def readings(self, i: int, t_s: float) -> tuple[float | None, float | None]:
        """(raw c_read, c_true) of point i at the last reading at or before ``t_s``."""
        k = self.truth_row_at(t_s)
        if k is None:
            return None, None
        return float(self.ev.truth[k].c_read[i]), float(self.ev.truth[k].c_true[i])


def _c(v: float | None) -> str:
    """A completion level for the text: "n/a" (no reading yet), "unseen" (NaN: the sensor saw no level)."""
    return "n/a" if v is None else "unseen" if not math.isfinite(v) else f"{v:.2f}"


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _reading_clause(v: _View, i: int, t_s: float) -> tuple[str, float | None, float | None, float | None]:
    """"read through at .. s, c_read .., c_true .." (at the read-through, if before ``t_s``) or the
    last reading before ``t_s``; with the read-through time and the two levels."""
    tr = v.read_through_s(i)
    if tr is not None and tr <= t_s + 1e-9:
        cr, ct = v.readings(i, tr)
        return f"read through at {v.since_start(tr):.1f} s, c_read {_c(cr)}, c_true {_c(ct)}", tr, cr, ct
    cr, ct = v.readings(i, t_s)
    return f"not read through; last c_read {_c(cr)}, c_true {_c(ct)}", None, cr, ct


def _breach(v: _View) -> FailureCause:
    b = v.ev.outcome.first_breach
    d = np.hypot(v.points_s[:, 0] - b.x_s, v.points_s[:, 1] - b.y_s)
    i = int(np.argmin(d))
    reading, tr, cr, ct = _reading_clause(v, i, b.t_s)
    text = (f"membrane breached {b.depth_below_membrane_m * 1e6:.0f} um at {v.since_start(b.t_s):.1f} s, "
            f"{d[i] * 1e3:.2f} mm from point {i} ({reading})")
    k = v.log_row_at(b.t_s)
    if k is not None:
        h = v.heights[k]
        row = v.truth_row_at(b.t_s)
        if row is not None:
            through = v.true_heights()[1][row, i]
            if h[i] < through:
                text += f"; its planned height was {(through - h[i]) * 1e6:.0f} um below the through height"
        j = min(((i - 1) % v.n, (i + 1) % v.n), key=lambda m: h[m])
        before = v.log_row_at(v.t[k] - 1.0)
        moving = ("descending" if before is not None and h[j] < v.heights[before, j] - 1e-7 else "holding")
        text += (f"; neighbour {j} was {abs(h[j] - h[i]) * 1e6:.0f} um {'lower' if h[j] < h[i] else 'higher'} "
                 f"and {moving}")
    defl = v.deflection_at(b.t_s)
    if defl is not None:
        text += f"; head deflection {defl * 1e6:.0f} um at the time"
    return FailureCause("breach", text, i, b.t_s, size_m=b.depth_below_membrane_m, distance_m=float(d[i]),
                        angle_rad=v.path_angle([b.x_s, b.y_s, v.centre_s[2]]), deflection_m=defl,
                        read_through_s=tr, c_read=cr, c_true=ct)


def _bridge(v: _View) -> FailureCause:
    o = v.ev.outcome
    r = v.ev.report.radius_m
    angle = v.path_angle(v.centre_s + [r * math.cos(o.bridge_angle_rad), r * math.sin(o.bridge_angle_rad), 0.0])
    gap = np.abs(np.angle(np.exp(1j * (v.ev.report.theta_rad - angle))))
    i = int(np.argmin(gap))
    j = min(((i - 1) % v.n, (i + 1) % v.n), key=lambda m: gap[m])
    last = v.ev.truth[-1] if v.ev.truth else None
    k = i if last is None or last.c_true[i] <= last.c_true[j] else j     # the point with more bone left
    stop = v.ev.report.stop_s
    _, tr, cr, ct = _reading_clause(v, k, stop)
    if tr is not None:
        detail = f"point {k} was read through at {v.since_start(tr):.1f} s at c_read {_c(cr)} while c_true was {_c(ct)}"
    else:
        detail = f"point {k} was never read through (last c_read {_c(cr)}, c_true {_c(ct)})"
    a, b = sorted((i, j))
    text = (f"bridge {o.max_bridge_m * 1e6:.0f} um left at {math.degrees(angle):.0f} deg "
            f"(between points {a} and {b}): {detail}")
    t = stop if tr is None else tr
    return FailureCause("bridge", text, k, t, size_m=o.max_bridge_m, angle_rad=angle,
                        deflection_m=v.deflection_at(t), read_through_s=tr, c_read=cr, c_true=ct)


def _stopped(v: _View) -> FailureCause:
    """The controller's own stop other than COMPLETE: timeout, perception lost or a safety fault."""
    rep = v.ev.report
    reason = rep.stop_reason
    todo = tuple(int(i) for i in np.flatnonzero(~np.asarray(rep.done, bool)))
    last = v.ev.truth[-1] if v.ev.truth else None
    if reason is StopReason.SAFETY_FAULT and v.ev.trace["t_s"].size:
        burr = v.ev.trace["burr_s"][-1]
        i = int(np.argmin(np.hypot(v.points_s[:, 0] - burr[0], v.points_s[:, 1] - burr[1])))
    elif todo and last is not None:
        i = min(todo, key=lambda m: last.c_true[m])          # the point with most bone left
    else:
        i = todo[0] if todo else 0
    names = ", ".join(map(str, todo[:8])) + (", ..." if len(todo) > 8 else "")
    left = f"{len(todo)} point{'s' if len(todo) != 1 else ''} not through" + (f" ({names})" if todo else "")
    t = rep.stop_s
    if reason is StopReason.TIMEOUT:
        text = f"timeout after {rep.duration_s:.0f} s with {left}"
    elif reason is StopReason.PERCEPTION_LOST:
        valid = np.flatnonzero(np.isfinite(v.raw).any(axis=1))
        seen = f"last valid reading at {v.since_start(v.t[valid[-1]]):.1f} s" if valid.size else "no valid reading"
        text = f"perception lost at {v.since_start(t):.1f} s ({seen}) with {left}"
    else:
        text = f"safety fault at {v.since_start(t):.1f} s near point {i}: {rep.message}; {left}"
    _, tr, cr, ct = _reading_clause(v, i, t)
    return FailureCause(reason.value, text, i, t, deflection_m=v.deflection_at(t), read_through_s=tr,
                        c_read=cr, c_true=ct, points_not_through=todo)


def explain_failure(ev: FailureEvidence) -> FailureCause | None:
    """The cause of a failed run (module docstring), or None when the run succeeded: no breach,
    the flap detachable, and the controller stopped with every point through."""
    rep, o = ev.report, ev.outcome
    breached, detachable = o.breaches > 0, o.detachable
    complete = rep.stop_reason is StopReason.COMPLETE
    if not breached and detachable and complete:
        return None
    if breached and o.first_breach is None:
        raise ValueError(f"explain_failure: outcome counts {o.breaches} breaches but has no first_breach")
    v = _View(ev)
    parts = []
    if breached:
        parts.append(_breach(v))
    if rep.stop_reason is StopReason.SAFETY_FAULT:
        parts.append(_stopped(v))
    if not detachable:
        parts.append(_bridge(v))
    if not complete and rep.stop_reason is not StopReason.SAFETY_FAULT:
        parts.append(_stopped(v))
    main = parts[0]
    text = "; and ".join([main.text] + [p.text for p in parts[1:]])
    if detachable and not breached:
        text += " (the flap was detachable nonetheless)"
    todo = tuple(int(i) for i in np.flatnonzero(~np.asarray(rep.done, bool)))
    return FailureCause(main.kind, text, main.point, main.t_s, main.size_m, main.distance_m, main.angle_rad,
                        main.deflection_m, main.read_through_s, main.c_read, main.c_true, todo)


def explain_run(world, report: MillingReport, truth: list[PerceptionTruth], through_level: float,
                figure_path: Path | None = None, title_prefix: str | None = None) -> FailureCause | None:
    """A finished run on the twin ``world``: its cause (``explain_failure``, None when it succeeded)
    and, with ``figure_path``, a failed run's figure written there (``failure_figure``; titled
    "``title_prefix``: cause" when given). The one place the milling job and the demo judge a
    run's failure."""
    evidence = failure_evidence(world, report, truth, through_level)
    cause = explain_failure(evidence)
    if cause is not None and figure_path is not None:
        Path(figure_path).parent.mkdir(parents=True, exist_ok=True)
        failure_figure(Path(figure_path), evidence, cause,
                       None if title_prefix is None else f"{title_prefix}: {cause.text}")
    return cause


def failure_figure(path: Path, ev: FailureEvidence, cause: FailureCause, title: str | None = None) -> None:
    """Point ``cause.point`` and its two neighbours over the last ``FIGURE_WINDOW_S`` before
    ``cause.t_s`` (and 1 s after): (a) planned and true heights, relative to each point's
    through height, and the true burr centre while it passes the point; (b) the head's
    deflection (the contact force is stiffness x interference), breaches marked; (c) c_true
    against the raw and filtered c_read. The red line is the failure's moment."""
    v = _View(ev)
    i, n = cause.point, v.n
    pts = [(i - 1) % n, i, (i + 1) % n]
    colours = {pts[0]: "#4477aa", i: "#cc3311", pts[2]: "#228833"}
    t0 = ev.report.start_s
    lo, hi = cause.t_s - FIGURE_WINDOW_S, min(cause.t_s + 1.0, ev.report.stop_s)
    fig = new_figure((15, 4.6))
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, k) for k in (1, 2, 3))

    def span(t: np.ndarray) -> np.ndarray:
        return (t >= lo) & (t <= hi)

    true_h, through_h = v.true_heights()
    ref_row = v.truth_row_at(cause.t_s)
    ref = through_h[ref_row] if ref_row is not None else np.zeros(n)
    m_log, m_true = span(v.t), span(v.truth_t)
    for k in pts:
        c = colours[k]
        ax1.step(v.t[m_log] - t0, (v.heights[m_log, k] - ref[k]) * 1e6, where="post", color=c,
                 label=f"planned h_{k}")
        if m_true.any():
            ax1.plot(v.truth_t[m_true] - t0, (true_h[m_true, k] - ref[k]) * 1e6, "--", color=c,
                     label=f"true height {k}")
    tr = ev.trace
    m_tr = span(tr["t_s"])
    near = m_tr & (np.hypot(tr["burr_s"][:, 0] - v.points_s[i, 0], tr["burr_s"][:, 1] - v.points_s[i, 1])
                   < np.pi * ev.report.radius_m / n)
    if near.any():
        ax1.plot(tr["t_s"][near] - t0, (v.axis_height(tr["burr_s"][near]) - ref[i]) * 1e6,
                 ".", color="black", markersize=3, label=f"burr centre near point {i} (true)")
    ax1.axhline(0.0, color="black", linewidth=0.6)
    ax1.set(xlabel="time since drill on (s)", ylabel="height above the point's through height (um)",
            title="(a) burr-centre heights along the window axis")
    ax1.legend(fontsize=6)
    ax2.plot(tr["t_s"][m_tr] - t0, tr["deflection_m"][m_tr] * 1e6, color="#4477aa", linewidth=0.7,
             label="deflection")
    br = m_tr & np.isfinite(tr["breach_depth_m"])
    if br.any():
        ax2.plot(tr["t_s"][br] - t0, tr["breach_depth_m"][br] * 1e6, "x", color="#cc3311",
                 label="breach depth")
    ax2.set(xlabel="time since drill on (s)", ylabel="um", title="(b) head deflection and breaches (true)")
    ax2.legend(fontsize=6, loc="upper left")
    for k in pts:
        c = colours[k]
        if m_true.any():
            ax3.plot(v.truth_t[m_true] - t0, [ev.truth[j].c_true[k] for j in np.flatnonzero(m_true)], color=c,
                     label=f"c_true {k}")
        ax3.plot(v.t[m_log] - t0, v.raw[m_log, k], ".", color=c, markersize=3, label=f"c_read raw {k}")
        ax3.plot(v.t[m_log] - t0, v.filtered[m_log, k], ":", color=c, label=f"c_read filtered {k}")
    ax3.axhline(ev.through_level, color="black", linestyle="--", linewidth=0.6, label="through level")
    ax3.set(xlabel="time since drill on (s)", ylabel="completion", title="(c) true vs read completion")
    ax3.legend(fontsize=6, ncol=3)
    for ax in (ax1, ax2, ax3):
        ax.axvline(cause.t_s - t0, color="red", linewidth=0.8)
    save_figure(fig, path, textwrap.fill(title or f"{cause.kind} at point {i}: {cause.text}", 190))
