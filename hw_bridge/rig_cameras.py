"""The MSCS stereo cameras of the real rig, as the ``sas`` backend reads them.

``[backends.sas.cameras] kind`` chooses (``scenes.hw_config.RigCamerasSpec``):

- ``"opencv"``: ``OpenCVStereoCamera``, two ``cv2.VideoCapture`` sources (``left_device`` /
  ``right_device``: a device index such as ``"0"``, or a path or URL). A reader thread grabs
  both (``grab()`` on both, then ``retrieve()``: OpenCV's way of pairing two cameras) and keeps
  the newest pair, stamped with the backend's clock right after the grab, indices counting
  from 0. A video *file* is played at its own frame rate (``CAP_PROP_FPS``), so it stands in
  for a camera. When a source stops delivering (device error, end of file) ``grab`` raises
  ``ConnectionLost`` naming it.
- ``"image_topics"``: ``ImageTopicStereoCamera``, two sensor_msgs/Image topics read in the
  backend's ROS node (bgr8, rgb8 and mono8; other encodings are refused by name). Left and
  right are paired by the nearest header stamps (at most ``max_skew_s`` apart); the pair's
  stamp is the left header stamp. QoS: reliable, volatile, depth 1: with best effort, FastDDS
  loses most of full 960 x 540 BGR frames (measured here: about 1 frame in 10 arrived), so a
  camera driver that publishes best effort does not match (rclpy logs the incompatible QoS).
- ``"none"``: no cameras (the backend's ``has_cameras`` is False).

``grab()`` returns the newest pair, or None before the first one; the same pair (same index)
until a newer one arrives.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from hw_bridge.errors import ConnectionLost, HardwareError
from hw_bridge.interface import StereoFrame

log = logging.getLogger("micromill.hw_bridge.rig_cameras")

#: image encodings ImageTopicStereoCamera converts to BGR, with their channel counts
IMAGE_ENCODINGS = {"bgr8": 3, "rgb8": 3, "mono8": 1}


class StereoSource(ABC):
    """A stereo camera pair: the newest left/right pair on demand."""

    @abstractmethod
    def grab(self) -> StereoFrame | None:
        """The newest pair (uint8 BGR images), or None before the first one arrived."""

    @abstractmethod
    def close(self) -> None:
        """Release the cameras (idempotent)."""


def _as_bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 or img.shape[2] == 1 else img


class OpenCVStereoCamera(StereoSource):
    """Two OpenCV capture sources read by a background thread (see the module docstring)."""

    def __init__(self, left_device: str, right_device: str, clock: Callable[[], float]):
        """``*_device``: a device index ("0") or a path/URL; ``clock``: the backend clock (s) for the stamps."""
        self._names = (f"backends.sas.cameras.left_device={left_device!r}",
                       f"backends.sas.cameras.right_device={right_device!r}")
        self._caps: list[cv2.VideoCapture] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for device, name in zip((left_device, right_device), self._names):
            cap = cv2.VideoCapture(int(device)) if device.isdigit() else cv2.VideoCapture(device)
            if not cap.isOpened():
                self.close()
                raise HardwareError(f"{name}: OpenCV cannot open it (a device index such as \"0\", or a video "
                                    f"path or URL)")
            self._caps.append(cap)
        files = [Path(d).is_file() for d in (left_device, right_device)]
        fps = self._caps[0].get(cv2.CAP_PROP_FPS)
        #: a file is played at its frame rate (s per frame); 0: live sources pace themselves
        self._pace_s = 1.0 / fps if all(files) and fps > 0 else 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: StereoFrame | None = None
        self._ended: str | None = None
        self._thread = threading.Thread(target=self._run, name="opencv-stereo", daemon=True)
        self._thread.start()

    def _read_pair(self) -> tuple[float, np.ndarray, np.ndarray] | str:
        """One pair (stamp, left, right), or why none could be read."""
        for cap, name in zip(self._caps, self._names):
            if not cap.grab():
                return f"{name} delivered no frame (device error or end of the video)"
        stamp = self._clock()
        images = []
        for cap, name in zip(self._caps, self._names):
            ok, img = cap.retrieve()
            if not ok or img is None:
                return f"{name}: the grabbed frame could not be decoded"
            images.append(_as_bgr(img))
        return stamp, images[0], images[1]

    def _run(self) -> None:
        next_t = time.monotonic()
        index = 0
        while not self._stop.is_set():
            if self._pace_s:
                if self._stop.wait(max(next_t - time.monotonic(), 0.0)):
                    return
                next_t += self._pace_s
            pair = self._read_pair()
            if isinstance(pair, str):
                log.warning("OpenCV stereo camera stopped: %s", pair)
                with self._lock:
                    self._ended = pair
                return
            with self._lock:
                self._latest = StereoFrame(pair[0], index, pair[1], pair[2])
            index += 1

    def grab(self) -> StereoFrame | None:
        with self._lock:
            if self._ended is not None:
                raise ConnectionLost(f"the stereo camera stopped delivering: {self._ended}")
            return self._latest

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():     # stuck in a capture call: releasing under it could crash
                log.warning("stereo camera reader did not stop within 2 s; the devices are left to the process exit")
                return
        for cap in self._caps:
            cap.release()
        self._caps = []


def image_to_bgr(msg, topic: str) -> np.ndarray:
    """A sensor_msgs/Image (bgr8, rgb8 or mono8) as a (height, width, 3) uint8 BGR array."""
    channels = IMAGE_ENCODINGS.get(msg.encoding)
    if channels is None:
        raise HardwareError(f"{topic}: image encoding {msg.encoding!r} is not supported; allowed: "
                            f"{', '.join(IMAGE_ENCODINGS)}")
    h, w, step = msg.height, msg.width, msg.step
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if step < w * channels or data.size < h * step:
        raise HardwareError(f"{topic}: a {w} x {h} {msg.encoding} image with step {step} needs {h * step} bytes "
                            f"(step >= {w * channels}); the message has {data.size}")
    img = data[:h * step].reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if msg.encoding == "rgb8":
        return np.ascontiguousarray(img[..., ::-1])
    if msg.encoding == "mono8":
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2BGR)
    return img.copy()


class ImageTopicStereoCamera(StereoSource):
    """Two sensor_msgs/Image topics, paired by header stamp (see the module docstring)."""

    def __init__(self, node, left_topic: str, right_topic: str, max_skew_s: float = 0.005, history: int = 4):
        """``node``: an rclpy node whose executor is spinning; ``max_skew_s`` (s): the most a left and a
        right header stamp may differ to count as one pair; ``history``: images kept per side."""
        from sensor_msgs.msg import Image

        from hw_bridge.ros import sas_qos, stamp_to_s

        self._stamp_to_s = stamp_to_s

        self._node = node
        self._topics = (left_topic, right_topic)
        self._max_skew_s = max_skew_s
        self._lock = threading.Lock()
        self._buffers: tuple[deque, deque] = (deque(maxlen=history), deque(maxlen=history))
        self._last: StereoFrame | None = None
        self._subs = [node.create_subscription(Image, topic, lambda m, b=buf: self._on_image(b, m), sas_qos())
                      for topic, buf in zip(self._topics, self._buffers)]

    def _on_image(self, buffer: deque, msg) -> None:
        t = self._stamp_to_s(msg.header.stamp)
        with self._lock:
            buffer.append((t, msg))

    def _newest_pair(self):
        """(stamp, left msg, right msg) of the newest left image with a right one within max_skew_s, or None."""
        with self._lock:
            lefts, rights = list(self._buffers[0]), list(self._buffers[1])
        if not rights:
            return None
        for t_l, m_l in reversed(lefts):
            t_r, m_r = min(rights, key=lambda r: abs(r[0] - t_l))
            if abs(t_r - t_l) <= self._max_skew_s:
                return t_l, m_l, m_r
        return None

    def grab(self) -> StereoFrame | None:
        pair = self._newest_pair()
        if pair is None or (self._last is not None and pair[0] <= self._last.stamp_s):
            return self._last
        t, m_l, m_r = pair
        index = 0 if self._last is None else self._last.index + 1
        self._last = StereoFrame(t, index, image_to_bgr(m_l, self._topics[0]), image_to_bgr(m_r, self._topics[1]))
        return self._last

    def close(self) -> None:
        """Destroy the subscriptions: only once the node's executor stopped spinning in another thread
        (``RosSession.stop_spinning``), which rclpy needs for destroying entities."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []
