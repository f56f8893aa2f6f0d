"""Record a run as one MCAP file (readable in Foxglove): the writer and the file format.

``McapRecorder`` implements ``hw_bridge.interface.Recorder``: give it to ``make_hardware(...,
recorder=...)`` and everything that crosses the hardware interface is written to ONE MCAP file,
closed by ``hw.close()``. ``hw_bridge.recording_reader.load_recording`` reads such a file back
(``Recording``), and ``scene_from_recording`` rebuilds the scene the run used;
``hw_bridge.backends.replay`` feeds a recording back through the controllers.

File layout (JSON message encoding, JSON schemas, zstd chunks). Every message's MCAP log time
and publish time are the backend clock ``now_s`` in ns (simulated time on the twin), and every
message carries ``tick``: the index of the latest ``/joint_states`` message (0 = the state read
at configure, k = after the k-th advance()).

=========================  =============================  ==================================================
channel                    schema                         content
=========================  =============================  ==================================================
``/joint_states``          ``micromill.JointStates``      tick, now_s, stamp_s (s), position (rad | m),
                                                          velocity (rad/s | m/s), once per period
``/commands``              ``micromill.JointCommand``     tick, now_s, q (rad | m), sent (False: dry run)
``/drill``                 ``micromill.DrillCommand``     tick, now_s, on, speed_rpm, sent
``/events``                ``micromill.Event``            tick, now_s, kind (activated | deactivated |
                                                          safety_stop), message
``/decisions/<topic>``     ``micromill.Decision``         tick, now_s, payload (what ``publish_decision`` got)
``/mscs/frames``           ``micromill.StereoFrameInfo``  tick, now_s, index, stamp_s, width/height (px, of the
                                                          original images), scale (of the stored images)
``/mscs/left/compressed``  ``foxglove.CompressedImage``   timestamp = the frame's exposure stamp, PNG (base64)
``/mscs/right/compressed`` ``foxglove.CompressedImage``   the same for the right camera
=========================  =============================  ==================================================

The three frame channels use the same MCAP ``sequence`` number for one stereo pair. Images are
PNG (lossless): at ``image_scale = 1`` a replay's perception sees exactly the recorded pixels;
``image_scale < 1`` stores downscaled images (smaller files, for viewing) that replay upsamples
back to the original size, and flags (``Recording.images_downscaled``). Non-finite numbers (a
faulty sensor's NaN) are written as JSON ``null`` and read back as NaN. The run's description
(``RunMetadata``) is the MCAP metadata record named ``micromill``.
"""
from __future__ import annotations

import base64
import importlib.metadata
import json
import math
import queue
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from mcap.writer import CompressionType, Writer

from hw_bridge.interface import JointState, StereoFrame
from scenes.spec import SceneSpec

#: name of the MCAP metadata record that holds ``RunMetadata``
METADATA_NAME = "micromill"
#: written in the metadata record; ``recording_reader.load_recording`` refuses other formats
FORMAT = "micromill-recording/1"
#: a decision topic: names of letters, digits and "_", separated by "/" (no leading "/")
_TOPIC = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$")
#: PNG encoding: camera noise defeats deflate's string matching, so the fastest level with the
#: run-length strategy is both faster and ~13 % smaller than OpenCV's default (measured on twin images)
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


class RecordingError(ValueError):
    """A recording cannot be written or read; the message names the file and what is wrong."""


def micromill_version() -> str:
    """The installed micromill version ("unknown" when run from a source tree not installed)."""
    try:
        return importlib.metadata.version("micromill")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def to_json_value(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON data: numpy arrays and scalars become lists and numbers, tuples lists,
    non-finite floats None (JSON null). Raises TypeError naming ``where`` for anything else
    (dict keys must be strings)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} must be a string")
            out[k] = to_json_value(v, f"{where}.{k}")
        return out
    raise TypeError(f"{where}={value!r} ({type(value).__name__}) is not JSON data "
                    f"(use numbers, strings, bools, None, lists, dicts or numpy arrays)")


def _floats(a: np.ndarray) -> list[float | None]:
    """A float array as a JSON list (non-finite -> None); Python floats round-trip exactly."""
    a = np.asarray(a, dtype=float)
    values = a.tolist()
    if not np.all(np.isfinite(a)):
        values = [v if math.isfinite(v) else None for v in values]
    return values


def _float(x: float) -> float | None:
    """A float for JSON (non-finite -> None)."""
    return float(x) if math.isfinite(x) else None


