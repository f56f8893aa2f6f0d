"""Why a run failed: explain_failure names the point, the time and the cause on synthetic runs
whose answer is built in (a flat skull, {S} = {R}, the window axis along z)."""
import math

import numpy as np
import pytest

from controllers.milling import MillingLog, MillingReport
from controllers.motion.milling_control import WindowFrame
from controllers.planning import StopReason
from scenarios.failure import FailureEvidence, explain_failure, failure_figure
from scenarios.scoring import PerceptionTruth
from twin.milling import Breach, MillContact, MillOutcome, MillTrace

N = 12                      # sampling points
R = 2e-3                    # window radius (m)
RB = 0.5e-3                 # burr radius (m)
INNER = -0.3e-3             # inner surface z (m); the outer surface starts at 0
THROUGH_H = INNER + RB      # burr-centre height at which a point goes through (m)
DT = 0.2                    # perception period (s)
T_END = 30.0
THETA = 2 * np.pi * np.arange(N) / N      # path angles of the points (window frame)


class Run:
    """A synthetic run: per update, the filtered and raw c_i, the planned h_i and the truth."""

    def __init__(self, rot: float = 0.0):
        #: the window frame's e1 at polar angle ``rot`` in {S}: point i lies at THETA[i] + rot in {S}
        self.rot = rot
        self.points = np.stack([R * np.cos(THETA + rot), R * np.sin(THETA + rot), np.zeros(N)], axis=1)
        self.t = np.arange(0.0, T_END + 1e-9, DT)
        m = self.t.size
        self.c_read = np.full((m, N), 0.5)
        self.c_true = np.full((m, N), 0.5)
        self.heights = np.full((m, N), 0.4e-3)
        self.groove_z = np.full((m, N), -0.1e-3)        # true groove bottom (m, {S} z)
        self.deflection = lambda t: 5e-6

    def through(self, i: int, t_read: float, c_read_at: float = 0.995, c_true_at: float = 1.0) -> None:
        """Point i read through at ``t_read`` (filtered = raw reading here)."""
        k = self.t >= t_read - 1e-9
        self.c_read[k, i] = c_read_at
        self.c_true[k, i] = c_true_at
        if c_true_at >= 1.0:
            self.groove_z[k, i] = INNER

    def evidence(self, outcome: MillOutcome, stop: StopReason = StopReason.COMPLETE,
                 done: np.ndarray | None = None) -> FailureEvidence:
        log = MillingLog()
        for k, t in enumerate(self.t):
            log.t_s.append(t)
            log.completion.append(self.c_read[k].copy())
            log.raw_completion.append(self.c_read[k].copy())
            log.heights_m.append(self.heights[k].copy())
            log.burr_r.append(np.zeros(3))
        c, s = math.cos(self.rot), math.sin(self.rot)
        frame = WindowFrame(np.zeros(3), np.array([0.0, 0.0, 1.0]), np.array([c, s, 0.0]), np.array([-s, c, 0.0]))
        done = self.c_read[-1] >= 0.99 if done is None else done
        report = MillingReport(stop, stop.value, 0.0, T_END, frame, R, THETA, self.points, self.points[:, None, :],
                               np.full(N, -1e-3), self.heights[0], self.heights[-1], done, 0, log)
        trace = MillTrace()
        for t in np.arange(0.02, T_END + 1e-9, 0.02):
            breach = (outcome.first_breach if outcome.first_breach is not None
                      and abs(t - outcome.first_breach.t_s) < 0.01 else None)
            trace.append(t, np.array([R, 0.0, 0.2e-3]), MillContact(True, 0.1, self.deflection(t), False, 0.0, breach))
        truth = []
        for k, t in enumerate(self.t):
            groove = self.points.copy()
            groove[:, 2] = self.groove_z[k]
            truth.append(PerceptionTruth(t, self.c_read[k].copy(), self.c_true[k].copy(), groove,
                                         np.full(N, INNER), groove[:, 2] - INNER))
        return FailureEvidence(report, outcome, trace.arrays(), truth, np.eye(4), RB, 0.99)


def outcome(detachable=True, bridge_m=0.0, bridge_angle=0.0, breach: Breach | None = None) -> MillOutcome:
    return MillOutcome(bridge_m, bridge_angle, detachable, int(breach is not None), breach, 0.5, 30e-6, False)


def all_through(run: Run) -> None:
    for i in range(N):
        run.through(i, 5.0 + i)


def test_success_has_no_cause():
    run = Run()
    all_through(run)
    assert explain_failure(run.evidence(outcome())) is None


