"""The hardware contract, written once and run against every backend that drives a robot:
the embedded twin, CoppeliaSim (the twin-backed test server speaking its ZeroMQ protocol, in a
subprocess, through the official client) and SmartArmStack (the twin-backed SAS driver node in
a subprocess, over real DDS). Each peer starts once per module; fault cases included."""
import subprocess
import sys

import numpy as np
import pytest

from hw_bridge.checker import CHECKS, FAULT_CHECKS, check_hardware
from hw_bridge.registry import UnknownBackendError, get_backend, make_hardware
from scenes.spec import load_scene

#: backends that drive a robot (replay only plays a recording back)
CONTRACT_BACKENDS = ["twin", "coppeliasim", "sas"]
#: the SAS twin driver runs in real time: a 10 ms period keeps two processes light on a 2-core CI machine
SAS_OVERRIDES = {"control.period_s": 0.01}


class _EmbeddedPeer:
    """The twin needs no peer process; the hardware object itself injects faults."""

    scene_overrides: dict = {}


@pytest.fixture(scope="module", params=CONTRACT_BACKENDS)
def peer(request):
    """(backend name, the peer: scene_overrides for the client and FaultInjector)."""
    if request.param == "twin":
        yield "twin", _EmbeddedPeer()
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
    return make_hardware(name, load_scene(None, p.scene_overrides), seed=0, armed=name != "twin")


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
    injector = hw if peer[0] == "twin" else peer[1]
    try:
        FAULT_CHECKS[fault](hw, injector)
    finally:
        injector.clear()
        hw.close()


def test_checker_catches_a_backend_that_skips_validation(scene):
    """The checker can fail: a backend whose write() bypasses validation is caught."""
    base = get_backend("twin")

    class Careless(base):
        name = "careless"

        def write(self, q_target):
            self._write(np.asarray(q_target, dtype=float))

    with pytest.raises(AssertionError, match="careless"):
        check_hardware(lambda: Careless(scene, 0))


def test_unknown_backend_lists_valid_ones(scene):
    with pytest.raises(UnknownBackendError) as exc:
        make_hardware("gazebo", scene)
    assert "gazebo" in str(exc.value) and "twin" in str(exc.value)


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


def test_camera_delay_and_rate(scene):
    hw = make_hardware("twin", scene, 0)
    hw.configure()
    hw.activate()
    cs = scene.sensors.cameras
    seen = []
    while hw.now() < 0.5:
        f = hw.grab_stereo()
        if f is not None:
            age = hw.now() - f.stamp_s
            assert cs.delay_s - 1e-9 <= age <= cs.delay_s + 1 / cs.rate_hz + 1e-9
            seen.append(f.index)
        else:
            assert hw.now() < cs.delay_s + 1e-9
        hw.write(hw.read().position)
        hw.advance()
    hw.close()
    assert sorted(set(seen)) == list(range(max(seen) + 1))
