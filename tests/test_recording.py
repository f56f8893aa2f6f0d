"""Record a short twin run to MCAP, read it back, and replay it (hw_bridge.recording[_reader], backends.replay)."""
import base64
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from mcap.reader import make_reader
from mcap.writer import Writer

from controllers.control_loop import ControlLoop
from controllers.motion.pose_control import PoseController
from hw_bridge.backends.replay import ReplayFinished
from hw_bridge.errors import HardwareError
from hw_bridge.interface import JointState, StereoFrame
from hw_bridge.recording import CHANNELS, SCHEMAS, McapRecorder, RecordingError, RunMetadata
from hw_bridge.recording_reader import load_recording, scene_from_recording
from hw_bridge.registry import make_hardware
from scenes.spec import DEFAULT_SCENE, load_scene

OFFSET_M = np.array([0.5e-3, 0.0, 0.0])    # target of the move, from the start pose ({R})
HOLD_S = 0.2
DRILL_RPM = 10000.0


def program(hw, gain=8.0):
    """The recorded program: move 0.5 mm, hold 0.2 s grabbing frames, publish a decision, drill on/off."""
    hw.configure()
    hw.activate()
    loop = ControlLoop(hw)
    pc = PoseController(hw.rig, gain=gain)
    T = hw.robot.fk(loop.state.position)
    T[:3, 3] += OFFSET_M
    result = pc.move_to(loop, T, timeout_s=2.0)
    frames = {}
    for _ in range(round(HOLD_S / hw.period_s)):
        f = hw.grab_stereo()
        if f is not None:
            frames[f.index] = f
        loop.command(loop.q_cmd)
    hw.publish_decision("test/move", reached=result.reached, error_m=result.position_error_m)
    hw.set_drill(True, DRILL_RPM)
    loop.hold(0.01)
    hw.set_drill(False, 0.0)
    hw.close()
    return result, list(frames.values())


@dataclass
class MemoryRecorder:
    """What the interface reported, kept in memory (the ground truth for the file)."""

    ticks: list = field(default_factory=list)
    commands: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    drill: list = field(default_factory=list)
    events: list = field(default_factory=list)
    decisions: list = field(default_factory=list)

    def on_tick(self, now_s, state):
        self.ticks.append((now_s, state))

    def on_command(self, now_s, q, sent):
        self.commands.append((now_s, q.copy(), sent))

    def on_frame(self, now_s, frame):
        self.frames.append(StereoFrame(frame.stamp_s, frame.index, frame.left.copy(), frame.right.copy()))

    def on_drill(self, now_s, on, speed_rpm, sent):
        self.drill.append((now_s, on, speed_rpm, sent))

    def on_event(self, now_s, kind, message):
        self.events.append((now_s, kind, message))

    def on_decision(self, now_s, topic, payload):
        self.decisions.append((now_s, topic, payload))

    def close(self):
        pass


class Tee:
    """Several recorders behind one (the Hardware takes one)."""

    def __init__(self, *recorders):
        self.recorders = recorders

    def __getattr__(self, name):
        return lambda *args: [getattr(r, name)(*args) for r in self.recorders]


JSON_TYPES = {"number": (int, float), "integer": int, "boolean": bool, "string": str, "array": list,
              "object": dict, "null": type(None)}


