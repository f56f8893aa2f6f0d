"""A test peer that speaks CoppeliaSim's ZeroMQ remote API, backed by the PyBullet twin.

It lets the ``coppeliasim`` backend and the official client run against something real in
tests, where CoppeliaSim itself is not installable. It is not a second simulator: it serves
only the ``sim`` functions the backend and ``scenes.coppeliasim_assembly`` use, and answers
anything else like the real server does (``{err: "No such function: ..."}``).

    python -m hw_bridge.test_peers.coppeliasim_server --port 23000 --scene scenes/default.toml \\
        --overrides '{"skull.seed": 3}' --seed 0 --api 4.8

prints ``READY rpc=tcp://127.0.0.1:P control=tcp://127.0.0.1:C`` once it listens (port 0 =
any free port; the line says which).

Wire protocol, as the real server (add-on "ZMQ remote API server", protocol version 2) does it:
- one CBOR map per message; requests ``{func, args, argsL, uuid}``, the first one from a client
  also ``ver``, ``lang``, ``timeout`` (accepted, not checked); a message without ``uuid`` gets
  ``{success: false, error: ...}`` as the real server answers old clients;
- replies ``{ret: [values...]}`` or ``{err: "message"}``;
- ``zmqRemoteApi.require(name)`` loads a namespace (only ``sim`` here); ``zmqRemoteApi.info(name)``
  maps each of its names to ``{func: {}}`` or ``{const: value}``; ``--api 4.8`` (the default)
  adds the scene properties of CoppeliaSim >= 4.8 (``setFloatProperty`` / ``getFloatProperty``
  on ``sim.handle_scene``: ``timeStep`` and ``signal.<name>``), ``--api 4.6`` serves without them;
- ``sim.step()``: the server answers ``{func: "_*wait*_", args: []}``, the client answers
  ``{func: "_*executed*_", args: []}``, then the server advances one step and replies ``{ret: []}``
  (the real server may send more than one wait per step; one suffices here);
- ``_*end*_`` (a client leaving) is answered with ``{}``.
The socket is a ROUTER, which a REQ client cannot tell from the real server's REP socket; it
lets the server read and drop requests while it plays a simulator that stopped answering.

Mapping onto the twin (``twin.world.TwinWorld``, one ``world.step()`` per ``sim.step()``; the
time step is the scene's control period, the only one ``sim.setFloatParam`` and ``timeStep`` accept):
- ``sim.getObject(path, {index, noError})``: the index-th object the path names (the joint, then
  objects aliased alike, so a repeated alias can be tried), -1 with ``noError`` when none;
- the 8 joint paths of ``[backends.coppeliasim] joint_paths`` are the twin's joints;
  ``sim.getJointPosition`` / ``sim.getJointVelocity`` come from ``world.latest_joint_sample()``
  and ``sim.getSimulationTime`` is that sample's stamp, so injected joint-state faults show
  through the API (a frozen or delayed sample = a simulation time that stops or lags);
  ``sim.setJointTargetPosition`` sets one element of the arm's target vector;
- vision sensors created by ``sim.createVisionSensor`` and aliased after ``left_sensor_path`` /
  ``right_sensor_path`` are the twin's MSCS cameras; ``sim.handleVisionSensor`` renders the twin
  now (no exposure delay, like CoppeliaSim; kept still under ``freeze_frames``) and
  ``sim.getVisionSensorImg`` returns it as RGB bytes, bottom row first (black before the first
  render); shapes are recorded, not simulated;
- ``sim.stopSimulation`` resets every client's stepping level (as the real add-on does) and
  completes asynchronously, ``STOP_LATENCY_S`` later (``sim.getSimulationState`` says
  ``simulation_advancing_abouttostop`` meanwhile); it keeps the world: time and joints carry
  over to the next start, where real CoppeliaSim restores the scene and restarts at t = 0 (the
  backend relies on neither).

Faults and inspection go through a second socket (REP, CBOR maps): ``{cmd: "inject", kind}``
(``twin.faults`` kinds; ``disconnect`` makes the RPC socket drop every request until
``clear``), ``{cmd: "fail", func, err}`` (every call of ``func``, e.g. "sim.stopSimulation",
answers ``{err: err}`` until ``clear``), ``{cmd: "run_free"}`` (another client started the
simulation without stepping: it advances one period per period of wall time until someone stops
it), ``{cmd: "clear"}``, ``{cmd: "report"}`` (what the server was asked to create, call counts,
signals, time, running or free running) and ``{cmd: "stop"}``. ``start_test_server`` wraps all
this for tests.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import zmq

from hw_bridge.test_peers.peer_process import PEER_PREEXEC
from scenes.spec import SceneSpec, load_scene
from twin.render import StereoImages
from twin.world import TwinWorld

#: the ``sim`` constants served (values of CoppeliaSim's simConst)
SIM_CONSTANTS: dict[str, Any] = {
    "handle_world": -1,
    "floatparam_simulation_time_step": 1,
    "simulation_stopped": 0,
    "simulation_advancing_running": 17,
    "simulation_advancing_abouttostop": 21,
}
#: what CoppeliaSim >= 4.8 adds to the served names: scene properties (signals, the time step)
API_4_8_FUNCTIONS = ("setFloatProperty", "getFloatProperty")
API_4_8_CONSTANTS: dict[str, Any] = {"handle_scene": -12}
#: the API versions the server can play
API_VERSIONS = ("4.6", "4.8")
#: how long a stop takes to complete after sim.stopSimulation (s of wall time; the real stop is asynchronous)
STOP_LATENCY_S = 0.1
#: how many periods a free-running simulation catches up at most per loop of the server
_FREE_RUN_MAX_STEPS = 20
WAIT = {"func": "_*wait*_", "args": []}
OLD_CLIENT_REPLY = {"success": False,
                    "error": "The client ZeroMQ remote API version does not match CoppeliaSim's version"}
_FIRST_OBJECT_HANDLE = 100
#: how long a test waits for the control socket's answer, or for the server to exit (s)
_CONTROL_TIMEOUT_S = 10.0


class RemoteError(Exception):
    """Becomes an ``{err: message}`` reply."""


@dataclass
class ShapeRecord:
    handle: int
    options: int
    shading_angle_rad: float
    vertex_count: int
    triangle_count: int
    alias: str = ""


@dataclass
class SensorRecord:
    handle: int
    options: int
    resolution: tuple[int, int]          # (width, height) px
    near_m: float
    far_m: float
    view_angle_rad: float
    pose_world: tuple[float, ...] = ()   # (x, y, z, qx, qy, qz, qw), set by sim.setObjectPose
    alias: str = ""
    image_rgb: bytes = field(default=b"", repr=False)   # last rendered, bottom row first


@dataclass
class ClientState:
    stepping_level: int = 0
    step_pending: bool = False           # a sim.step() waits for this client's "_*executed*_"


def _float_list(value, n: int | None, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n) \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise RemoteError(f"{what}: expected {'a list' if n is None else f'{n} numbers'}, got {value!r}")
    return [float(v) for v in value]


class TwinSim:
    """The served ``sim`` namespace: one method per remote function, backed by a TwinWorld."""

    FUNCTIONS = ("getObject", "removeObjects", "setStepping", "step", "startSimulation", "stopSimulation",
                 "getSimulationState", "getSimulationTime", "getSimulationTimeStep", "setFloatParam",
                 "getJointPosition", "getJointVelocity", "setJointTargetPosition", "createShape",
                 "createVisionSensor", "setObjectPose", "setObjectAlias", "handleVisionSensor",
                 "getVisionSensorImg", "setFloatSignal", "getFloatSignal")

    def __init__(self, scene: SceneSpec, seed: int, api: str = "4.8"):
        if api not in API_VERSIONS:
            raise ValueError(f"api={api!r}; valid: {', '.join(API_VERSIONS)}")
        self.scene = scene
        self.seed = seed
        self.api = api
        self.functions = self.FUNCTIONS + (API_4_8_FUNCTIONS if api == "4.8" else ())
        self.constants = {**SIM_CONSTANTS, **(API_4_8_CONSTANTS if api == "4.8" else {})}
        #: remote function ("sim.name") -> the error message it answers with (the ``fail`` fault)
        self.failing: dict[str, str] = {}
        self._stop_at: float | None = None        # wall time at which a requested stop completes
        self._free_since: float | None = None     # wall time since which the simulation runs free
        self._free_steps = 0
        self.world = TwinWorld(scene, seed)
        spec = scene.backends.coppeliasim
        self.joint_handles = {path: i + 1 for i, path in enumerate(spec.joint_paths)}
        self.camera_paths = (spec.left_sensor_path, spec.right_sensor_path)
        self.targets = self.world.arm.target.copy()
        self.running = False
        self.clients: dict[str, ClientState] = {}
        self.current: ClientState = ClientState()
        self.shapes: dict[int, ShapeRecord] = {}
        self.sensors: dict[int, SensorRecord] = {}
        self.signals: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self._next_handle = _FIRST_OBJECT_HANDLE
        self._images: StereoImages | None = None
        self._images_time_s = -1.0
        self._renders = 0
        self._render()                    # warm-up: the first render computes every pixel's ray

    # ---- helpers -----------------------------------------------------------------------
    def _new_handle(self) -> int:
        self._next_handle += 1
        return self._next_handle

    def _joint(self, handle) -> int:
        if handle not in self.joint_handles.values():
            raise RemoteError(f"object {handle!r} is not a joint")
        return handle - 1

    def _sensor(self, handle) -> SensorRecord:
        if handle not in self.sensors:
            raise RemoteError(f"object {handle!r} is not a vision sensor")
        return self.sensors[handle]

    def _object(self, handle) -> ShapeRecord | SensorRecord:
        obj = self.shapes.get(handle) or self.sensors.get(handle)
        if obj is None:
            raise RemoteError(f"object {handle!r} does not exist")
        return obj

    def _render(self) -> StereoImages:
        """The twin's cameras now (cached per simulation time; kept still under freeze_frames)."""
        w = self.world
        if self._images is None or (self._images_time_s != w.time_s and not w.faults.freeze_frames):
            rng = np.random.default_rng([self.seed, self._renders])
            self._images = w.renderer.render(w.robot.fk(w.arm.state()[0]), rng)
            self._images_time_s = w.time_s
            self._renders += 1
        return self._images

    # ---- objects -----------------------------------------------------------------------
    def getObject(self, path, options=None):
        """The ``index``-th object (``options["index"]``, default 0) whose alias the path names; -1
        with ``noError`` when there is none (as CoppeliaSim: "/a" matches every object aliased a)."""
        options = options if isinstance(options, dict) else {}
        matches = [self.joint_handles[path]] if path in self.joint_handles else []
        matches += [obj.handle for obj in (*self.shapes.values(), *self.sensors.values())
                    if obj.alias and path == f"/{obj.alias}"]
        index = options.get("index", 0)
        if isinstance(index, int) and 0 <= index < len(matches):
            return matches[index]
        if options.get("noError"):
            return -1
        raise RemoteError(f"object does not exist: {path!r}" + (f" (index {index})" if index else ""))

    def removeObjects(self, handles, delayed_removal=False):
        for h in handles:
            self._object(h)
            self.shapes.pop(h, None)
            self.sensors.pop(h, None)

    def setObjectAlias(self, handle, alias):
        if not isinstance(alias, str) or not alias:
            raise RemoteError(f"invalid alias {alias!r}")
        self._object(handle).alias = alias

    def setObjectPose(self, handle, pose, relative_to=SIM_CONSTANTS["handle_world"]):
        obj = self._object(handle)
        pose = _float_list(pose, 7, "sim.setObjectPose pose [x, y, z, qx, qy, qz, qw]")
        if relative_to != SIM_CONSTANTS["handle_world"]:
            raise RemoteError("the test server supports poses relative to sim.handle_world only")
        if not isinstance(obj, SensorRecord):
            raise RemoteError("the test server poses vision sensors only")
        obj.pose_world = tuple(pose)

    def createShape(self, options, shading_angle, vertices, indices, normals=None, texture_coordinates=None,
                    texture=None, texture_resolution=None):
        vertices = _float_list(vertices, None, "sim.createShape vertices")
        if len(vertices) % 3 or not vertices:
            raise RemoteError(f"sim.createShape: {len(vertices)} vertex coordinates, not a multiple of 3")
        n = len(vertices) // 3
        if not isinstance(indices, list) or len(indices) % 3 or not indices \
                or not all(isinstance(i, int) and 0 <= i < n for i in indices):
            raise RemoteError(f"sim.createShape: indices must be triples of vertex indices in [0, {n})")
        if any(v is not None for v in (normals, texture_coordinates, texture, texture_resolution)):
            raise RemoteError("the test server creates shapes without normals or textures")
        h = self._new_handle()
        self.shapes[h] = ShapeRecord(h, int(options), float(shading_angle), n, len(indices) // 3)
        return h

    def createVisionSensor(self, options, int_params, float_params):
        ip = _float_list(int_params, 4, "sim.createVisionSensor intParams")
        fp = _float_list(float_params, 11, "sim.createVisionSensor floatParams")
        if ip[0] < 1 or ip[1] < 1 or ip[0] != int(ip[0]) or ip[1] != int(ip[1]):
            raise RemoteError(f"sim.createVisionSensor: resolution {ip[:2]} must be positive integers")
        if not 0 < fp[0] < fp[1]:
            raise RemoteError(f"sim.createVisionSensor: clipping planes near={fp[0]} far={fp[1]}")
        h = self._new_handle()
        self.sensors[h] = SensorRecord(h, int(options), (int(ip[0]), int(ip[1])), fp[0], fp[1], fp[2])
        return h

    def handleVisionSensor(self, handle):
        s = self._sensor(handle)
        path = f"/{s.alias}"
        if path not in self.camera_paths:
            raise RemoteError(f"the test server renders the MSCS cameras only ({' and '.join(self.camera_paths)}); "
                              f"sensor {handle} is {path!r}")
        cam = self.world.cameras[self.camera_paths.index(path)]
        if s.resolution != (cam.width_px, cam.height_px):
            raise RemoteError(f"sensor {path} is {s.resolution[0]}x{s.resolution[1]} px but the twin's camera "
                              f"renders {cam.width_px}x{cam.height_px} px")
        images = self._render()
        bgr = images.left if path == self.camera_paths[0] else images.right
        s.image_rgb = np.ascontiguousarray(bgr[::-1, :, ::-1]).tobytes()
        return 0, [], []

    def getVisionSensorImg(self, handle, options=0, rgba_cut_off=0.0, pos=(0, 0), size=(0, 0)):
        s = self._sensor(handle)
        if options != 0 or list(pos) != [0, 0] or list(size) != [0, 0]:
            raise RemoteError("the test server returns whole RGB images only (options=0, pos and size [0, 0])")
        w, h = s.resolution
        return s.image_rgb or bytes(w * h * 3), [w, h]

    # ---- simulation --------------------------------------------------------------------
    def setStepping(self, enabled):
        c = self.current
        previous = c.stepping_level
        c.stepping_level = c.stepping_level + 1 if enabled else max(0, c.stepping_level - 1)
        return previous

    def step(self):
        self.current.step_pending = True
        return WAIT

    def executed_step(self) -> list:
        """The client confirmed the wait: advance one period (when running) and return step()'s values."""
        self.current.step_pending = False
        if self.running:
            self.world.step()
        return []

    def startSimulation(self):
        self._settle_stop()
        if self._stop_at is not None:
            raise RemoteError("the simulation is still stopping")
        self.running = True
        return 1

    def stopSimulation(self, wait=False):
        """Asynchronous, as in CoppeliaSim: the stop completes ``STOP_LATENCY_S`` later."""
        if self.running and self._stop_at is None:
            self._stop_at = time.monotonic() + STOP_LATENCY_S
        for c in self.clients.values():
            c.stepping_level = 0

    def _settle_stop(self) -> None:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.running = False
            self._stop_at = None
            self._free_since = None

    def getSimulationState(self):
        self._settle_stop()
        if self._stop_at is not None:
            return SIM_CONSTANTS["simulation_advancing_abouttostop"]
        return SIM_CONSTANTS["simulation_advancing_running" if self.running else "simulation_stopped"]

    def run_free(self) -> None:
        """Another client started the simulation without stepping: it advances on its own, one
        period per period of wall time, until someone stops it."""
        self._settle_stop()
        self.running = True
        self._free_since = time.monotonic()
        self._free_steps = 0

    def free_run_tick(self) -> None:
        """Catch a free-running simulation up with the wall clock (a bounded number of steps)."""
        self._settle_stop()
        if self._free_since is None or not self.running:
            return
        due = int((time.monotonic() - self._free_since) / self.world.period_s)
        for _ in range(min(due - self._free_steps, _FREE_RUN_MAX_STEPS)):
            self.world.step()
            self._free_steps += 1

    @property
    def free_running(self) -> bool:
        return self._free_since is not None and self.running

    def getSimulationTime(self):
        return float(self.world.latest_joint_sample().stamp_s)

    def getSimulationTimeStep(self):
        return float(self.world.period_s)

    def setFloatParam(self, parameter, value):
        if parameter != SIM_CONSTANTS["floatparam_simulation_time_step"]:
            raise RemoteError(f"the test server sets sim.floatparam_simulation_time_step only, not {parameter!r}")
        self._set_time_step(value)

    def _set_time_step(self, value) -> None:
        if not np.isclose(value, self.world.period_s, rtol=1e-12, atol=0.0):
            raise RemoteError(f"the test server steps at the scene's control period ({self.world.period_s:g} s); "
                              f"cannot set {value!r} s")

    # ---- scene properties (CoppeliaSim >= 4.8) ------------------------------------------
    def _scene_property(self, target, name) -> str:
        if target != API_4_8_CONSTANTS["handle_scene"]:
            raise RemoteError(f"the test server serves scene properties only (sim.handle_scene), not {target!r}")
        if not isinstance(name, str) or not (name == "timeStep" or name.startswith("signal.")):
            raise RemoteError(f"the test server serves the scene properties timeStep and signal.* only, not {name!r}")
        return name

    def setFloatProperty(self, target, name, value):
        name = self._scene_property(target, name)
        if name == "timeStep":
            self._set_time_step(value)
        else:
            self.signals[name.removeprefix("signal.")] = float(value)

    def getFloatProperty(self, target, name, options=None):
        name = self._scene_property(target, name)
        if name == "timeStep":
            return float(self.world.period_s)
        if name.removeprefix("signal.") not in self.signals:
            raise RemoteError(f"property {name!r} does not exist")
        return self.signals[name.removeprefix("signal.")]

    # ---- joints and signals ------------------------------------------------------------
    def getJointPosition(self, handle):
        return float(self.world.latest_joint_sample().position[self._joint(handle)])

    def getJointVelocity(self, handle):
        return float(self.world.latest_joint_sample().velocity[self._joint(handle)])

    def setJointTargetPosition(self, handle, position, motion_params=None):
        self.targets[self._joint(handle)] = float(position)
        self.world.arm.set_target(self.targets)

    def setFloatSignal(self, name, value):
        self.signals[str(name)] = float(value)

    def getFloatSignal(self, name):
        return (self.signals.get(name),)         # one value, nil when unset

    # ---- the test channel --------------------------------------------------------------
    def report(self) -> dict:
        self._settle_stop()
        return {"shapes": [asdict(s) for s in self.shapes.values()],
                "sensors": [{k: v for k, v in asdict(s).items() if k != "image_rgb"} for s in self.sensors.values()],
                "signals": dict(self.signals), "calls": dict(self.calls), "time_s": self.world.time_s,
                "running": self.running, "free_running": self.free_running, "api": self.api,
                "stepping_levels": [c.stepping_level for c in self.clients.values()]}


class RemoteApiServer:
    """The RPC socket (CoppeliaSim's protocol) and the control socket of the test server."""

    def __init__(self, sim: TwinSim, port: int, control_port: int, host: str = "127.0.0.1"):
        self.sim = sim
        self.ctx = zmq.Context()
        self.rpc = self.ctx.socket(zmq.ROUTER)
        self.control = self.ctx.socket(zmq.REP)
        self.rpc_port = self._bind(self.rpc, host, port)
        self.control_port = self._bind(self.control, host, control_port)
        self.host = host
        self._stop = False

    @staticmethod
    def _bind(socket, host: str, port: int) -> int:
        if port == 0:
            return socket.bind_to_random_port(f"tcp://{host}")
        socket.bind(f"tcp://{host}:{port}")
        return port

    def _info(self, name):
        if name != "sim":
            raise RemoteError(f"unknown namespace {name!r}")
        return {**{f: {"func": {}} for f in self.sim.functions}, **{k: {"const": v} for k, v in self.sim.constants.items()}}

    def _require(self, name):
        if name != "sim":
            raise RemoteError(f"module '{name}' not found (the test server serves 'sim' only)")

    def handle(self, req: Any) -> dict:
        """One request -> one reply (a CBOR map)."""
        if not isinstance(req, dict) or "uuid" not in req:
            return OLD_CLIENT_REPLY
        func, args = req.get("func", ""), list(req.get("args") or [])
        if func == "_*end*_":
            self.sim.clients.pop(req["uuid"], None)
            return {}
        client = self.sim.clients.setdefault(req["uuid"], ClientState())
        self.sim.current = client
        self.sim.calls[func] += 1
        try:
            if func == "_*executed*_" and client.step_pending:
                return {"ret": self.sim.executed_step()}
            client.step_pending = False
            if func == "zmqRemoteApi.require":
                self._require(*args)
                return {"ret": []}
            if func == "zmqRemoteApi.info":
                return {"ret": [self._info(*args)]}
            name = func.removeprefix("sim.")
            if not func.startswith("sim.") or name not in self.sim.functions:
                return {"err": f"No such function: {func}"}
            if func in self.sim.failing:
                return {"err": f"{self.sim.failing[func]} (in function '{func}')"}
            ret = getattr(self.sim, name)(*args[:req.get("argsL", len(args))])
        except (RemoteError, TypeError, ValueError, IndexError) as exc:
            return {"err": f"{exc} (in function '{func}')"}
        if ret is WAIT:
            return WAIT
        return {"ret": list(ret) if isinstance(ret, tuple) else ([] if ret is None else [ret])}

    def _control(self, msg: Any) -> dict:
        cmd = msg.get("cmd") if isinstance(msg, dict) else None
        faults = self.sim.world.faults
        try:
            if cmd == "inject":
                faults.inject(msg["kind"])
            elif cmd == "clear":
                faults.clear()
                self.sim.failing.clear()
            elif cmd == "fail":
                self.sim.failing[str(msg["func"])] = str(msg["err"])
            elif cmd == "run_free":
                self.sim.run_free()
            elif cmd == "report":
                return {"ok": True, "report": self.sim.report()}
            elif cmd == "stop":
                self._stop = True
            else:
                return {"err": f"unknown command {cmd!r}; valid: inject, clear, fail, run_free, report, stop"}
        except (KeyError, ValueError) as exc:
            return {"err": str(exc)}
        return {"ok": True}

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.rpc, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        print(f"READY rpc=tcp://{self.host}:{self.rpc_port} control=tcp://{self.host}:{self.control_port}",
              flush=True)
        while not self._stop:
            events = dict(poller.poll(1 if self.sim.free_running else None))
            self.sim.free_run_tick()
            if self.control in events:
                self.control.send(cbor2.dumps(self._control(cbor2.loads(self.control.recv()))))
            if self.rpc in events:
                *envelope, body = self.rpc.recv_multipart()     # [identity, b"", body] from a REQ client
                if self.sim.world.faults.disconnected:
                    continue                      # a simulator that stopped answering: drop it
                try:
                    req = cbor2.loads(body)
                except cbor2.CBORDecodeError as exc:
                    reply = {"err": f"could not decode the request: {exc}"}
                else:
                    reply = self.handle(req)
                self.rpc.send_multipart([*envelope, cbor2.dumps(reply)])

    def close(self) -> None:
        self.rpc.close(linger=0)
        self.control.close(linger=0)
        self.ctx.term()
        self.sim.world.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=23000, help="RPC port (0: any free port)")
    ap.add_argument("--control-port", type=int, default=0, help="fault/inspection port (0: any free port)")
    ap.add_argument("--scene", default=None, help="scene TOML (default: scenes/default.toml)")
    ap.add_argument("--overrides", default="{}", help="scene overrides as a JSON object of dotted keys")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api", choices=API_VERSIONS, default="4.8",
                    help="the CoppeliaSim API to serve: 4.8 adds scene properties (signals, the time step)")
    args = ap.parse_args(argv)
    scene = load_scene(args.scene, json.loads(args.overrides))
    server = RemoteApiServer(TwinSim(scene, args.seed, args.api), args.port, args.control_port)
    try:
        server.serve()
    finally:
        server.close()


