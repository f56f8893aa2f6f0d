"""Text views of a recording and of its replay, for ``micromill replay``.

``describe_recording``: what was recorded (program, backend, length, frames, events, and the
controllers' decisions: calibration, surface fit, milling stop). ``describe_replay``: how the
replayed controllers' commands and decisions compare with the recorded ones.
"""
from __future__ import annotations

from collections import Counter

from hw_bridge.recording_reader import Decision, Recording


def _decision_line(d: Decision) -> str:
    p = d.payload
    if d.topic == "calibration/result":
        return (f"calibration: RMS {p['rms_m'] * 1e3:.3f} mm, inliers {sum(p['inliers'])}/{len(p['inliers'])}, "
                f"skipped setpoints {p['skipped_setpoints']}")
    if d.topic == "surface_fit/result":
        if p["failure"]:
            return f"surface fit: FAILED ({p['failure']})"
        return f"surface fit: {len(p['points_ini_r'])} trajectory points; keypoints {sorted(p['keypoints_left_px'])}"
    if d.topic == "milling/stop":
        return f"milling stop: {p['message']} ({p['points_done']} points through)"
    return f"{d.topic}: {sorted(p)}"


def _key_decisions(decisions: list[Decision]) -> list[str]:
    """One line per decision except the frequent milling/update ones (counted instead)."""
    lines = [f"  t={d.now_s:8.3f} s  {_decision_line(d)}" for d in decisions if d.topic != "milling/update"]
    n_updates = sum(d.topic == "milling/update" for d in decisions)
    if n_updates:
        last = next(d for d in reversed(decisions) if d.topic == "milling/update")
        done = sum(bool(x) for x in last.payload["done"])
        lines.append(f"  milling/update: {n_updates} perception updates; at the last one {done}/"
                     f"{len(last.payload['done'])} points through")
    return lines


def describe_recording(rec: Recording) -> str:
    m = rec.metadata
    t = rec.ticks.now_s
    span = f"{t[0]:.3f}-{t[-1]:.3f} s" if len(t) else "empty"
    lines = [f"recording {rec.path}: program {m.program!r} {m.arguments} on backend {m.backend!r}, seed {m.seed}, "
             f"recorded {m.created_utc} by micromill {m.micromill_version}",
             f"  {len(t)} ticks ({span}), {len(rec.commands.q)} joint commands "
             f"({int(sum(rec.commands.sent))} sent), {len(rec.frames)} stereo frames"
             + (" (downscaled)" if rec.images_downscaled else "") + f", {len(rec.drill)} drill commands",
             "  events: " + (", ".join(f"{e.kind} at {e.now_s:.3f} s" + (f" ({e.message})" if e.kind == "safety_stop"
                                                                          else "") for e in rec.events) or "none"),
             "recorded decisions:"]
    lines += _key_decisions(rec.decisions) or ["  none"]
    return "\n".join(lines)


def describe_replay(report, rec: Recording, replayed: list[Decision]) -> str:
    lines = [report.summary(), "replayed decisions:"]
    lines += _key_decisions(replayed) or ["  none"]
    counts = Counter(d.topic for d in rec.decisions)
    for topic, c in sorted(report.decisions.items()):
        lines.append(f"  {topic}: recorded {c.recorded} (of {counts[topic]} in the file), replayed {c.replayed}, "
                     f"{'equal' if c.equal else 'DIFFERENT'}")
    lines.append("REPLAY DIVERGED from the recording" if report.diverged else
                 "the replayed controllers decided exactly as recorded")
    return "\n".join(lines)
