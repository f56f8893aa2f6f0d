"""The ``replay`` backend: a recorded run (``hw_bridge.recording``) fed back through the controllers.

Open-loop replay on the recorded time base; nothing moves and nothing is simulated:

- the clock ``now()`` is the recorded time of the current tick (tick 0: the state read at
  configure; tick k: after the k-th advance() of the recorded run); ``advance()`` moves to the
  next recorded tick and raises ``ReplayFinished`` past the last one;
- ``read()`` returns the recorded joint state of the current tick, whatever was commanded: the
  replayed controllers see exactly what the recorded ones saw, so a controller that commands
  differently does not see the consequences (open loop);
- ``grab_stereo()`` returns the newest recorded frame that had been grabbed at or before the
  current tick (only frames the recorded controllers grabbed are in a recording; None before the
  first one, and always None for a recording without frames: ``has_cameras`` is then False).
  Images recorded downscaled (``image_scale < 1``) are upsampled back to the original size, so
  perception runs but does not see the recorded pixels; a warning and the report say so;
- ``write()`` goes through the safety layer as on any backend, then the accepted command is
  compared with the command recorded at the same tick (the n-th command of a tick with the n-th
  recorded one); ``set_drill()`` likewise; ``publish_decision()`` also collects the decision for
  comparison with the recorded ones (topic by topic, in order). ``report()`` sums it up
  (``ReplayReport``).

The base class's watchdog still runs: states, stamps and the clock come from the recording, so
it behaves as in the recorded run (a recorded stale state stops the replay too).

Units: SI (rad, m, s), drill speed in rpm.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hw_bridge.errors import EndOfRun, HardwareError
from hw_bridge.interface import DrillState, Hardware, JointState, StereoFrame
from hw_bridge.recording import RecordingError, to_json_value
from hw_bridge.recording_reader import Decision, load_recording
from scenes.spec import SceneSpec

log = logging.getLogger("micromill.hw_bridge")

#: default tolerance of ``ReplayHardware.report`` on a joint command difference (rad | m): replaying
#: the recorded program gives bit-identical commands; this only absorbs float noise
DEFAULT_TOLERANCE = 1e-9


class ReplayFinished(EndOfRun):
    """advance() past the last recorded tick: the recording is over."""


@dataclass(frozen=True)
class TopicComparison:
    """Decisions on one topic, up to the current tick."""

    recorded: int
    replayed: int
    equal: bool                        # same payloads in the same order


@dataclass(frozen=True)
class ReplayReport:
    """How the replayed run compares with the recorded one, up to the tick the replay reached."""

    recording: Path
    ticks_recorded: int
    ticks_replayed: int                # ticks reached (the current tick + 1)
    tolerance: float                   # rad | m: a larger joint command difference is a divergence
    commands_recorded: int             # in the whole recording
    commands_replayed: int
    commands_compared: int             # replayed ones with a recorded command at the same tick and rank
    commands_unmatched: int            # replayed where the recording has none
    commands_missing: int              # recorded up to the current tick but not replayed
    max_abs_dq: np.ndarray             # (joints,) rad | m, largest |replayed - recorded| of compared commands
    drill_compared: int
    drill_mismatches: int              # compared drill commands that differ (on/off or speed)
    first_divergent_tick: int | None   # first tick where a joint or drill command differs (None: none did)
    first_divergent_time_s: float | None
    first_divergence: str              # what differed there ("" when nothing did)
    decisions: dict[str, TopicComparison]
    images_downscaled: bool            # the recording's images were stored downscaled (replay upsampled them)

    @property
    def diverged(self) -> bool:
        """True when a command or a decision differs from the recording."""
        return self.first_divergent_tick is not None or any(not c.equal for c in self.decisions.values())

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"replay of {self.recording}: {self.ticks_replayed}/{self.ticks_recorded} ticks",
                 (f"joint commands: {self.commands_compared} compared, {self.commands_unmatched} not in the "
                  f"recording, {self.commands_missing} recorded but not replayed; max |dq| = "
                  f"{float(np.max(self.max_abs_dq, initial=0.0)):.3g} (rad | m, tolerance {self.tolerance:g})"),
                 f"drill commands: {self.drill_compared} compared, {self.drill_mismatches} differ"]
        if self.first_divergent_tick is None:
            lines.append("no command diverged")
        else:
            lines.append(f"first divergence at tick {self.first_divergent_tick} "
                         f"(t = {self.first_divergent_time_s:.6f} s): {self.first_divergence}")
        for topic, c in self.decisions.items():
            lines.append(f"decisions {topic}: {c.recorded} recorded, {c.replayed} replayed, "
                         f"{'equal' if c.equal else 'DIFFERENT'}")
        if self.images_downscaled:
            lines.append("images were recorded downscaled and upsampled for replay: perception did not see "
                         "the recorded pixels")
        return "\n".join(lines)


class _Matcher:
    """Pairs each replayed item with the recorded one of the same tick and rank within the tick."""

    def __init__(self, recorded_ticks: list[int]):
        self.recorded_ticks = recorded_ticks
        self._by_tick: dict[int, list[int]] = {}
        for i, t in enumerate(recorded_ticks):
            self._by_tick.setdefault(t, []).append(i)
        self._rank: dict[int, int] = {}
        self.matched: set[int] = set()
        self.unmatched_ticks: list[int] = []
        self.replayed = 0

    def match(self, tick: int) -> int | None:
        """Index of the recorded counterpart of the next replayed item at ``tick`` (None: none)."""
        rank = self._rank.get(tick, 0)
        self._rank[tick] = rank + 1
        self.replayed += 1
        candidates = self._by_tick.get(tick, [])
        if rank < len(candidates):
            self.matched.add(candidates[rank])
            return candidates[rank]
        self.unmatched_ticks.append(tick)
        return None

    def missing_ticks(self, up_to_tick: int) -> list[int]:
        """Ticks of recorded items up to ``up_to_tick`` that were not replayed."""
        return [t for i, t in enumerate(self.recorded_ticks) if t <= up_to_tick and i not in self.matched]


class ReplayHardware(Hardware):
    """Replays the MCAP file named by the scene's ``backends.replay.recording`` (see the module docstring)."""

    name = "replay"
    moves_real_robot = False
    realtime = False
    closed_loop = False          # recorded states, whatever is commanded: no tracking rule

    def __init__(self, scene: SceneSpec, seed: int = 0, **kwargs):
        super().__init__(scene, seed, **kwargs)
        path = scene.backends.replay.recording
        if not path:
            raise HardwareError(f"replay: no recording: set backends.replay.recording in {scene.source} "
                                f"(or use scene_from_recording(rec, replay=True))")
        try:
            self.recording = load_recording(path)
        except RecordingError as exc:
            raise HardwareError(f"replay: backends.replay.recording: {exc}") from None
        ticks = self.recording.ticks
        if len(ticks) == 0:
            raise HardwareError(f"replay: {path} has no joint states (the recorded run was never configured)")
        joints = self.limits.position_min.size
        if ticks.position.shape[1] != joints:
            raise HardwareError(f"replay: {path} has {ticks.position.shape[1]} joints per state, the scene's robot "
                                f"({scene.robot.description_path.name}) has {joints}")
        if self.recording.images_downscaled:
            log.warning("replay: %s stores downscaled images; they are upsampled to the original size, so "
                        "perception does not see the recorded pixels", path)
        self._tick = 0
        self._frame_ticks = np.array([f.tick for f in self.recording.frames], dtype=int)
        self._frame_cache: tuple[int, StereoFrame] | None = None
        self._drill = DrillState(False, 0.0)
        #: the last joint target that reached the (replayed, motionless) robot, safe-stop holds included
        #: decisions published during the replay
        self.replayed_decisions: list[Decision] = []
        self._commands = _Matcher(self.recording.commands.tick.tolist())
        self._command_diffs: list[tuple[int, np.ndarray]] = []       # (tick, |replayed - recorded|)
        self._drills = _Matcher([d.tick for d in self.recording.drill])
        self._drill_diffs: list[tuple[int, str]] = []                # (tick, how it differs)

    @property
    def tick(self) -> int:
        """The current tick (index into ``recording.ticks``)."""
        return self._tick

    @property
    def has_cameras(self) -> bool:
        return bool(self.recording.frames)

    # ---- the recorded time base ----------------------------------------------------------
    def now(self) -> float:
        return float(self.recording.ticks.now_s[self._tick])

    def _advance(self) -> None:
        last = len(self.recording.ticks) - 1
        if self._tick >= last:
            raise ReplayFinished(f"replay: the recording {self.recording.path} ends at tick {last} "
                                 f"(t = {self.now():.6f} s)")
        self._tick += 1

    def _read(self) -> JointState:
        return self.recording.ticks.state(self._tick)

    def _grab_stereo(self) -> StereoFrame | None:
        k = int(np.searchsorted(self._frame_ticks, self._tick, side="right")) - 1
        if k < 0:
            return None
        if self._frame_cache is None or self._frame_cache[0] != k:
            self._frame_cache = (k, self.recording.frames[k].decode())
        return self._frame_cache[1]

    def _write(self, q_target: np.ndarray) -> None:
        """Nothing moves in a replay; ``write`` compares the accepted command with the recording."""

    def _set_drill(self, on: bool, speed_rpm: float) -> None:
        self._drill = DrillState(on, speed_rpm)

    def drill_state(self) -> DrillState:
        """What the replayed controllers last commanded (there is no drill)."""
        return self._drill

    # ---- comparison with the recording ---------------------------------------------------
    def write(self, q_target: np.ndarray) -> None:
        super().write(q_target)
        i = self._commands.match(self._tick)
        if i is not None:
            self._command_diffs.append((self._tick, np.abs(self._last_command - self.recording.commands.q[i])))

    def set_drill(self, on: bool, speed_rpm: float) -> None:
        super().set_drill(on, speed_rpm)
        speed = self._drill.speed_rpm          # as the base class passed it on (0 when off)
        i = self._drills.match(self._tick)
        if i is not None:
            rec = self.recording.drill[i]
            if rec.on != on or rec.speed_rpm != speed:
                how = (f"drill {'on' if on else 'off'} at {speed:g} rpm, recorded "
                       f"{'on' if rec.on else 'off'} at {rec.speed_rpm:g} rpm")
                self._drill_diffs.append((self._tick, how))

    def publish_decision(self, topic: str, **payload: Any) -> None:
        super().publish_decision(topic, **payload)
        self.replayed_decisions.append(Decision(self._tick, self.now(), topic,
                                                to_json_value(payload, f"decision {topic!r} payload")))

    def _decision_comparison(self) -> dict[str, TopicComparison]:
        recorded: dict[str, list] = {}
        for d in self.recording.decisions:
            if d.tick <= self._tick:
                recorded.setdefault(d.topic, []).append(d.payload)
        replayed: dict[str, list] = {}
        for d in self.replayed_decisions:
            replayed.setdefault(d.topic, []).append(d.payload)
        return {t: TopicComparison(len(recorded.get(t, [])), len(replayed.get(t, [])),
                                   recorded.get(t, []) == replayed.get(t, []))
                for t in sorted(recorded.keys() | replayed.keys())}

    def report(self, tolerance: float = DEFAULT_TOLERANCE) -> ReplayReport:
        """Compare what was replayed so far with the recording (joint commands differing by more
        than ``tolerance`` rad | m count as divergent)."""
        if not tolerance >= 0.0:
            raise ValueError(f"tolerance={tolerance!r} must be >= 0 (rad | m)")
        joints = self.limits.position_min.size
        diffs = [d for _, d in self._command_diffs]
        divergences: list[tuple[int, str]] = []
        for tick, d in self._command_diffs:
            if np.max(d) > tolerance:
                j = int(np.argmax(d))
                divergences.append((tick, f"joint command differs by {d[j]:.3g} at joint {j} (rad | m)"))
                break
        for what, matcher in (("joint command", self._commands), ("drill command", self._drills)):
            if matcher.unmatched_ticks:
                divergences.append((matcher.unmatched_ticks[0], f"a {what} the recording does not have"))
            missing = matcher.missing_ticks(self._tick)
            if missing:
                divergences.append((missing[0], f"a recorded {what} was not replayed"))
        if self._drill_diffs:
            divergences.append(self._drill_diffs[0])
        first = min(divergences, key=lambda d: d[0]) if divergences else None
        return ReplayReport(
            recording=self.recording.path,
            ticks_recorded=len(self.recording.ticks),
            ticks_replayed=self._tick + 1,
            tolerance=float(tolerance),
            commands_recorded=len(self.recording.commands),
            commands_replayed=self._commands.replayed,
            commands_compared=len(diffs),
            commands_unmatched=len(self._commands.unmatched_ticks),
            commands_missing=len(self._commands.missing_ticks(self._tick)),
            max_abs_dq=np.max(np.stack(diffs), axis=0) if diffs else np.zeros(joints),
            drill_compared=self._drills.replayed - len(self._drills.unmatched_ticks),
            drill_mismatches=len(self._drill_diffs),
            first_divergent_tick=None if first is None else first[0],
            first_divergent_time_s=None if first is None else float(self.recording.ticks.now_s[first[0]]),
            first_divergence="" if first is None else first[1],
            decisions=self._decision_comparison(),
            images_downscaled=self.recording.images_downscaled)