# ---- for tests ---------------------------------------------------------------------------
class TestServer:
    """A running ``python -m hw_bridge.test_peers.coppeliasim_server`` subprocess; a
    ``hw_bridge.checker.FaultInjector``."""

    __test__ = False                      # not a pytest test class

    def __init__(self, proc: subprocess.Popen, rpc_port: int, control_port: int, scene_overrides: dict):
        self.proc = proc
        self.rpc_port = rpc_port
        #: what a client adds to its scene overrides to reach this server, armed
        self.scene_overrides = scene_overrides
        self._ctx = zmq.Context()
        self._control = self._ctx.socket(zmq.REQ)
        self._control.setsockopt(zmq.RCVTIMEO, int(_CONTROL_TIMEOUT_S * 1000))
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.connect(f"tcp://127.0.0.1:{control_port}")

    def _command(self, **msg) -> dict:
        self._control.send(cbor2.dumps(msg))
        reply = cbor2.loads(self._control.recv())
        if "err" in reply:
            raise RuntimeError(f"coppeliasim test server: {reply['err']}")
        return reply

    def inject(self, kind: str) -> None:
        self._command(cmd="inject", kind=kind)

    def clear(self) -> None:
        """End injected faults and failing calls (not a free-running simulation: stop that with sim.stopSimulation)."""
        self._command(cmd="clear")

    def fail(self, func: str, err: str) -> None:
        """Make every call of ``func`` (e.g. "sim.getJointPosition") answer ``{err: ...}`` until ``clear``."""
        self._command(cmd="fail", func=func, err=err)

    def run_free(self) -> None:
        """Start the simulation as another client would, without stepping: it advances on its own."""
        self._command(cmd="run_free")

    def report(self) -> dict:
        """What the server was asked to create, call counts per function, signals, time (see TwinSim.report)."""
        return self._command(cmd="report")["report"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self._command(cmd="stop")
                self.proc.wait(_CONTROL_TIMEOUT_S)
            except (zmq.ZMQError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._control.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> "TestServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _pump_lines(stream, lines: queue.Queue) -> None:
    """Forward a subprocess's stdout lines (None at its end), so its pipe never fills."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def start_test_server(scene_path: str | None, overrides: dict, seed: int, *, call_timeout_s: float = 1.5,
                      ready_timeout_s: float = 120.0, api: str = "4.8") -> TestServer:
    """Start the test server on free ports and wait for its ready line.

    ``api``: the CoppeliaSim API served ("4.8": with scene properties, "4.6": without).
    ``scene_overrides`` of the result = ``overrides`` + host, port, ``connect_timeout_s =
    call_timeout_s`` (s, the backend's timeout per call) and ``safety.armed = true``: load the
    client's scene with them (``load_scene(scene_path, server.scene_overrides)``).
    """
    cmd = [sys.executable, "-m", "hw_bridge.test_peers.coppeliasim_server", "--port", "0", "--control-port", "0",
           "--overrides", json.dumps(overrides), "--seed", str(seed), "--api", api]
    if scene_path is not None:
        cmd += ["--scene", str(scene_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=PEER_PREEXEC)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + ready_timeout_s
    line: str | None = ""
    while line is not None and not line.startswith("READY"):
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
    if line is None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"coppeliasim test server did not start within {ready_timeout_s:g} s "
                           f"(exit code {proc.returncode}; its stderr is above): {' '.join(cmd)}")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    rpc_port, control_port = (int(fields[k].rsplit(":", 1)[1]) for k in ("rpc", "control"))
    scene_overrides = {**overrides, "backends.coppeliasim.host": "127.0.0.1",
                       "backends.coppeliasim.port": rpc_port,
                       "backends.coppeliasim.connect_timeout_s": call_timeout_s, "safety.armed": True}
    return TestServer(proc, rpc_port, control_port, scene_overrides)


if __name__ == "__main__":
    main()