# ---- run description -------------------------------------------------------------------------
@dataclass(frozen=True)
class RunMetadata:
    """What was run, stored once per recording (the MCAP metadata record ``micromill``).

    ``scene_toml`` is the scene file's full TEXT and ``scene_overrides`` the dotted-key overrides
    applied to it, so ``scene_from_recording`` rebuilds the scene without the original file.
    ``created_utc``: ISO 8601 wall time.
    """

    program: str                        # e.g. "micromill demo"
    arguments: dict[str, Any]           # the program's arguments (JSON data)
    backend: str                        # registry name, e.g. "twin"
    seed: int
    scene_source: str                   # path of the scene file when recorded
    scene_toml: str                     # its text
    scene_overrides: dict[str, Any]     # e.g. {"skull.seed": 3}
    micromill_version: str = field(default_factory=micromill_version)
    created_utc: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        for name in ("program", "backend", "scene_source", "scene_toml", "micromill_version", "created_utc"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"RunMetadata.{name}={getattr(self, name)!r} must be a string")
        if not self.program:
            raise ValueError("RunMetadata.program must not be empty")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise TypeError(f"RunMetadata.seed={self.seed!r} must be an integer")
        for name in ("arguments", "scene_overrides"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise TypeError(f"RunMetadata.{name}={value!r} must be a dict")
            to_json_value(value, f"RunMetadata.{name}")

    @classmethod
    def for_run(cls, program: str, arguments: dict[str, Any], backend: str, seed: int, scene: SceneSpec,
                overrides: dict[str, Any] | None = None) -> RunMetadata:
        """The metadata of a run of ``scene`` (loaded from the file ``scene.source`` with ``overrides``)."""
        path = Path(scene.source)
        if not path.is_file():
            raise ValueError(f"scene source {scene.source!r} is not a file: a recording stores the scene "
                             f"file's text (load the scene with scenes.spec.load_scene)")
        return cls(program, dict(arguments), backend, int(seed), str(path), path.read_text(), dict(overrides or {}))

    def to_record(self) -> dict[str, str]:
        """The MCAP metadata record (string values; dicts as JSON)."""
        return {"format": FORMAT, "program": self.program,
                "arguments": json.dumps(to_json_value(self.arguments), allow_nan=False),
                "backend": self.backend, "seed": str(int(self.seed)), "scene_source": self.scene_source,
                "scene_toml": self.scene_toml,
                "scene_overrides": json.dumps(to_json_value(self.scene_overrides), allow_nan=False),
                "micromill_version": self.micromill_version, "created_utc": self.created_utc}

    @classmethod
    def from_record(cls, record: dict[str, str], source: str) -> RunMetadata:
        """Parse ``to_record``'s output; RecordingError naming ``source`` and the field if it is bad."""
        if record.get("format") != FORMAT:
            raise RecordingError(f"{source}: metadata record {METADATA_NAME!r} has format "
                                 f"{record.get('format')!r}; this micromill reads {FORMAT!r}")
        missing = [k for k in ("program", "arguments", "backend", "seed", "scene_source", "scene_toml",
                               "scene_overrides", "micromill_version", "created_utc") if k not in record]
        if missing:
            raise RecordingError(f"{source}: metadata record {METADATA_NAME!r} lacks {', '.join(missing)}")
        try:
            arguments = json.loads(record["arguments"])
            overrides = json.loads(record["scene_overrides"])
            seed = int(record["seed"])
            return cls(record["program"], arguments, record["backend"], seed, record["scene_source"],
                       record["scene_toml"], overrides, record["micromill_version"], record["created_utc"])
        except (ValueError, TypeError) as exc:      # JSONDecodeError, int(), __post_init__
            raise RecordingError(f"{source}: metadata record {METADATA_NAME!r} is invalid: {exc}") from None


# ---- schemas ---------------------------------------------------------------------------------
_NUMBERS = {"type": "array", "items": {"type": ["number", "null"]}}
_HEAD = {"tick": {"type": "integer", "description": "index of the latest /joint_states message"},
         "now_s": {"type": "number", "description": "backend clock (s)"}}
_TIME = {"type": "object", "title": "time",
         "properties": {"sec": {"type": "integer", "minimum": 0},
                        "nsec": {"type": "integer", "minimum": 0, "maximum": 999_999_999}}}


def _schema(title: str, description: str, properties: dict) -> dict:
    return {"title": title, "description": description, "type": "object", "properties": properties}


SCHEMAS: dict[str, dict] = {s["title"]: s for s in [
    _schema("micromill.JointStates", "Joint state read after configure and after every advance (SI units)",
            {**_HEAD, "stamp_s": {"type": ["number", "null"]}, "position": _NUMBERS, "velocity": _NUMBERS}),
    _schema("micromill.JointCommand", "An accepted joint position target (rad | m)",
            {**_HEAD, "q": _NUMBERS, "sent": {"type": "boolean", "description": "false: dry run"}}),
    _schema("micromill.DrillCommand", "A drill command",
            {**_HEAD, "on": {"type": "boolean"}, "speed_rpm": {"type": "number"}, "sent": {"type": "boolean"}}),
    _schema("micromill.Event", "A lifecycle or safety event",
            {**_HEAD, "kind": {"type": "string"}, "message": {"type": "string"}}),
    _schema("micromill.Decision", "What a controller decided (hw.publish_decision)",
            {**_HEAD, "payload": {"type": "object"}}),
    _schema("micromill.StereoFrameInfo", "A grabbed stereo pair; its images have the same sequence number",
            {**_HEAD, "index": {"type": "integer"}, "stamp_s": {"type": "number"},
             "width": {"type": "integer", "description": "original width (px)"},
             "height": {"type": "integer", "description": "original height (px)"},
             "scale": {"type": "number", "description": "stored size / original size"}}),
    # Foxglove's well-known schema (https://docs.foxglove.dev/docs/visualization/message-schemas/compressed-image)
    _schema("foxglove.CompressedImage", "A compressed image",
            {"timestamp": _TIME, "frame_id": {"type": "string"},
             "data": {"type": "string", "contentEncoding": "base64"}, "format": {"type": "string"}}),
]}

#: fixed channels: topic -> schema title (decision channels are added per topic)
CHANNELS = {"/joint_states": "micromill.JointStates", "/commands": "micromill.JointCommand",
            "/drill": "micromill.DrillCommand", "/events": "micromill.Event",
            "/mscs/frames": "micromill.StereoFrameInfo", "/mscs/left/compressed": "foxglove.CompressedImage",
            "/mscs/right/compressed": "foxglove.CompressedImage"}
DECISION_PREFIX = "/decisions/"


def _encode_png(image: np.ndarray, scale: float, what: str) -> bytes:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise RecordingError(f"{what}: expected a uint8 (height, width, 3) image, got {image.dtype} {image.shape}")
    if scale < 1.0:
        h, w = image.shape[:2]
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", image, _PNG_PARAMS)
    if not ok:
        raise RecordingError(f"{what}: PNG encoding failed")
    return png.tobytes()


# ---- writer ----------------------------------------------------------------------------------
class McapRecorder:
    """Writes one run to ``path`` (an MCAP file; its folder is created). See the module docstring
    for the channels.

    ``image_scale`` in (0, 1]: 1 stores the grabbed images losslessly (a replay's perception sees the
    same pixels); below 1 they are downscaled (smaller files, for viewing). The file is complete
    once ``close()`` ran (``Hardware.close()`` calls it).
    """

    def __init__(self, path: Path | str, metadata: RunMetadata, image_scale: float = 1.0):
        if not isinstance(metadata, RunMetadata):
            raise TypeError(f"metadata must be a RunMetadata, got {type(metadata).__name__}")
        if (isinstance(image_scale, bool) or not isinstance(image_scale, (int, float))
                or not 0.0 < image_scale <= 1.0):
            raise ValueError(f"image_scale={image_scale!r} must be a number in (0, 1] (1 = lossless images)")
        self.path = Path(path)
        if self.path.is_dir():
            raise RecordingError(f"{self.path}: is a folder; give the path of the .mcap file to write")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot create the recording: {exc}") from None
        self.metadata = metadata
        self.image_scale = float(image_scale)
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="", library=f"micromill {metadata.micromill_version}")
        self._schema_ids = {title: self._writer.register_schema(title, "jsonschema", json.dumps(s).encode())
                            for title, s in SCHEMAS.items()}
        self._channels: dict[str, int] = {}
        self._sequence: dict[str, int] = {}
        for topic, title in CHANNELS.items():
            self._channel(topic, title)
        self._writer.add_metadata(METADATA_NAME, metadata.to_record())
        self._tick = -1
        self._closed = False
        # One writer thread: messages are written in call order, images encoded off the control loop.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer_error: Exception | None = None
        self._thread = threading.Thread(target=self._drain, name=f"recorder {self.path.name}", daemon=True)
        self._thread.start()

    def _channel(self, topic: str, title: str) -> int:
        if topic not in self._channels:
            self._channels[topic] = self._writer.register_channel(topic, "json", self._schema_ids[title])
            self._sequence[topic] = 0
        return self._channels[topic]

    def _log(self, topic: str, now_s: float, message: dict, title: str | None = None) -> None:
        """Queue one message for the writer thread (checked here, written there, in call order)."""
        if self._closed:
            raise RecordingError(f"{self.path}: the recorder is closed")
        self._raise_writer_error()
        t_ns = round(now_s * 1e9)
        if t_ns < 0:
            raise RecordingError(f"{self.path}: backend clock now_s={now_s!r} is negative; MCAP log times are "
                                 f"unsigned ns")
        self._queue.put(lambda: self._write(topic, t_ns, message, title))

    def _write(self, topic: str, t_ns: int, message: dict, title: str | None) -> None:
        channel = self._channel(topic, title or CHANNELS[topic])
        data = json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
        self._writer.add_message(channel, log_time=t_ns, data=data, publish_time=t_ns,
                                 sequence=self._sequence[topic])
        self._sequence[topic] += 1

    def _drain(self) -> None:
        """The writer thread: runs queued jobs in order until the sentinel None."""
        while (job := self._queue.get()) is not None:
            if self._writer_error is None:
                try:
                    job()
                except Exception as exc:  # noqa: BLE001 - reported to the recording thread on its next call
                    self._writer_error = exc

    def _raise_writer_error(self) -> None:
        if self._writer_error is not None:
            raise RecordingError(f"{self.path}: writing the recording failed: {self._writer_error}")

    def _head(self, now_s: float) -> dict:
        return {"tick": self._tick, "now_s": float(now_s)}

    def on_tick(self, now_s: float, state: JointState) -> None:
        self._tick += 1
        self._log("/joint_states", now_s, {**self._head(now_s), "stamp_s": _float(state.stamp_s),
                                           "position": _floats(state.position), "velocity": _floats(state.velocity)})

    def on_command(self, now_s: float, q: np.ndarray, sent: bool) -> None:
        self._log("/commands", now_s, {**self._head(now_s), "q": _floats(q), "sent": bool(sent)})

    def on_drill(self, now_s: float, on: bool, speed_rpm: float, sent: bool) -> None:
        self._log("/drill", now_s, {**self._head(now_s), "on": bool(on), "speed_rpm": _float(speed_rpm),
                                    "sent": bool(sent)})

    def on_event(self, now_s: float, kind: str, message: str) -> None:
        self._log("/events", now_s, {**self._head(now_s), "kind": str(kind), "message": str(message)})

    def on_decision(self, now_s: float, topic: str, payload: dict[str, Any]) -> None:
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            raise ValueError(f"decision topic {topic!r} must be names of letters, digits and _ separated by / "
                             f"(e.g. 'milling/stop')")
        self._log(DECISION_PREFIX + topic, now_s,
                  {**self._head(now_s), "payload": to_json_value(payload, f"decision {topic!r} payload")},
                  "micromill.Decision")

    def on_frame(self, now_s: float, frame: StereoFrame) -> None:
        """Copies the images and returns; the PNG encoding runs on the writer thread (OpenCV releases
        the GIL), so a control loop does not wait ~80 ms per pair."""
        what = f"{self.path}: frame {frame.index}"
        if frame.left.shape != frame.right.shape:
            raise RecordingError(f"{what}: left {frame.left.shape} and right {frame.right.shape} images differ in size")
        if self._closed:
            raise RecordingError(f"{self.path}: the recorder is closed")
        self._raise_writer_error()
        head, images = self._head(now_s), (frame.left.copy(), frame.right.copy())
        t_ns = round(now_s * 1e9)
        self._queue.put(lambda: self._write_frame(t_ns, head, frame.index, frame.stamp_s, images, what))

    def _write_frame(self, t_ns: int, head: dict, index: int, stamp_s: float, images, what: str) -> None:
        pngs = {side: _encode_png(image, self.image_scale, f"{what} {side} image")
                for side, image in zip(("left", "right"), images)}
        h, w = images[0].shape[:2]
        self._write("/mscs/frames", t_ns, {**head, "index": int(index), "stamp_s": float(stamp_s), "width": w,
                                           "height": h, "scale": self.image_scale}, None)
        sec, nsec = divmod(max(round(stamp_s * 1e9), 0), 1_000_000_000)
        for side, png in pngs.items():
            self._write(f"/mscs/{side}/compressed", t_ns,
                        {"timestamp": {"sec": sec, "nsec": nsec}, "frame_id": f"mscs_{side}", "format": "png",
                         "data": base64.b64encode(png).decode("ascii")}, None)

    def close(self) -> None:
        """Write what is queued, then finish the file (summary, index, footer). Safe to call more
        than once; raises RecordingError if a queued message could not be written."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._writer.finish()
        finally:
            self._file.close()
        self._raise_writer_error()
