"""The hardware contract, written once and run against every backend that drives a robot:
the embedded twin, the mock (servo model only, fixed images), CoppeliaSim (the twin-backed test
server speaking its ZeroMQ protocol, in a subprocess, through the official client) and
SmartArmStack (the twin-backed SAS driver node in a subprocess, over real DDS). Each peer starts
once per module; fault cases included. The embedded backends with a simulated clock (twin, mock)
also get the seeded determinism check. Also here: the registry (unknown names, plugins from entry
points) and the mock's own rules."""
import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest

from hw_bridge import registry
from hw_bridge.backends.mock import MockHardware
from hw_bridge.checker import CHECKS, FAULT_CHECKS, check_hardware, check_seeded_determinism, check_stereo
from hw_bridge.errors import HardwareError
from hw_bridge.registry import UnknownBackendError, backend_names, get_backend, make_hardware
from scenes.spec import load_scene

#: backends that drive a robot (replay only plays a recording back)
CONTRACT_BACKENDS = ["twin", "mock", "coppeliasim", "sas"]
#: backends built in this process, without a peer; they inject faults themselves
EMBEDDED = ("twin", "mock")
#: the mock's fixed stereo pair (a seeded texture, so the images are worth comparing)
MOCK_IMAGES = tuple(np.random.default_rng(k).integers(0, 256, (120, 160, 3), dtype=np.uint8) for k in (1, 2))
#: the SAS twin driver runs in real time: a 10 ms period keeps two processes light on a 2-core CI machine
SAS_OVERRIDES = {"control.period_s": 0.01}


class _EmbeddedPeer:
    """The twin needs no peer process; the hardware object itself injects faults."""

    scene_overrides: dict = {}


@pytest.fixture(scope="module", params=CONTRACT_BACKENDS)
def peer(request):
    """(backend name, the peer: scene_overrides for the client and FaultInjector)."""
    if request.param in EMBEDDED:
        yield request.param, _EmbeddedPeer()
    elif request.param == "coppeliasim":
        from hw_bridge.test_peers.coppeliasim_server import start_test_server

        with start_test_server(None, {}, seed=0) as server:
            yield "coppeliasim", server
    else:
        from hw_bridge.test_peers.sas_driver import start_sas_twin

        with start_sas_twin(None, SAS_OVERRIDES, seed=0) as driver:
            yield "sas", driver


def _make(peer):
    name, p = peer
    if hasattr(p, "home"):
        p.home()                   # a long-lived peer: every check starts from the home pose
    options = {"images": MOCK_IMAGES} if name == "mock" else {}
    return make_hardware(name, load_scene(None, p.scene_overrides), seed=0, armed=name not in EMBEDDED, **options)


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_contract(check, peer):
    hw = _make(peer)
    try:
        CHECKS[check](hw)
    finally:
        hw.close()


@pytest.mark.parametrize("fault", sorted(FAULT_CHECKS))
def test_fault_stops_the_run(fault, peer):
    hw = _make(peer)
    injector = hw if peer[0] in EMBEDDED else peer[1]
    try:
        FAULT_CHECKS[fault](hw, injector)
    finally:
        injector.clear()
        hw.close()


def test_seeded_determinism(peer):
    """Same seed, same commands: the same joint states and images (backends with a simulated clock;
    the CoppeliaSim and SAS peers are long-lived processes shared by the checks, so a second instance
    does not start from the same state; SAS is real time)."""
    if peer[0] not in EMBEDDED:
        pytest.skip(f"{peer[0]}: its peer outlives one instance; determinism is checked on embedded backends")
    check_seeded_determinism(lambda: _make(peer))


def test_checker_catches_a_backend_that_skips_validation(scene):
    """The checker can fail: a backend whose write() bypasses validation is caught."""
    base = get_backend("twin")

    class Careless(base):
        name = "careless"

        def write(self, q_target):
            self._write(np.asarray(q_target, dtype=float))

    with pytest.raises(AssertionError, match="careless"):
        check_hardware(lambda: Careless(scene, 0))


def test_checker_catches_a_backend_that_is_not_deterministic(scene):
    class Noisy(MockHardware):
        name = "noisy"

        def _read(self):                      # unseeded noise on the velocities: two runs differ
            s = super()._read()
            noise = np.random.default_rng().normal(0, 1e-12, s.velocity.shape)
            return type(s)(s.stamp_s, s.position, s.velocity + noise)

    with pytest.raises(AssertionError, match="joint states differ"):
        check_seeded_determinism(lambda: Noisy(scene, 0), duration_s=0.01)
    with pytest.raises(AssertionError, match="noisy.*seeded_determinism"):
        check_hardware(lambda: Noisy(scene, 0, images=MOCK_IMAGES))


def test_unknown_backend_lists_valid_ones(scene):
    with pytest.raises(UnknownBackendError) as exc:
        make_hardware("gazebo", scene)
    assert "gazebo" in str(exc.value) and "twin" in str(exc.value)


def test_unknown_backend_suggests_the_closest_name(scene):
    with pytest.raises(UnknownBackendError) as exc:
        make_hardware("twn", scene)
    assert str(exc.value).startswith("unknown backend 'twn'; did you mean 'twin'? known: ")
    assert "mock" in str(exc.value) and "sas" in str(exc.value)
    with pytest.raises(UnknownBackendError, match="did you mean 'coppeliasim'"):
        get_backend("copelliasim")
    with pytest.raises(UnknownBackendError) as exc:
        get_backend("xyzzy")
    assert "did you mean" not in str(exc.value)


@pytest.fixture
def plugins(monkeypatch):
    """The registry as if the given entry points were installed (a fresh copy, read lazily)."""
    seen = []

    def install(*eps):
        def fake_entry_points(*, group):
            seen.append(group)
            return [ep for ep in eps if ep.group == group]

        monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        monkeypatch.setattr(registry, "_plugins_loaded", False)
        monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
        return seen

    return install


def _ep(name, value, group=registry.ENTRY_POINT_GROUP):
    return importlib.metadata.EntryPoint(name=name, value=value, group=group)


def test_backends_from_other_packages_via_entry_points(plugins, scene):
    seen = plugins(_ep("fakebot", "hw_bridge.backends.mock:MockHardware"),
                   _ep("later", "micromill_not_installed.backend:Later"),
                   _ep("twin", "micromill_not_installed.backend:Twin"),              # cannot replace a built-in
                   _ep("elsewhere", "hw_bridge.backends.mock:MockHardware", group="other.group"))
    assert get_backend("twin").__name__ == "TwinHardware"
    assert seen == []                                        # built-in names never read the entry points
    assert get_backend("fakebot") is MockHardware            # read on the first unknown name
    assert seen == [registry.ENTRY_POINT_GROUP]
    names = backend_names()
    assert {"fakebot", "later"} <= set(names) and "elsewhere" not in names
    assert seen == [registry.ENTRY_POINT_GROUP]              # read once
    assert registry._REGISTRY["twin"].target == "hw_bridge.backends.twin:TwinHardware"
    hw = make_hardware("fakebot", scene)
    assert isinstance(hw, MockHardware)
    hw.close()
    with pytest.raises(ModuleNotFoundError, match="micromill_not_installed"):   # imported only when chosen
        get_backend("later")
    with pytest.raises(UnknownBackendError, match="did you mean 'fakebot'"):
        get_backend("fakebott")


def test_a_plugin_must_name_a_hardware_class(plugins):
    plugins(_ep("notabackend", "hw_bridge.registry:make_hardware"))
    with pytest.raises(TypeError, match="not a hw_bridge.interface.Hardware subclass"):
        get_backend("notabackend")