def conforms(value, schema) -> bool:
    """A small JSON-schema check (type, properties, items): what Foxglove relies on to show a message."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if types and not any(isinstance(value, JSON_TYPES[t]) and not (t != "boolean" and isinstance(value, bool))
                         for t in types):
        return False
    if isinstance(value, dict):
        return all(k in value and conforms(value[k], s) for k, s in schema.get("properties", {}).items())
    if isinstance(value, list) and "items" in schema:
        return all(conforms(v, schema["items"]) for v in value)
    return True


@dataclass
class Recorded:
    full: Path            # image_scale 1
    half: Path            # image_scale 0.5
    memory: MemoryRecorder
    metadata: RunMetadata
    result: object        # the program's MoveResult
    frames: list          # the frames the program grabbed


@pytest.fixture(scope="module")
def recorded(scene, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rec")
    meta = RunMetadata.for_run("test_recording", {"offset_mm": 0.5, "hold_s": HOLD_S}, "twin", 0, scene)
    memory = MemoryRecorder()
    tee = Tee(McapRecorder(folder / "run.mcap", meta), McapRecorder(folder / "sub" / "half.mcap", meta, 0.5), memory)
    result, frames = program(make_hardware("twin", scene, 0, recorder=tee))
    return Recorded(folder / "run.mcap", folder / "sub" / "half.mcap", memory, meta, result, frames)


@pytest.fixture(scope="module")
def rec(recorded):
    return load_recording(recorded.full)


def test_the_file_is_a_foxglove_readable_mcap(recorded):
    with open(recorded.full, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        topics = {c.topic: c for c in summary.channels.values()}
        assert set(CHANNELS) | {"/decisions/test/move"} <= set(topics)
        for channel in topics.values():
            schema = summary.schemas[channel.schema_id]
            assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
            assert json.loads(schema.data)["type"] == "object"
        assert summary.schemas[topics["/mscs/left/compressed"].schema_id].name == "foxglove.CompressedImage"
        meta = {m.name: m.metadata for m in reader.iter_metadata()}
        assert meta["micromill"]["program"] == "test_recording"
        log_times, images = [], 0
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            m = json.loads(message.data)
            assert conforms(m, json.loads(schema.data)), f"{channel.topic}: {m} does not match its schema"
            assert message.publish_time == message.log_time
            if channel.topic == "/joint_states":
                assert message.log_time == round(m["now_s"] * 1e9)
                log_times.append(message.log_time)
            if channel.topic.endswith("/compressed"):
                images += 1
                assert m["format"] == "png" and m["frame_id"] in ("mscs_left", "mscs_right")
                assert set(m["timestamp"]) == {"sec", "nsec"} and 0 <= m["timestamp"]["nsec"] < 10**9
                assert base64.b64decode(m["data"]).startswith(b"\x89PNG")
    assert np.all(np.diff(log_times) > 0)
    assert not conforms({"tick": 0, "now_s": 0.0, "q": ["x"], "sent": True}, SCHEMAS["micromill.JointCommand"])
    assert images == 2 * len(recorded.memory.frames) > 0


def test_load_recording_gives_back_the_run(recorded, rec):
    mem = recorded.memory
    assert rec.metadata == recorded.metadata
    assert len(rec.ticks) == len(mem.ticks) and len(rec.commands) == len(mem.commands) > 500
    assert np.array_equal(rec.ticks.now_s, [t for t, _ in mem.ticks])
    assert np.array_equal(rec.ticks.position, [s.position for _, s in mem.ticks])
    assert np.array_equal(rec.ticks.velocity, [s.velocity for _, s in mem.ticks])
    assert np.array_equal(rec.ticks.stamp_s, [s.stamp_s for _, s in mem.ticks])
    assert np.array_equal(rec.commands.q, [q for _, q, _ in mem.commands]) and rec.commands.sent.all()
    assert [(d.on, d.speed_rpm) for d in rec.drill] == [(True, DRILL_RPM), (False, 0.0), (False, 0.0)]
    assert [e.kind for e in rec.events] == ["activated", "deactivated"]
    assert [(d.topic, d.payload) for d in rec.decisions] == [
        ("test/move", {"reached": recorded.result.reached, "error_m": recorded.result.position_error_m})]
    assert len(rec.frames) == len(mem.frames) >= 5 and not rec.images_downscaled
    for stored, original in zip(rec.frames, mem.frames):
        frame = stored.decode()
        assert frame.index == original.index and frame.stamp_s == original.stamp_s
        assert np.array_equal(frame.left, original.left) and np.array_equal(frame.right, original.right)
    scene = scene_from_recording(rec)
    assert scene.control_period_s == 1e-3 and str(recorded.full) in scene.source
    assert scene.backends.replay.recording == ""
    assert scene_from_recording(rec, replay=True).backends.replay.recording == str(recorded.full)


def test_replaying_the_same_program_reproduces_commands_and_decisions(recorded, rec):
    hw = make_hardware("replay", scene_from_recording(rec, replay=True))
    result, frames = program(hw)
    report = hw.report()
    assert result == recorded.result
    assert report.commands_compared == report.commands_recorded == len(rec.commands)
    assert report.commands_unmatched == report.commands_missing == 0 and report.drill_compared == 3
    assert np.max(report.max_abs_dq) == 0.0 and report.first_divergent_tick is None
    assert report.decisions["test/move"].equal and report.decisions["test/move"].replayed == 1
    assert not report.diverged and not report.images_downscaled and "no command diverged" in report.summary()
    assert len(frames) == len(recorded.frames)
    for a, b in zip(frames, recorded.frames):         # perception sees the recorded pixels
        assert a.index == b.index and np.array_equal(a.left, b.left) and np.array_equal(a.right, b.right)


def test_a_modified_program_diverges_from_the_first_command(rec):
    hw = make_hardware("replay", scene_from_recording(rec, replay=True))
    program(hw, gain=4.0)
    report = hw.report()
    assert report.diverged and np.max(report.max_abs_dq) > 1e-7
    assert report.first_divergent_tick == rec.commands.tick[0]
    assert "joint command differs" in report.first_divergence and "first divergence at tick" in report.summary()
    # open loop: the measured states are the recorded ones, so the move ends at the same tick
    assert report.decisions["test/move"].equal


def _replay_recorded_commands(hw, rec, perturb_at=None, dq=None):
    """Write the recorded commands tick by tick (one perturbed); advance until the recording ends."""
    hw.configure()
    hw.activate()
    drill = list(rec.drill)
    advances = 0
    while True:
        for i in np.flatnonzero(rec.commands.tick == hw.tick):
            hw.write(rec.commands.q[i] + (dq if i == perturb_at else 0.0))
        while drill and drill[0].tick == hw.tick and len(drill) > 1:     # the last one: deactivate's
            d = drill.pop(0)
            hw.set_drill(d.on, d.speed_rpm)
        try:
            hw.advance()
        except ReplayFinished as exc:
            assert str(rec.path) in str(exc)
            return advances
        advances += 1


def test_first_divergent_tick_and_the_end_of_the_recording(rec):
    hw = make_hardware("replay", scene_from_recording(rec, replay=True))
    k = len(rec.commands) // 2
    dq = np.zeros(8)
    dq[3] = 1e-6
    advances = _replay_recorded_commands(hw, rec, perturb_at=k, dq=dq)
    assert advances == len(rec.ticks) - 1 and hw.now() == rec.ticks.now_s[-1]
    assert np.array_equal(hw.read().position, rec.ticks.position[-1])
    with pytest.raises(ReplayFinished):
        hw.advance()
    hw.close()
    report = hw.report()
    assert report.first_divergent_tick == rec.commands.tick[k]
    assert report.first_divergent_time_s == rec.ticks.now_s[rec.commands.tick[k]]
    assert report.max_abs_dq[3] == pytest.approx(1e-6, rel=1e-6) and np.all(np.delete(report.max_abs_dq, 3) == 0)
    assert report.commands_compared == len(rec.commands) and report.drill_mismatches == 0
    assert report.decisions["test/move"].replayed == 0 and not report.decisions["test/move"].equal
    assert hw.report(tolerance=1e-5).first_divergent_tick is None    # 1e-6 rad is within that tolerance


def test_downscaled_images_give_a_smaller_file_and_replay_says_so(recorded, rec):
    assert recorded.half.stat().st_size < 0.4 * recorded.full.stat().st_size
    half = load_recording(recorded.half)
    assert half.images_downscaled and len(half.frames) == len(rec.frames)
    frame = half.frames[0].decode()
    assert frame.left.shape == rec.frames[0].decode().left.shape == (540, 960, 3)
    hw = make_hardware("replay", scene_from_recording(half, replay=True))
    program(hw)
    report = hw.report()
    assert report.images_downscaled and "downscaled" in report.summary()
    assert report.first_divergent_tick is None        # the program does not look at the images


def test_bad_recordings_give_clear_errors(scene, recorded, tmp_path):
    with pytest.raises(RecordingError, match="not found"):
        load_recording(tmp_path / "nothing.mcap")
    (tmp_path / "text.mcap").write_text("hello")
    with pytest.raises(RecordingError, match="text.mcap: not an MCAP file"):
        load_recording(tmp_path / "text.mcap")
    with open(tmp_path / "plain.mcap", "wb") as f:
        w = Writer(f)
        w.start()
        w.finish()
    with pytest.raises(RecordingError, match="plain.mcap.*no 'micromill' metadata"):
        load_recording(tmp_path / "plain.mcap")
    data = recorded.full.read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[:len(data) // 2])
    with pytest.raises(RecordingError, match="cut.mcap: truncated or corrupt"):
        load_recording(tmp_path / "cut.mcap")
    with pytest.raises(HardwareError, match="backends.replay.recording"):
        make_hardware("replay", scene)
    missing = load_scene(overrides={"backends.replay.recording": str(tmp_path / "nothing.mcap")})
    with pytest.raises(HardwareError, match="backends.replay.recording.*nothing.mcap.*not found"):
        make_hardware("replay", missing)
    meta = RunMetadata.for_run("t", {}, "twin", 0, scene)
    for bad in (0.0, 1.5, math.nan, "1"):
        with pytest.raises(ValueError, match="image_scale"):
            McapRecorder(tmp_path / "x.mcap", meta, bad)
    with pytest.raises(RecordingError, match="is a folder"):
        McapRecorder(tmp_path, meta)
    with pytest.raises(TypeError, match="arguments.fn.*not JSON data"):
        RunMetadata.for_run("t", {"fn": object()}, "twin", 0, scene)
    r = McapRecorder(tmp_path / "y.mcap", meta)
    with pytest.raises(ValueError, match="decision topic"):
        r.on_decision(0.0, "/bad topic", {})
    r.close()


def _write_states(path, states, overrides=None):
    meta = RunMetadata("prop", {}, "twin", 0, "scene.toml", "", overrides or {})
    r = McapRecorder(path, meta)
    for k, (t, s) in enumerate(states):
        r.on_tick(t, s)
        r.on_command(t, s.position, True)
    r.close()
    return load_recording(path)


finite = st.floats(allow_nan=False, allow_infinity=False)
joints = arrays(np.float64, 8, elements=finite)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), finite, joints, joints), min_size=1, max_size=4))
def test_joint_states_and_commands_round_trip_exactly(samples):
    states = [(t, JointState(stamp, p, v)) for t, stamp, p, v in samples]
    with tempfile.TemporaryDirectory() as d:
        rec = _write_states(Path(d) / "p.mcap", states)
    assert np.array_equal(rec.ticks.now_s, [t for t, _ in states])
    assert np.array_equal(rec.ticks.stamp_s, [s.stamp_s for _, s in states])
    assert np.array_equal(rec.ticks.position, [s.position for _, s in states])
    assert np.array_equal(rec.ticks.velocity, [s.velocity for _, s in states])
    assert np.array_equal(rec.commands.q, rec.ticks.position) and list(rec.commands.tick) == list(range(len(states)))


def test_non_finite_values_come_back_as_nan_and_overrides_are_reapplied(tmp_path):
    bad = np.array([np.nan, np.inf, -np.inf, 1.0, 0, 0, 0, 0])
    rec = _write_states(tmp_path / "n.mcap", [(0.0, JointState(np.nan, bad, bad))])
    assert np.isnan(rec.ticks.stamp_s[0]) and np.array_equal(np.isnan(rec.ticks.position[0]), ~np.isfinite(bad))
    text = DEFAULT_SCENE.read_text()
    meta = RunMetadata("prop", {}, "twin", 0, "default.toml", text, {"skull.seed": 3})
    r = McapRecorder(tmp_path / "o.mcap", meta)
    r.close()
    assert scene_from_recording(load_recording(tmp_path / "o.mcap")).skull.params["seed"] == 3


def test_a_backend_that_cannot_be_built_leaves_a_finished_file(tmp_path):
    """make_hardware closes the recorder when construction fails (here: replay without a recording),
    so the file is a complete MCAP with its summary, not a truncated one."""
    scene = load_scene(DEFAULT_SCENE)
    path = tmp_path / "x.mcap"
    recorder = McapRecorder(path, RunMetadata.for_run("test", {}, "replay", 0, scene))
    with pytest.raises(HardwareError, match="backends.replay.recording"):
        make_hardware("replay", scene, recorder=recorder)
    with open(path, "rb") as f:
        assert make_reader(f).get_summary() is not None
