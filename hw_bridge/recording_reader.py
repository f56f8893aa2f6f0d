"""Read a recording written by ``hw_bridge.recording.McapRecorder`` back (file format: see that
module's docstring): ``load_recording`` gives a ``Recording`` (joint states at every tick,
commands, frames still PNG-encoded, drill commands, events and decisions) and
``scene_from_recording`` rebuilds the scene the run used (for ``hw_bridge.backends.replay``).
"""
from __future__ import annotations

import base64
import json
import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader
from mcap.stream_reader import CRCValidationError
from mcap.writer import MCAP0_MAGIC as MCAP_MAGIC
from zstandard import ZstdError

from hw_bridge.interface import JointState, StereoFrame
from hw_bridge.recording import DECISION_PREFIX, METADATA_NAME, RecordingError, RunMetadata
from scenes.schema import ConfigError
from scenes.spec import SceneSpec, scene_from_dict


def _array(values: list) -> np.ndarray:
    """A JSON list back to float64 (None -> NaN)."""
    return np.array(values, dtype=float)


@dataclass(frozen=True)
class Ticks:
    """The joint state at every period: index k = the k-th ``/joint_states`` message."""

    now_s: np.ndarray          # (n,) s, backend clock
    stamp_s: np.ndarray        # (n,) s, the state's own stamp
    position: np.ndarray       # (n, joints) rad | m
    velocity: np.ndarray       # (n, joints) rad/s | m/s

    def __len__(self) -> int:
        return self.now_s.size

    def state(self, k: int) -> JointState:
        """Tick ``k`` as the interface's JointState (copies)."""
        return JointState(float(self.stamp_s[k]), self.position[k].copy(), self.velocity[k].copy())


@dataclass(frozen=True)
class Commands:
    """Accepted joint commands, in order."""

    tick: np.ndarray           # (m,) int
    now_s: np.ndarray          # (m,) s
    q: np.ndarray              # (m, joints) rad | m
    sent: np.ndarray           # (m,) bool (False: dry run)

    def __len__(self) -> int:
        return self.tick.size


@dataclass(frozen=True)
class DrillCommand:
    tick: int
    now_s: float
    on: bool
    speed_rpm: float
    sent: bool


@dataclass(frozen=True)
class Event:
    tick: int
    now_s: float
    kind: str                  # activated | deactivated | safety_stop
    message: str


@dataclass(frozen=True)
class Decision:
    tick: int
    now_s: float
    topic: str                 # e.g. "milling/stop"
    payload: dict[str, Any]    # JSON data (non-finite numbers are None)


@dataclass(frozen=True)
class RecordedFrame:
    """A grabbed stereo pair as stored (PNG bytes); ``decode()`` gives the StereoFrame."""

    tick: int
    now_s: float               # s, when it was grabbed
    index: int
    stamp_s: float             # s, exposure
    width: int                 # px, of the original images
    height: int
    scale: float               # stored size / original size
    left_png: bytes = field(repr=False)
    right_png: bytes = field(repr=False)

    def decode(self) -> StereoFrame:
        """The images (uint8 BGR), upsampled back to the original size when stored downscaled."""
        images = []
        for side, png in (("left", self.left_png), ("right", self.right_png)):
            image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise RecordingError(f"frame {self.index}: the {side} image is not a readable PNG")
            if image.shape[:2] != (self.height, self.width):
                image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            images.append(image)
        return StereoFrame(self.stamp_s, self.index, images[0], images[1])


@dataclass(frozen=True)
class Recording:
    """A recorded run, as ``load_recording`` reads it (all in recording order; see the module
    docstring for the fields; images stay PNG until ``RecordedFrame.decode()``)."""

    path: Path
    metadata: RunMetadata
    ticks: Ticks
    commands: Commands
    frames: list[RecordedFrame]
    drill: list[DrillCommand]
    events: list[Event]
    decisions: list[Decision]

    @property
    def images_downscaled(self) -> bool:
        """True when the images were stored below their original size (replay upsamples them)."""
        return any(f.scale < 1.0 for f in self.frames)


def _read_metadata(path: Path) -> RunMetadata:
    with open(path, "rb") as f:
        record = next((m for m in NonSeekingReader(f).iter_metadata() if m.name == METADATA_NAME), None)
    if record is None:
        raise RecordingError(f"{path}: no {METADATA_NAME!r} metadata record: not a micromill recording")
    return RunMetadata.from_record(dict(record.metadata), str(path))