def test_mock_builds_no_world():
    """The mock is for tests where the twin is not the point: it imports no PyBullet and builds no
    world (its speed is a benchmark matter, not a test's)."""
    code = ("import sys; from scenes.spec import load_scene; from hw_bridge.registry import make_hardware; "
            "hw = make_hardware('mock', load_scene()); hw.configure(); hw.activate(); hw.close(); "
            "assert 'pybullet' not in sys.modules and 'twin.world' not in sys.modules, 'the mock built a world'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mock_servo_is_the_exact_first_order_lag(scene):
    hw = make_hardware("mock", scene)
    hw.configure()
    hw.activate()
    assert hw.read().stamp_s == 0.0 and hw.now() == 0.0
    q0 = hw.read().position
    dq = np.where(np.arange(q0.size) == 3, 0.5 * hw.limits.velocity_max[3] * hw.period_s, 0.0)
    alpha = 1 - np.exp(-hw.period_s / scene.robot.servo_time_constant_s)
    hw.write(q0 + dq)
    q = q0.copy()
    for k in range(1, 30):
        hw.advance()
        q = q + (q0 + dq - q) * alpha
        s = hw.read()
        assert hw.now() == pytest.approx(k * hw.period_s, abs=1e-15)
        np.testing.assert_allclose(s.position, q, rtol=0, atol=1e-15)
        assert s.stamp_s == pytest.approx(hw.now() - scene.sensors.joint_states.delay_s, abs=1e-12)
    np.testing.assert_allclose(hw.true_state()[0], q, atol=1e-15)
    hw.set_drill(True, 12000.0)
    assert hw.drill_state().on and hw.drill_state().speed_rpm == 12000.0
    assert not hw.realtime and not hw.moves_real_robot and hw.armed
    hw.close()


def test_mock_without_images_has_no_cameras(scene):
    hw = make_hardware("mock", scene)
    assert not hw.has_cameras
    check_stereo(hw)                           # the checker's rule for a backend without cameras
    with pytest.raises(HardwareError, match="uint8"):
        make_hardware("mock", scene, images=(np.zeros((4, 4, 3)), np.zeros((4, 4, 3))))
    with pytest.raises(HardwareError, match="differ in size"):
        make_hardware("mock", scene, images=(MOCK_IMAGES[0], MOCK_IMAGES[1][:10]))


def test_backends_import_lazily():
    code = ("import sys, hw_bridge.registry as r; "
            "assert 'pybullet' not in sys.modules and 'hw_bridge.backends.twin' not in sys.modules; "
            "r.get_backend('twin'); assert 'pybullet' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _run(scene, seed, steps=400):
    hw = make_hardware("twin", scene, seed)
    hw.configure()
    hw.activate()
    q0 = hw.read().position
    states, frames = [], []
    for k in range(steps):
        q = q0 + np.sin(k / 50) * 0.5 * hw.limits.velocity_max * hw.period_s * 50 * np.array([0, 0, 1, 1, 0, 0, 0, 0])
        hw.write(q)
        hw.advance()
        states.append(hw.read().position)
        f = hw.grab_stereo()
        if f is not None and (not frames or frames[-1][0] != f.index):
            frames.append((f.index, f.left.copy()))
    hw.close()
    return np.array(states), frames


def test_same_seed_same_run(scene):
    s1, f1 = _run(scene, 7)
    s2, f2 = _run(scene, 7)
    s3, _ = _run(scene, 8)
    assert np.array_equal(s1, s2)
    assert len(f1) == len(f2) > 5 and all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(f1, f2))
    assert not np.array_equal(s1, s3)          # joint noise differs with the seed


@pytest.mark.parametrize("backend, options", [("twin", {}), ("mock", {"images": MOCK_IMAGES})])
def test_camera_delay_and_rate(scene, backend, options):
    hw = make_hardware(backend, scene, 0, **options)
    hw.configure()
    hw.activate()
    cs = scene.sensors.cameras
    seen = []
    while hw.now() < 0.5:
        f = hw.grab_stereo()
        if f is not None:
            age = hw.now() - f.stamp_s
            assert cs.delay_s - 1e-9 <= age <= cs.delay_s + 1 / cs.rate_hz + 1e-9
            if "images" in options:                # the mock's fixed images, unchanged
                assert np.array_equal(f.left, options["images"][0]) and np.array_equal(f.right, options["images"][1])
            seen.append(f.index)
        else:
            assert hw.now() < cs.delay_s + 1e-9
        hw.write(hw.read().position)
        hw.advance()
    hw.close()
    assert sorted(set(seen)) == list(range(max(seen) + 1))


class _TooFast(MockHardware):
    """A robot that moves 10 % farther than commanded (so 10 % over its speed limit at full speed);
    ``position_only``: it reports no velocities, the client estimates them from two samples."""

    name = "too_fast"

    def __init__(self, scene, seed, position_only: bool):
        super().__init__(scene, seed)
        self._position_only = position_only
        self._previous = None

    def _read(self):
        s = super()._read()
        home = self._scene.robot.home_q
        q = home + 1.1 * (s.position - home)
        v = 1.1 * s.velocity
        if self._position_only:
            p = self._previous
            v = (q - p.position) / (s.stamp_s - p.stamp_s) if p is not None and s.stamp_s > p.stamp_s else 0 * q
            self._previous = type(s)(s.stamp_s, q, v)
        return type(s)(s.stamp_s, q, v)


@pytest.mark.parametrize("position_only", [False, True])
def test_velocity_check_catches_a_robot_10_percent_too_fast(scene, position_only):
    """The allowance for noisy joint states (tests/test_sas_backend.py) does not hide a robot that is
    really too fast."""
    with pytest.raises(AssertionError, match=r"1\.1000 x its limit"):
        CHECKS["velocity_limits"](_TooFast(scene, 0, position_only))


def test_follows_commands_catches_joints_that_ignore_commands(scene):
    hw = MockHardware(scene, 0)
    hw.faults.inject("ignore_commands")
    with pytest.raises(AssertionError, match=r"the robot did not follow the commands: joint 0 commanded [+-]0\.000873 "
                                             r"rad, measured \+0 rad; joint 1 commanded [+-]0\.0005 m"):
        CHECKS["follows_commands"](hw)