def test_breach_names_the_point_time_neighbour_and_deflection():
    run = Run()
    all_through(run)
    run.through(7, 8.0)
    # the breach 0.15 mm radially outside point 7, 10.1 s into milling, 23 um deep
    bx, by = (R + 0.15e-3) * math.cos(THETA[7]), (R + 0.15e-3) * math.sin(THETA[7])   # rot = 0: {S} = window
    breach = Breach(10.1, bx, by, 23e-6)
    run.heights[:, 7] = THROUGH_H - 10e-6                    # planned 10 um below the through height
    run.heights[:, 8] = THROUGH_H - 62e-6 - 1e-6 * (run.t - 10.0)   # neighbour 8: 52 um lower at 10 s, descending
    run.heights[:, 6] = THROUGH_H + 0.1e-3
    run.deflection = lambda t: 31e-6 if abs(t - 10.1) < 0.011 else 2e-6
    cause = explain_failure(run.evidence(outcome(breach=breach)))
    assert cause.kind == "breach" and cause.point == 7 and cause.t_s == pytest.approx(10.1)
    assert cause.size_m == pytest.approx(23e-6) and cause.distance_m == pytest.approx(0.15e-3, abs=1e-9)
    assert cause.read_through_s == pytest.approx(8.0) and cause.deflection_m == pytest.approx(31e-6)
    assert cause.c_read == pytest.approx(0.995) and cause.c_true == pytest.approx(1.0)
    assert cause.text.startswith("membrane breached 23 um at 10.1 s, 0.15 mm from point 7 (read through at 8.0 s")
    assert "planned height was 10 um below the through height" in cause.text
    assert "neighbour 8 was 52 um lower and descending" in cause.text
    assert "head deflection 31 um" in cause.text
    assert "bridge" not in cause.text


@pytest.mark.parametrize("rot", [0.0, 2.0])
def test_bridge_names_the_misread_point(rot):
    """The twin finds the bridge at a polar angle in {S}; the cause places it on the path (the
    window frame's angles), whichever way the frame is turned in {S}."""
    run = Run(rot)
    all_through(run)
    run.through(10, 12.0, c_read_at=0.99, c_true_at=0.93)   # read through while bone was left
    angle = (THETA[9] + THETA[10]) / 2 + 0.05
    bridge_s = np.mod(angle + rot, 2 * np.pi)
    cause = explain_failure(run.evidence(outcome(detachable=False, bridge_m=34e-6, bridge_angle=bridge_s)))
    assert cause.kind == "bridge" and cause.point == 10 and cause.t_s == pytest.approx(12.0)
    assert cause.angle_rad == pytest.approx(angle) and cause.size_m == pytest.approx(34e-6)
    assert cause.text == (f"bridge 34 um left at {math.degrees(angle):.0f} deg (between points 9 and 10): "
                          "point 10 was read through at 12.0 s at c_read 0.99 while c_true was 0.93")


def test_timeout_lists_the_points_not_through():
    run = Run()
    all_through(run)
    run.c_read[:, [3, 4]] = 0.9
    run.c_true[:, 3], run.c_true[:, 4] = 0.95, 0.8
    ev = run.evidence(outcome(), stop=StopReason.TIMEOUT)
    cause = explain_failure(ev)
    assert cause.kind == "timeout" and cause.points_not_through == (3, 4)
    assert cause.point == 4 and cause.t_s == pytest.approx(T_END) and cause.read_through_s is None
    assert cause.text == "timeout after 30 s with 2 points not through (3, 4) (the flap was detachable nonetheless)"
    # the same timeout with the flap held by a bridge at point 4: the bridge comes first
    cause = explain_failure(run.evidence(outcome(detachable=False, bridge_m=60e-6, bridge_angle=THETA[4] + 0.01),
                                         stop=StopReason.TIMEOUT))
    assert cause.kind == "bridge" and cause.point == 4
    assert cause.text.endswith("point 4 was never read through (last c_read 0.90, c_true 0.80); "
                               "and timeout after 30 s with 2 points not through (3, 4)")


def test_perception_lost_says_when_the_last_reading_was():
    run = Run()
    all_through(run)
    run.c_read[:, 5], run.c_true[:, 5] = 0.5, 0.6
    run.c_read[run.t > 20.0, :] = np.nan
    done = np.ones(N, bool)
    done[5] = False
    cause = explain_failure(run.evidence(outcome(), stop=StopReason.PERCEPTION_LOST, done=done))
    assert cause.kind == "perception_lost" and cause.point == 5
    assert cause.text.startswith("perception lost at 30.0 s (last valid reading at 20.0 s) with 1 point not "
                                 "through (5)")


def test_failure_figure_is_written(tmp_path):
    run = Run()
    all_through(run)
    ev = run.evidence(outcome(breach=Breach(10.1, R, 0.0, 23e-6)))
    ev.trace["burr_s"][:] = [R, 0.0, THROUGH_H]        # the burr sits on point 0
    cause = explain_failure(ev)
    failure_figure(tmp_path / "case000_failure.png", ev, cause)
    assert (tmp_path / "case000_failure.png").stat().st_size > 10_000


def test_a_point_the_sensor_never_saw_is_called_unseen():
    run = Run()
    all_through(run)
    run.c_read[:, 5], run.c_true[:, 5] = np.nan, 0.3
    cause = explain_failure(run.evidence(outcome(detachable=False, bridge_m=60e-6, bridge_angle=THETA[5] + 0.01)))
    assert cause.point == 5 and cause.text.endswith("point 5 was never read through (last c_read unseen, c_true 0.30)")
    assert cause.as_notes(0.0)["c_read"] is None and cause.as_notes(0.0)["points_not_through"] == [5]
