"""The ``coppeliasim`` backend: a running CoppeliaSim (4.6 or later), stepped in lockstep over its
ZeroMQ remote API with the official client (``coppeliasim-zmqremoteapi-client``).

Start CoppeliaSim headless with a scene whose arm has joints at ``[backends.coppeliasim]
joint_paths`` (the arm's reference frame {R} at CoppeliaSim's world origin):

    coppeliaSim.sh -h -GzmqRemoteApi.rpcPort=23000 scene.ttt

What crosses the interface, call by call (one remote call = one ZMQ round trip):
- configure, armed (the simulation becomes ours): ``sim.getSimulationState()``; a simulation
  already running (another client's, or a crashed run's) is refused with a HardwareError saying
  how to proceed, or stopped (``sim.stopSimulation()``, then polled until stopped) when
  ``stop_running_simulation`` is set; ``sim.setStepping(True)`` (the simulation advances only on
  ``sim.step()``); the time step set to the scene's control period and checked with
  ``sim.getSimulationTimeStep()``; the skull mesh and MSCS vision sensors added when ``populate``
  is set (``scenes.coppeliasim_assembly``); the handles; ``sim.startSimulation()``.
- configure, dry run (someone else's simulation, watched, never changed): the handles and
  ``sim.getSimulationTime()`` only. Nothing is stopped, started, stepped, populated or rendered;
  sensors missing at the configured paths mean no cameras (``has_cameras`` False).
- handles: ``sim.getObject(path, {noError: true})`` and ``sim.getObject(path, {index: 1,
  noError: true})``: a path that matches a second object (an alias used twice, which CoppeliaSim
  would resolve to the first silently) is refused, naming the field and the path.
- close: each step on its own, a failure does not skip the next: ``sim.stopSimulation()``,
  ``sim.setStepping(False)``, ``sim.getSimulationState()`` polled (at most ``connect_timeout_s``)
  until the asynchronous stop has completed, so the next session finds it stopped; the link
  closed. A dry run only closes the link.
- read: ``sim.getJointPosition`` and ``sim.getJointVelocity`` per joint (CoppeliaSim has no
  batched joint read) and ``sim.getSimulationTime()`` as the stamp (17 round trips);
  write (armed only): ``sim.setJointTargetPosition`` per joint (the joints must be
  position-controlled in the .ttt); advance: ``sim.step()`` when armed.
- ``now()`` is the lockstep clock: the simulation time at configure plus one control period
  per advance(). It costs no call, and a simulator that stops advancing (paused, stopped or
  reset behind our back) shows as stale joint states. In a dry run advance() does not step:
  it polls ``sim.getSimulationTime()`` until the owner's simulation reaches ``now()`` (one that
  is ahead moves the clock forward); a simulation time that stands still for 50 ms (stopped,
  paused) is left behind, so a dry run against a stopped simulation ends in stale joint states:
  it cannot show fresh ones; ``idle_reason()`` says so, and the dry-run checks (hw_check, the
  demo's) skip what needs fresh stamps.
- API versions: where the server has scene properties (CoppeliaSim >= 4.8: ``setFloatProperty``
  and ``handle_scene`` among ``zmqRemoteApi.info('sim')``'s names), the time step is
  ``sim.setFloatProperty(sim.handle_scene, "timeStep", dt)`` and the drill signal
  ``sim.setFloatProperty(sim.handle_scene, "signal.micromill_drill_rpm", rpm)``; on 4.6/4.7 the
  calls deprecated since 4.8: ``sim.setFloatParam(sim.floatparam_simulation_time_step, dt)`` and
  ``sim.setFloatSignal("micromill_drill_rpm", rpm)``.
- drill: CoppeliaSim has no drill. The commanded speed is published as the float signal
  ``micromill_drill_rpm`` (0 = off; readable with ``sim.getFloatSignal`` on every version) and
  kept locally for ``drill_state()``; the state is what was last delivered.

Approximations, stated plainly:
- CoppeliaSim images carry no stamps. Frames are taken at the scene's camera rate
  (``sensors.cameras.rate_hz``) on the lockstep clock: ``sim.handleVisionSensor`` renders both
  sensors now (armed only: a dry run reads what the sensors hold), ``sim.getVisionSensorImg``
  fetches them, the frame is stamped with ``now()`` and its index counts frames taken;
  between frames the last one is returned again. No
  exposure delay or sensor noise (the twin models both). Images arrive RGB with the bottom
  row first; they are flipped and turned into BGR uint8 (H, W, 3).
- ``has_cameras`` is False when the sensor paths are "" (and in a dry run whose scene lacks them).

Timeouts: the client would block forever on a silent server, so its socket gets receive/send
timeouts of ``connect_timeout_s`` (the scene has no separate setting) for the first contact
and every later call. No answer at configure raises ``HardwareError`` saying how to start
CoppeliaSim; no answer later raises ``ConnectionLost`` (the safety layer stops the run). A ZMQ
REQ socket is unusable after a timeout, so the next call replaces the client's socket with a
fresh one on the same client (same uuid: the server keeps our stepping state) and the
backend carries on once the simulator answers again. An error reply (``{err: ...}``) raises
``HardwareError`` with the server's message; while active, the safety layer turns it into a
safety stop.
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
#: how often configure and close poll while waiting for the simulation to stop (s)
_STOP_POLL_S = 0.02
#: dry run: how often advance() polls the simulation time while waiting for the owner's simulation (s)
_DRY_POLL_S = 2e-4
#: dry run: a simulation time unchanged this long counts as not advancing (stopped or paused) (s)
_DRY_STALL_S = 0.05


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
        self._properties = False         # CoppeliaSim >= 4.8: scene properties for signals and the time step
        self._stepping = False           # this client switched stepping on (armed)
        self._started = False            # this client started the simulation (armed)
        self._t0_s = 0.0                 # simulation time at start (s)
        self._steps = 0                  # control periods since start
        self._sim_time_s = 0.0           # dry run: the simulation time last read (s)
        self._drill = DrillState(False, 0.0)
        self._frame: StereoFrame | None = None
        self._frame_slot = -1            # camera period (index since start) of self._frame

    @property
    def has_cameras(self) -> bool:
        """False without sensor paths, and in a dry run whose scene lacks the sensors (nothing is added)."""
        if self._link is not None and self._sensors is None:
            return False
        return bool(self.spec.left_sensor_path)

    def idle_reason(self) -> str | None:
        """Dry run only: the simulation is stopped or paused (``sim.getSimulationState()``), so its
        joint states stand still and a dry run, which never starts it, cannot show fresh ones."""
        if self.armed or self._link is None:
            return None
        sim = self._link.sim
        state = self._link.call("getSimulationState")
        if state == sim.simulation_stopped or state == getattr(sim, "simulation_paused", None):
            return (f"CoppeliaSim's simulation is {'stopped' if state == sim.simulation_stopped else 'paused'}; "
                    f"a dry run never starts it, so joint states do not advance (the armed run starts it)")
        return None

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
        self._properties = hasattr(sim, "setFloatProperty") and hasattr(sim, "handle_scene")
        if self.armed:
            self._take_simulation()
        self._joints = [self._handle(p, f"backends.coppeliasim.joint_paths[{i}]")
                        for i, p in enumerate(self.spec.joint_paths)]
        if self.spec.left_sensor_path:
            paths = (("left_sensor_path", self.spec.left_sensor_path), ("right_sensor_path", self.spec.right_sensor_path))
            handles = [self._handle(path, f"backends.coppeliasim.{field}", required=self.armed) for field, path in paths]
            if all(h != -1 for h in handles):
                self._sensors = (handles[0], handles[1])
            else:
                log.warning("%s: DRY RUN: no vision sensor at %s (only an armed run adds them): no images",
                            self.name, " / ".join(p for (_, p), h in zip(paths, handles) if h == -1))
        if self.armed:
            link.call("startSimulation")
            self._started = True
        self._t0_s = self._sim_time_s = float(link.call("getSimulationTime"))
        self._steps = 0

    def _take_simulation(self) -> None:
        """Armed: make the simulation ours (stopped, stepped by us, at the control period, populated)."""
        link, sim = self._link, self._link.sim
        state = link.call("getSimulationState")
        if state != sim.simulation_stopped:
            if not self.spec.stop_running_simulation:
                raise HardwareError(
                    f"CoppeliaSim's simulation is already running (state {state}): another client is using it, or "
                    f"an earlier run crashed. micromill does not stop a simulation it did not start: stop it yourself "
                    f"(CoppeliaSim's stop button or sim.stopSimulation()), or set [backends.coppeliasim] "
                    f"stop_running_simulation = true in {self._scene.source} to have it stopped; a dry run (no --arm) "
                    f"only watches it")
            log.warning("%s: the simulation was running; stopping it (backends.coppeliasim.stop_running_simulation)",
                        self.name)
            link.call("stopSimulation")
            self._wait_until_stopped()
        link.call("setStepping", True)
        self._stepping = True
        dt = self.period_s
        if self._properties:
            link.call("setFloatProperty", sim.handle_scene, "timeStep", dt)
        else:
            link.call("setFloatParam", sim.floatparam_simulation_time_step, dt)
        got = link.call("getSimulationTimeStep")
        if not math.isclose(got, dt, rel_tol=1e-9):
            raise HardwareError(f"CoppeliaSim kept a time step of {got:g} s after setting {dt:g} s "
                                f"(control.period_s); lockstep needs them equal (check the scene's dt settings)")
        if self.spec.populate:
            from scenes.coppeliasim_assembly import populate

            with link.remote("populating the scene (scenes.coppeliasim_assembly)"):
                populate(sim, self._scene)

    def _wait_until_stopped(self) -> None:
        """Poll until the (asynchronous) stop has completed, at most ``connect_timeout_s``."""
        link = self._link
        deadline = time.monotonic() + link.timeout_s
        while link.call("getSimulationState") != link.sim.simulation_stopped:
            if time.monotonic() > deadline:
                raise HardwareError(f"CoppeliaSim's simulation did not stop within {link.timeout_s:g} s")
            time.sleep(_STOP_POLL_S)

    def _handle(self, path: str, field: str, required: bool = True) -> int:
        """The handle of the one object at ``path``; -1 when it is missing and not ``required``.
        A path that matches more than one object is refused (CoppeliaSim would bind the first)."""
        call = self._link.call
        try:
            handle = int(call("getObject", path, {"noError": True}))
            second = int(call("getObject", path, {"index": 1, "noError": True})) if handle != -1 else -1
        except ConnectionLost:
            raise
        except HardwareError as exc:
            raise HardwareError(f"CoppeliaSim could not look up {path!r} ({field} of {self._scene.source}): "
                                f"{exc}") from exc
        if handle == -1 and required:
            raise HardwareError(f"CoppeliaSim has no object at {path!r} ({field} of {self._scene.source})")
        if second != -1:
            alias = path.rstrip("/").rsplit("/", 1)[-1]
            raise HardwareError(
                f"{field} = {path!r} ({self._scene.source}) matches more than one object in the CoppeliaSim scene "
                f"(handles {handle} and {second} at least); CoppeliaSim would silently bind the first. Give a path "
                f"that names one object, e.g. with its parent's alias ('/arm/{alias}'), or make the aliases unique")
        return handle

    def _on_close(self) -> None:
        """Undo what configure did, each step on its own (a failed one does not skip the rest): stop
        the simulation and wait until it has stopped, stepping off, the link closed. A dry run
        changed nothing and only closes the link."""
        link = self._link
        if link is None:
            return
        failures: list[str] = []

        def attempt(what: str, fn) -> None:
            try:
                fn()
            except Exception as exc:          # noqa: BLE001 - every step must run; all are reported below
                log.warning("%s: close: %s failed: %s", self.name, what, exc)
                failures.append(f"{what}: {exc}")

        if self._started:
            attempt("sim.stopSimulation", lambda: link.call("stopSimulation"))
        if self._stepping:
            attempt("sim.setStepping(False)", lambda: link.call("setStepping", False))
        if self._started:
            attempt("waiting for the simulation to stop", self._wait_until_stopped)
        self._started = self._stepping = False
        attempt("closing the connection", link.close)
        self._link = None
        if failures:
            raise HardwareError(f"CoppeliaSim: {'; '.join(failures)}")

    # ---- I/O ---------------------------------------------------------------------------
    def now(self) -> float:
        """The lockstep clock (s): simulation time at start + one control period per advance()."""
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
        self._steps += 1
        if self.armed:
            self._link.call("step")
        else:
            self._follow_simulation()

    def _follow_simulation(self) -> None:
        """Dry run: wait until the simulation (stepped by its owner) reaches ``now()``; one that is
        ahead moves the clock forward; one whose time stands still for ``_DRY_STALL_S`` (stopped,
        paused) is left behind, and the watchdog reports stale joint states."""
        target = self.now()
        t = self._sim_time_s
        changed = time.monotonic()
        while t < target - 1e-9 and time.monotonic() - changed < _DRY_STALL_S:
            time.sleep(_DRY_POLL_S)
            latest = float(self._link.call("getSimulationTime"))
            if latest != t:
                t, changed = latest, time.monotonic()
        self._sim_time_s = t
        if t > target:
            self._t0_s += t - target

    def _set_drill(self, on: bool, speed_rpm: float) -> None:
        if self._properties:
            self._link.call("setFloatProperty", self._link.sim.handle_scene, f"signal.{DRILL_SIGNAL}", speed_rpm)
        else:
            self._link.call("setFloatSignal", DRILL_SIGNAL, speed_rpm)
        self._drill = DrillState(on, speed_rpm)

    def drill_state(self) -> DrillState:
        return self._drill

    def _grab_stereo(self) -> StereoFrame | None:
        slot = math.floor((self.now() - self._t0_s) * self._scene.sensors.cameras.rate_hz + 1e-9)
        if slot > self._frame_slot:
            if self.armed:                        # a dry run does not render: it reads what the sensors hold
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
