"""The ``coppeliasim`` backend against the twin-backed test server (``hw_bridge.test_peers.coppeliasim_server``),
through the official ZeroMQ client: timeouts and reconnection, scene population, dry runs and
the wire protocol itself. The hardware contract and its fault cases run on this backend in
tests/test_hw_contract.py."""
import math
import socket
import sys
import time
import uuid

import cbor2
import numpy as np
import pytest
import zmq
from scipy.spatial.transform import Rotation

from hw_bridge.errors import ConnectionLost, HardwareError, SafetyStop
from hw_bridge.interface import Lifecycle
from hw_bridge.registry import make_hardware
from hw_bridge.test_peers.coppeliasim_server import start_test_server
from scenes.coppeliasim_assembly import SKULL_ALIAS, skull_mesh
from scenes.spec import load_scene
from twin.cameras import cameras_from_spec


@pytest.fixture(scope="module")
def server():
    with start_test_server(None, {}, seed=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def cop_scene(server):
    return load_scene(None, server.scene_overrides)


@pytest.fixture
def hw_factory(cop_scene):
    made = []

    def make(scene=cop_scene, armed=True):
        made.append(make_hardware("coppeliasim", scene, seed=0, armed=armed))
        return made[-1]

    yield make
    for hw in made:
        hw.close()


#: the remote calls that change a simulation (a dry run must make none of them)
CHANGING_CALLS = ("sim.stopSimulation", "sim.startSimulation", "sim.setStepping", "sim.step", "sim.setFloatParam",
                  "sim.setFloatProperty", "sim.setFloatSignal", "sim.createShape", "sim.createVisionSensor",
                  "sim.removeObjects", "sim.setObjectPose", "sim.setObjectAlias", "sim.handleVisionSensor",
                  "sim.setJointTargetPosition")


def _sim(server):
    """The ``sim`` namespace of a second client (what a lab's own script would use)."""
    from coppeliasim_zmqremoteapi_client import RemoteAPIClient

    client = RemoteAPIClient("127.0.0.1", server.rpc_port)
    client.socket.setsockopt(zmq.RCVTIMEO, 5000)
    return client.require("sim")


def _stop_simulation(server) -> None:
    """Stop the server's simulation as its owner would, and wait for the stop to complete."""
    sim = _sim(server)
    sim.stopSimulation()
    deadline = time.monotonic() + 5.0
    while sim.getSimulationState() != sim.simulation_stopped:
        assert time.monotonic() < deadline, "the test server's simulation did not stop"
        time.sleep(0.01)


def _changing_calls(server) -> dict:
    calls = server.report()["calls"]
    return {name: calls.get(name, 0) for name in CHANGING_CALLS}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_fails_within_the_timeout_and_says_how_to_start_one():
    port = _free_port()
    scene = load_scene(None, {"backends.coppeliasim.port": port, "backends.coppeliasim.connect_timeout_s": 0.5,
                              "backends.coppeliasim.host": "127.0.0.1"})
    hw = make_hardware("coppeliasim", scene, armed=False)
    t0 = time.monotonic()
    with pytest.raises(HardwareError, match=f"no CoppeliaSim answered at tcp://127.0.0.1:{port} within 0.5 s") as exc:
        hw.configure()
    assert time.monotonic() - t0 < 3.0
    assert f"coppeliaSim.sh -h -GzmqRemoteApi.rpcPort={port}" in str(exc.value)
    hw.close()


def test_a_missing_client_package_says_how_to_install_it(monkeypatch, cop_scene):
    monkeypatch.setitem(sys.modules, "coppeliasim_zmqremoteapi_client", None)      # import fails
    hw = make_hardware("coppeliasim", cop_scene, armed=True)
    with pytest.raises(HardwareError, match=r'pip install -e "\.\[coppeliasim\]"'):
        hw.configure()
    hw.close()


def test_a_silent_simulator_raises_connection_lost_then_the_backend_reconnects(hw_factory, server, cop_scene):
    hw = hw_factory()
    hw.configure()
    server.inject("disconnect")
    t0 = time.monotonic()
    try:
        with pytest.raises(ConnectionLost, match="did not answer"):
            hw.read()
    finally:
        server.clear()
    assert time.monotonic() - t0 < cop_scene.backends.coppeliasim.connect_timeout_s + 2.0
    assert np.all(np.isfinite(hw.read().position))      # a fresh socket, the same client
    hw.advance()


def test_error_replies_surface_as_exceptions(server, hw_factory, cop_scene):
    from coppeliasim_zmqremoteapi_client import RemoteAPIClient

    client = RemoteAPIClient("127.0.0.1", server.rpc_port)
    client.socket.setsockopt(zmq.RCVTIMEO, 5000)
    with pytest.raises(Exception, match="No such function: sim.noSuchFunction"):
        client.call("sim.noSuchFunction", [])
    paths = list(cop_scene.backends.coppeliasim.joint_paths)
    paths[3] = "/no_such_joint"
    hw = hw_factory(load_scene(None, {**server.scene_overrides, "backends.coppeliasim.joint_paths": paths}))
    with pytest.raises(HardwareError, match=r"'/no_such_joint' \(backends.coppeliasim.joint_paths\[3\]"):
        hw.configure()


def test_populate_creates_the_skull_mesh_and_the_mscs_sensors(server, hw_factory, cop_scene):
    for _ in range(2):                        # configuring again replaces, never duplicates
        hw = hw_factory()
        hw.configure()
        hw.close()
    report = server.report()
    skulls = [s for s in report["shapes"] if s["alias"] == SKULL_ALIAS]
    assert len(skulls) == 1 and len(report["shapes"]) == 1
    expected = skull_mesh(cop_scene).triangle_count
    assert skulls[0]["triangle_count"] == expected and 1000 < expected < 20000
    sensors = {s["alias"]: s for s in report["sensors"]}
    assert sorted(sensors) == ["mscs_left", "mscs_right"]
    for cam in cameras_from_spec(cop_scene.mscs):
        s = sensors[f"mscs_{cam.name}"]
        assert tuple(s["resolution"]) == (cam.width_px, cam.height_px)
        assert s["options"] & 3 == 3                              # explicitly handled, perspective
        assert math.isclose(s["view_angle_rad"], 2 * math.atan(cam.width_px / (2 * cam.fx_px)))
        pose = np.array(s["pose_world"])
        R = Rotation.from_quat(pose[3:]).as_matrix()
        assert np.allclose(pose[:3], cam.centre_r)
        assert np.allclose(R[:, 2], cam.T_cam_to_r[:3, 2]) and np.allclose(R[:, 0], -cam.T_cam_to_r[:3, 0])


def test_the_drill_is_published_as_a_float_signal(server, hw_factory):
    from coppeliasim_zmqremoteapi_client import RemoteAPIClient

    hw = hw_factory()
    hw.configure()
    hw.activate()
    hw.set_drill(True, 12000.0)
    client = RemoteAPIClient("127.0.0.1", server.rpc_port)
    client.socket.setsockopt(zmq.RCVTIMEO, 5000)
    assert client.require("sim").getFloatSignal("micromill_drill_rpm") == 12000.0
    hw.deactivate()                           # drill off
    assert server.report()["signals"]["micromill_drill_rpm"] == 0.0


def test_a_dry_run_watches_someone_elses_simulation_without_changing_it(server, hw_factory):
    """Another client runs the simulation: a dry run connects, reads joints, time and the existing
    sensors' images and follows the simulation's clock, but stops, starts, steps, populates,
    renders, commands and signals nothing, and leaves it running."""
    server.run_free()
    try:
        before = _changing_calls(server)
        hw = hw_factory(armed=False)
        hw.configure()
        hw.activate()
        q0 = hw.read().position
        step = np.zeros_like(q0)
        step[4] = 0.5 * hw.limits.velocity_max[4] * hw.period_s
        t0 = hw.read().stamp_s
        for k in range(1, 101):
            hw.read()                                  # the watchdog: fresh states all along
            hw.write(q0 + k * step)
            hw.advance()
        assert hw.read().stamp_s >= t0 + 0.09          # the owner's simulation advanced, and the dry run with it
        hw.set_drill(True, 1000.0)
        hw.grab_stereo()
        assert hw.dry_run_commands == 100 and not hw.drill_state().on
        assert np.max(np.abs(hw.read().position - q0)) < 1e-4
        hw.close()
        assert _changing_calls(server) == before
        assert server.report()["free_running"]          # still running, still the other client's
    finally:
        _stop_simulation(server)


def test_an_armed_run_refuses_a_simulation_that_is_already_running(server, hw_factory, cop_scene):
    server.run_free()
    try:
        hw = hw_factory()
        with pytest.raises(HardwareError, match="already running.*stop it yourself.*stop_running_simulation = true"):
            hw.configure()
        hw.close()
        assert server.report()["free_running"], "the other client's simulation was stopped"
        hw = hw_factory(load_scene(None, {**server.scene_overrides,
                                          "backends.coppeliasim.stop_running_simulation": True}))
        hw.configure()                                 # asked for: stopped, then started as ours
        report = server.report()
        assert report["running"] and not report["free_running"]
        hw.close()
    finally:
        _stop_simulation(server)


def test_close_waits_until_the_simulation_has_stopped(server, hw_factory):
    """The stop is asynchronous (the test server completes it 0.1 s later, like CoppeliaSim): close()
    returns only once it has completed, so the next session finds the simulation stopped."""
    for _ in range(2):
        hw = hw_factory()
        hw.configure()
        hw.activate()
        hw.close()
        assert not server.report()["running"]


def test_close_runs_every_step_when_the_drill_signal_fails(server, hw_factory):
    hw = hw_factory()
    hw.configure()
    hw.activate()
    hw.set_drill(True, 12000.0)
    stops = server.report()["calls"].get("sim.stopSimulation", 0)
    server.fail("sim.setFloatProperty", "signal write refused")
    try:
        with pytest.raises(HardwareError, match="switching the drill off.*signal write refused.*DRILL MAY STILL BE ON"):
            hw.close()
    finally:
        server.clear()
    report = server.report()
    assert hw.state is Lifecycle.FINALIZED and hw._link is None
    assert report["calls"]["sim.stopSimulation"] == stops + 1 and not report["running"]   # the rest still ran
    assert report["signals"]["micromill_drill_rpm"] == 12000.0       # the failed drill-off stays visible


def test_close_still_releases_stepping_when_the_stop_fails(server, hw_factory):
    hw = hw_factory()
    hw.configure()
    steppings = server.report()["calls"].get("sim.setStepping", 0)
    server.fail("sim.stopSimulation", "refused")
    try:
        with pytest.raises(HardwareError, match="sim.stopSimulation.*refused"):
            hw.close()
        report = server.report()
        assert report["calls"]["sim.setStepping"] == steppings + 1 and set(report["stepping_levels"]) <= {0}
        assert hw._link is None
    finally:
        server.clear()
        _stop_simulation(server)


def test_an_error_reply_in_the_middle_of_a_run_is_a_safety_stop(server, hw_factory):
    hw = hw_factory()
    hw.configure()
    hw.activate()
    q = hw.read().position
    hw.set_drill(True, 12000.0)
    hw.write(q)
    hw.advance()
    server.fail("sim.getJointPosition", "object 3 is not a joint")
    try:
        with pytest.raises(SafetyStop, match="backend error: CoppeliaSim: sim.getJointPosition failed: "
                                             "object 3 is not a joint"):
            hw.read()
    finally:
        server.clear()
    assert hw.state is Lifecycle.INACTIVE and "object 3 is not a joint" in hw.fault
    assert not hw.drill_state().on and server.report()["signals"]["micromill_drill_rpm"] == 0.0
    for _ in range(20):
        hw.advance()
    assert np.max(np.abs(hw.read().position - q)) < 1e-5        # holding


def test_a_path_that_matches_two_objects_is_refused(server, hw_factory):
    sim = _sim(server)
    twin = sim.createShape(0, 0.0, [0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 0.01, 0.0], [0, 1, 2])
    sim.setObjectAlias(twin, "joint1")
    try:
        for armed in (True, False):
            hw = hw_factory(armed=armed)
            with pytest.raises(HardwareError, match=r"backends.coppeliasim.joint_paths\[2\] = '/joint1' .*more than "
                                                    r"one object.*'/arm/joint1'"):
                hw.configure()
            hw.close()
    finally:
        sim.removeObjects([twin])


@pytest.mark.parametrize("api", ["4.6", "4.8"])
def test_the_current_api_where_the_server_has_it_the_deprecated_one_where_not(api):
    """CoppeliaSim >= 4.8: the drill signal and the time step as scene properties (setFloatSignal and
    setFloatParam are deprecated there); 4.6 and 4.7 have only the old calls."""
    with start_test_server(None, {}, seed=0, api=api) as srv:
        hw = make_hardware("coppeliasim", load_scene(None, srv.scene_overrides), seed=0, armed=True)
        try:
            hw.configure()
            hw.activate()
            hw.set_drill(True, 9000.0)
            assert srv.report()["signals"]["micromill_drill_rpm"] == 9000.0
        finally:
            hw.close()
        calls = srv.report()["calls"]
    new, old = ("sim.setFloatProperty",), ("sim.setFloatSignal", "sim.setFloatParam")
    used, unused = (new, old) if api == "4.8" else (old, new)
    assert all(calls.get(c, 0) > 0 for c in used) and all(calls.get(c, 0) == 0 for c in unused), calls


def test_the_wire_protocol_reply_shapes(server):
    ctx = zmq.Context.instance()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(f"tcp://127.0.0.1:{server.rpc_port}")
    me = str(uuid.uuid4())

    def ask(func, *args, **extra):
        req.send(cbor2.dumps({"func": func, "args": list(args), "argsL": len(args), "uuid": me, **extra}))
        return cbor2.loads(req.recv())

    try:
        assert ask("zmqRemoteApi.require", "sim", ver=2, lang="python", timeout=600) == {"ret": []}
        info = ask("zmqRemoteApi.info", "sim")["ret"][0]
        assert info["getJointPosition"] == {"func": {}} and info["step"] == {"func": {}}
        assert info["handle_world"] == {"const": -1} and info["floatparam_simulation_time_step"] == {"const": 1}
        t = ask("sim.getSimulationTime")
        assert set(t) == {"ret"} and len(t["ret"]) == 1 and isinstance(t["ret"][0], float)
        assert ask("sim.noSuch") == {"err": "No such function: sim.noSuch"}
        assert set(ask("sim.getObject", "/nothing_here")) == {"err"}
        assert ask("sim.getObject", "/nothing_here", {"noError": True}) == {"ret": [-1]}
        assert ask("sim.step") == {"func": "_*wait*_", "args": []}
        assert ask("_*executed*_") == {"ret": []}
        req.send(cbor2.dumps({"func": "sim.getSimulationTime", "args": []}))        # no uuid: an old client
        assert cbor2.loads(req.recv())["success"] is False
        assert ask("_*end*_") == {}
    finally:
        req.close()


def _hw_check_suite(server, armed_in_scene: bool):
    from scenarios.suite import suite_from_dict
    from scenes.schema import load_toml

    raw = load_toml("scenarios/hw_check.toml")
    raw["suite"]["backend"] = "coppeliasim"
    overrides = {**server.scene_overrides, "safety.armed": armed_in_scene}
    raw["parameters"]["scene"] = {k: {"choices": [v]} for k, v in overrides.items()}
    return suite_from_dict(raw, "hw_check (coppeliasim)")


def test_hw_check_as_a_dry_run_sends_nothing(server, tmp_path):
    """The any-backend suite through the test server, unarmed: it runs the checks that need no motion
    and changes nothing in the simulation. (Armed, the same checks run in tests/test_hw_contract.py.)
    Against a running simulation every dry-run check passes; against a stopped one (which a dry
    run may not start) the joint states cannot be fresh: the joint_state check is skipped with
    that reason in the notes, and the other three pass."""
    import json

    from scenarios.runner import run_suite

    before = _changing_calls(server)
    dry = run_suite(_hw_check_suite(server, True), tmp_path / "stopped", progress=False, armed=False)
    assert dry["metrics"]["contract_checks_passed"]["value"] == 1.0
    case = json.loads((tmp_path / "stopped" / "cases.jsonl").read_text().splitlines()[0])
    assert "simulation is stopped" in case["notes"]["skipped_checks"]["joint_state"]
    assert "joint_state" not in case["notes"]["checks_run"]
    server.run_free()
    try:
        dry = run_suite(_hw_check_suite(server, True), tmp_path / "running", progress=False, armed=False)
        assert dry["metrics"]["contract_checks_passed"]["value"] == 1.0
        assert math.isnan(dry["metrics"]["reach_error_m"]["value"]) and not dry["passed"]   # nothing moved
        assert _changing_calls(server) == before
    finally:
        _stop_simulation(server)
