"""The ``coppeliasim`` backend: a running CoppeliaSim (4.6 or later), stepped in lockstep over its
ZeroMQ remote API with the official client (``coppeliasim-zmqremoteapi-client``).

Start CoppeliaSim headless with a scene whose arm has joints at ``[backends.coppeliasim]
joint_paths`` (the arm's reference frame {R} at CoppeliaSim's world origin):

    coppeliaSim.sh -h -GzmqRemoteApi.rpcPort=23000 scene.ttt

What crosses the interface, call by call (one remote call = one ZMQ round trip):
- configure: ``sim.setStepping(True)`` (the simulation advances only on ``sim.step()``), the
  time step set to the scene's control period (``sim.setFloatParam(
  sim.floatparam_simulation_time_step, dt)``, checked with ``sim.getSimulationTimeStep()``),
  the skull mesh and MSCS vision sensors added when ``populate`` is set
  (``scenes.coppeliasim_assembly``), joint and sensor handles from ``sim.getObject(path)``,
  then ``sim.startSimulation()``. A simulation left running (e.g. by a crashed run) is stopped
  first. close: ``sim.stopSimulation()``, ``sim.setStepping(False)``, errors tolerated.
- read: ``sim.getJointPosition`` and ``sim.getJointVelocity`` per joint (CoppeliaSim has no
  batched joint read) and ``sim.getSimulationTime()`` as the stamp (17 round trips);
  write: ``sim.setJointTargetPosition`` per joint (the joints must be position-controlled in
  the .ttt); advance: ``sim.step()``.
- ``now()`` is the lockstep clock: the simulation time at configure plus one control period
  per ``sim.step()`` this backend requested. It costs no call, and a simulator that stops
  advancing (paused, stopped or reset behind our back) shows as stale joint states.
- drill: CoppeliaSim has no drill. The commanded speed is published as the float signal
  ``micromill_drill_rpm`` (0 = off; ``sim.setFloatSignal``, deprecated in 4.8 in favour of
  signal properties but still served) and kept locally for ``drill_state()``; the state is
  what was last delivered.

Approximations, stated plainly:
- CoppeliaSim images carry no stamps. Frames are taken at the scene's camera rate
  (``sensors.cameras.rate_hz``) on the lockstep clock: ``sim.handleVisionSensor`` renders both
  sensors now, ``sim.getVisionSensorImg`` fetches them, the frame is stamped with ``now()``
  and its index counts frames taken; between frames the last one is returned again. No
  exposure delay or sensor noise (the twin models both). Images arrive RGB with the bottom
  row first; they are flipped and turned into BGR uint8 (H, W, 3).
- ``has_cameras`` is False when the sensor paths are "".

Timeouts: the client would block forever on a silent server, so its socket gets receive/send
timeouts of ``connect_timeout_s`` (the scene has no separate setting) for the first contact
and every later call. No answer at configure raises ``HardwareError`` saying how to start
CoppeliaSim; no answer later raises ``ConnectionLost`` (the safety layer stops the run). A ZMQ
REQ socket is unusable after a timeout, so the next call replaces the client's socket with a
fresh one on the same client (same uuid: the server keeps our stepping state) and the
backend carries on once the simulator answers again. An error reply (``{err: ...}``) raises
``HardwareError`` with the server's message.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from hw_bridge.errors import ConnectionLost, HardwareError
from hw_bridge.interface import DrillState, Hardware, JointState, StereoFrame
from scenes.spec import SceneSpec

log = logging.getLogger("micromill.hw_bridge.coppeliasim")

#: the float signal carrying the commanded drill speed (rpm, 0 = off)
DRILL_SIGNAL = "micromill_drill_rpm"
#: how often configure polls while waiting for a running simulation to stop (s)
_STOP_POLL_S = 0.05


def _import_zmq():
    try:
        import zmq
        from coppeliasim_zmqremoteapi_client import RemoteAPIClient
    except ImportError as exc:
        raise HardwareError(f"coppeliasim backend: {exc}; install the CoppeliaSim client with "
                            f"`pip install -e \".[coppeliasim]\"`") from exc
    return zmq, RemoteAPIClient


class _Link:
    """The official client with a timeout on every call and a fresh socket after a timeout."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self._zmq, RemoteAPIClient = _import_zmq()
        self.endpoint = f"tcp://{host}:{port}"
        self.timeout_s = timeout_s
        self.client = RemoteAPIClient(host, port)     # connects lazily: this never blocks
        self._set_timeouts(self.client.socket)
        self._broken = False
        self.sim: Any = None

    def _set_timeouts(self, socket) -> None:
        ms = max(1, int(self.timeout_s * 1000))
        socket.setsockopt(self._zmq.RCVTIMEO, ms)
        socket.setsockopt(self._zmq.SNDTIMEO, ms)
        socket.setsockopt(self._zmq.LINGER, 0)

    def _renew_socket(self) -> None:
        """Replace the REQ socket stuck after a timeout (the client's uuid and ``sim`` object stay)."""
        self.client.socket.close(linger=0)
        socket = self.client.context.socket(self._zmq.REQ)
        self._set_timeouts(socket)
        socket.connect(self.endpoint)
        self.client.socket = socket
        self._broken = False

    @contextmanager
    def remote(self, what: str) -> Iterator[None]:
        """Run remote calls: a timeout or socket error -> ConnectionLost, an error reply -> HardwareError."""
        if self._broken:
            self._renew_socket()
        try:
            yield
        except HardwareError:
            raise
        except self._zmq.ZMQError as exc:         # zmq.Again is the timeout
            self._broken = True
            raise ConnectionLost(f"CoppeliaSim at {self.endpoint} did not answer {what} within "
                                 f"{self.timeout_s:g} s ({exc})") from exc
        except Exception as exc:                   # the client raises plain Exception for {err: ...}
            raise HardwareError(f"CoppeliaSim: {what} failed: {exc}") from exc

    def call(self, name: str, *args):
        """``sim.<name>(*args)``."""
        with self.remote(f"sim.{name}"):
            return getattr(self.sim, name)(*args)

    def connect(self) -> None:
        """``require('sim')``: the first contact; no answer -> HardwareError saying how to start CoppeliaSim."""
        try:
            with self.remote("require('sim')"):
                self.sim = self.client.require("sim")
        except ConnectionLost as exc:
            port = self.endpoint.rsplit(":", 1)[1]
            raise HardwareError(
                f"no CoppeliaSim answered at {self.endpoint} within {self.timeout_s:g} s; start it with "
                f"`coppeliaSim.sh -h -GzmqRemoteApi.rpcPort={port} scene.ttt` (CoppeliaSim >= 4.6, ZMQ remote "
                f"API add-on running) or set [backends.coppeliasim] host/port") from exc.__cause__

    def close(self) -> None:
        self.client.socket.close(linger=0)
        self.client.context.term()