def _read_messages(path: Path, metadata: RunMetadata) -> Recording:
    ticks: list[dict] = []
    commands: list[dict] = []
    drill: list[DrillCommand] = []
    events: list[Event] = []
    decisions: list[Decision] = []
    infos: dict[int, dict] = {}
    images: dict[str, dict[int, bytes]] = {"left": {}, "right": {}}
    with open(path, "rb") as f:
        for _, channel, message in NonSeekingReader(f, validate_crcs=True).iter_messages(log_time_order=False):
            topic = channel.topic
            m = json.loads(message.data)
            if topic == "/joint_states":
                ticks.append(m)
            elif topic == "/commands":
                commands.append(m)
            elif topic == "/drill":
                drill.append(DrillCommand(m["tick"], m["now_s"], m["on"], m["speed_rpm"], m["sent"]))
            elif topic == "/events":
                events.append(Event(m["tick"], m["now_s"], m["kind"], m["message"]))
            elif topic.startswith(DECISION_PREFIX):
                decisions.append(Decision(m["tick"], m["now_s"], topic.removeprefix(DECISION_PREFIX), m["payload"]))
            elif topic == "/mscs/frames":
                infos[message.sequence] = m
            elif topic in ("/mscs/left/compressed", "/mscs/right/compressed"):
                images[topic.split("/")[2]][message.sequence] = base64.b64decode(m["data"], validate=True)

    frames = []
    for seq, m in sorted(infos.items()):
        if seq not in images["left"] or seq not in images["right"]:
            raise RecordingError(f"{path}: stereo frame {m['index']} (sequence {seq}) lacks its "
                                 f"{'left' if seq not in images['left'] else 'right'} image")
        frames.append(RecordedFrame(m["tick"], m["now_s"], m["index"], m["stamp_s"], m["width"], m["height"],
                                    m["scale"], images["left"][seq], images["right"][seq]))
    joints = len(ticks[0]["position"]) if ticks else 0
    return Recording(
        path, metadata,
        Ticks(_array([m["now_s"] for m in ticks]), _array([m["stamp_s"] for m in ticks]),
              _array([m["position"] for m in ticks]).reshape(len(ticks), joints),
              _array([m["velocity"] for m in ticks]).reshape(len(ticks), joints)),
        Commands(np.array([m["tick"] for m in commands], dtype=int), _array([m["now_s"] for m in commands]),
                 _array([m["q"] for m in commands]).reshape(len(commands), joints),
                 np.array([m["sent"] for m in commands], dtype=bool)),
        frames, drill, events, decisions)


def load_recording(path: Path | str) -> Recording:
    """Read a recording written by ``McapRecorder``. Images stay PNG until ``RecordedFrame.decode()``.

    Raises RecordingError naming the file and the problem (missing, not MCAP, truncated or
    corrupt, not a micromill recording, a message that is not what McapRecorder writes).
    """
    path = Path(path)
    return _checked_read(path, lambda: _read_messages(path, _read_metadata(path)))


def load_metadata(path: Path | str) -> RunMetadata:
    """Only the run metadata of a recording (what was run, when, by which version), without reading
    its messages: fast for a large file. RecordingError as for ``load_recording``; the messages are
    not checked."""
    path = Path(path)
    return _checked_read(path, lambda: _read_metadata(path))


def _checked_read(path: Path, read):
    """``read()`` of the recording at ``path``, its failures as RecordingError naming the file."""
    if not path.is_file():
        raise RecordingError(f"{path}: recording not found" + (" (it is a folder)" if path.is_dir() else ""))
    with open(path, "rb") as f:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise RecordingError(f"{path}: not an MCAP file (it does not start with the MCAP magic bytes)")
    try:
        return read()
    except (McapError, CRCValidationError, struct.error, ZstdError) as exc:   # a record cut short, bad CRC/chunk
        raise RecordingError(f"{path}: truncated or corrupt MCAP file ({type(exc).__name__}: {exc}); a run that "
                             f"did not close its hardware (hw.close()) leaves it truncated") from None
    except (ValueError, KeyError, TypeError) as exc:       # JSON, base64, a missing field, ragged arrays
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"{path}: a message is not what McapRecorder writes "
                             f"({type(exc).__name__}: {exc})") from None


def scene_from_recording(rec: Recording, replay: bool = False) -> SceneSpec:
    """The scene of the recorded run, from its stored TOML text and overrides (the original file
    is not needed). ``replay=True``: also point ``backends.replay.recording`` at ``rec.path``, so the
    scene is ready for ``make_hardware("replay", scene)``. ConfigError if it no longer validates."""
    source = f"{rec.metadata.scene_source} (as recorded in {rec.path})"
    try:
        raw = tomllib.loads(rec.metadata.scene_toml)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    overrides = dict(rec.metadata.scene_overrides)
    if replay:
        raw.setdefault("backends", {}).setdefault("replay", {})
        overrides["backends.replay.recording"] = str(rec.path)
    return scene_from_dict(raw, source, overrides)