class CoppeliaSimHardware(Hardware):
    name = "coppeliasim"
    moves_real_robot = True
    realtime = False

    def __init__(self, scene: SceneSpec, seed: int = 0, **kwargs):
        super().__init__(scene, seed, **kwargs)
        self.spec = scene.backends.coppeliasim
        self._link: _Link | None = None
        self._joints: list[int] = []
        self._sensors: tuple[int, int] | None = None
        self._t0_s = 0.0                 # simulation time at start (s)
        self._steps = 0                  # sim.step() calls since start
        self._drill = DrillState(False, 0.0)
        self._frame: StereoFrame | None = None
        self._frame_slot = -1            # camera period (index since start) of self._frame

    @property
    def has_cameras(self) -> bool:
        return bool(self.spec.left_sensor_path)

    # ---- lifecycle ---------------------------------------------------------------------
    def _on_configure(self) -> None:
        link = _Link(self.spec.host, self.spec.port, self.spec.connect_timeout_s)
        try:
            link.connect()
        except HardwareError:
            link.close()
            raise
        self._link = link
        sim = link.sim
        self._stop_if_running()
        link.call("setStepping", True)
        dt = self.period_s
        link.call("setFloatParam", sim.floatparam_simulation_time_step, dt)
        got = link.call("getSimulationTimeStep")
        if not math.isclose(got, dt, rel_tol=1e-9):
            raise HardwareError(f"CoppeliaSim kept a time step of {got:g} s after setting {dt:g} s "
                                f"(control.period_s); lockstep needs them equal (check the scene's dt settings)")
        if self.spec.populate:
            from scenes.coppeliasim_assembly import populate

            with link.remote("populating the scene (scenes.coppeliasim_assembly)"):
                populate(sim, self._scene)
        self._joints = [self._handle(p, f"backends.coppeliasim.joint_paths[{i}]")
                        for i, p in enumerate(self.spec.joint_paths)]
        if self.has_cameras:
            self._sensors = (self._handle(self.spec.left_sensor_path, "backends.coppeliasim.left_sensor_path"),
                             self._handle(self.spec.right_sensor_path, "backends.coppeliasim.right_sensor_path"))
        link.call("startSimulation")
        self._t0_s = float(link.call("getSimulationTime"))
        self._steps = 0

    def _stop_if_running(self) -> None:
        """Stop a simulation left running (e.g. by a crashed run), waiting up to the timeout."""
        link = self._link
        if link.call("getSimulationState") == link.sim.simulation_stopped:
            return
        log.warning("%s: the simulation was running; stopping it first", self.name)
        link.call("stopSimulation")
        deadline = time.monotonic() + link.timeout_s
        while link.call("getSimulationState") != link.sim.simulation_stopped:
            if time.monotonic() > deadline:
                raise HardwareError(f"CoppeliaSim's simulation did not stop within {link.timeout_s:g} s")
            time.sleep(_STOP_POLL_S)

    def _handle(self, path: str, field: str) -> int:
        try:
            return int(self._link.call("getObject", path))
        except ConnectionLost:
            raise
        except HardwareError as exc:
            raise HardwareError(f"CoppeliaSim has no object at {path!r} ({field} of {self._scene.source}): "
                                f"{exc}") from exc

    def _on_close(self) -> None:
        if self._link is None:
            return
        try:
            self._link.call("stopSimulation")
            self._link.call("setStepping", False)
        except HardwareError as exc:
            log.warning("%s: could not stop the simulation on close: %s", self.name, exc)
        finally:
            self._link.close()
            self._link = None

    # ---- I/O ---------------------------------------------------------------------------
    def now(self) -> float:
        """The lockstep clock (s): simulation time at start + one control period per sim.step()."""
        return self._t0_s + self._steps * self.period_s

    def _read(self) -> JointState:
        call = self._link.call
        position = np.array([call("getJointPosition", h) for h in self._joints], dtype=float)
        velocity = np.array([call("getJointVelocity", h) for h in self._joints], dtype=float)
        return JointState(float(call("getSimulationTime")), position, velocity)

    def _write(self, q_target: np.ndarray) -> None:
        for h, q in zip(self._joints, q_target):
            self._link.call("setJointTargetPosition", h, float(q))

    def _advance(self) -> None:
        self._link.call("step")
        self._steps += 1

    def _set_drill(self, on: bool, speed_rpm: float) -> None:
        self._link.call("setFloatSignal", DRILL_SIGNAL, speed_rpm)
        self._drill = DrillState(on, speed_rpm)

    def drill_state(self) -> DrillState:
        return self._drill

    def _grab_stereo(self) -> StereoFrame | None:
        slot = math.floor((self.now() - self._t0_s) * self._scene.sensors.cameras.rate_hz + 1e-9)
        if slot > self._frame_slot:
            for h in self._sensors:
                self._link.call("handleVisionSensor", h)
            left, right = (self._image(h) for h in self._sensors)
            index = 0 if self._frame is None else self._frame.index + 1
            self._frame = StereoFrame(self.now(), index, left, right)
            self._frame_slot = slot
        return self._frame

    def _image(self, handle: int) -> np.ndarray:
        """One vision sensor's image as BGR uint8 (H, W, 3), top row first."""
        data, (w, h) = self._link.call("getVisionSensorImg", handle)
        if len(data) != w * h * 3:
            raise HardwareError(f"CoppeliaSim sent {len(data)} bytes for a {w}x{h} RGB image of sensor {handle}")
        return np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)[::-1, :, ::-1])
