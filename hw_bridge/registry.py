"""Backends registered by name and imported only when chosen (Gymnasium-style).

A backend's module is imported on ``get_backend`` / ``make_hardware``, so ROS 2 or ZMQ are
never imported unless that backend is picked.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from hw_bridge.safety import arming_decision
from scenes.spec import SceneSpec


@dataclass(frozen=True)
class BackendEntry:
    name: str
    target: str          # "module:Class"
    summary: str         # what it is and what it needs
    requires: tuple[str, ...] = ()   # importable modules of its optional extra


_REGISTRY: dict[str, BackendEntry] = {}


def register(name: str, target: str, summary: str, requires: tuple[str, ...] = ()) -> None:
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered ({_REGISTRY[name].target})")
    _REGISTRY[name] = BackendEntry(name, target, summary, requires)


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def backends() -> list[BackendEntry]:
    return [_REGISTRY[n] for n in backend_names()]


def backend_available(name: str) -> tuple[bool, str]:
    """Whether the modules backend ``name`` needs are installed (found, not imported), and if not, which."""
    missing = [m for m in _REGISTRY[name].requires if importlib.util.find_spec(m) is None]
    return (not missing, f"missing {', '.join(missing)}" if missing else "")


class UnknownBackendError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return self.args[0]


def get_backend(name: str):
    """The backend class registered as ``name`` (imports its module now)."""
    if name not in _REGISTRY:
        raise UnknownBackendError(f"unknown backend {name!r}; valid backends: {', '.join(backend_names())}")
    module, cls = _REGISTRY[name].target.split(":")
    return getattr(importlib.import_module(module), cls)


def backend_armed(name: str, armed_flag: bool, scene: SceneSpec, source: str | None = None) -> bool:
    """Whether backend ``name`` would send commands for this run (``hw_bridge.safety.arming_decision``,
    decided before anything is built); ArmingError, naming ``source`` (default: the scene file), on a
    half-armed request."""
    return arming_decision(get_backend(name).moves_real_robot, armed_flag, scene.safety, source or scene.source)


def make_hardware(name: str, scene: SceneSpec, seed: int = 0, *, armed: bool = False, recorder=None):
    """Construct (not configure) the hardware interface of backend ``name``.

    ``armed``: the ``--arm`` flag (a robot that really moves also needs ``safety.armed`` in the
    scene; see ``hw_bridge.safety``); ``recorder``: a ``hw_bridge.recording.McapRecorder`` or None,
    closed here if the backend cannot be built (so no half-written file is left open).
    """
    try:
        return get_backend(name)(scene, seed, armed=armed, recorder=recorder)
    except BaseException:
        if recorder is not None:
            recorder.close()
        raise


register("twin", "hw_bridge.backends.twin:TwinHardware",
         "embedded PyBullet twin of the arm, skull, MSCS cameras and drill (default); needs nothing extra")
register("coppeliasim", "hw_bridge.backends.coppeliasim:CoppeliaSimHardware",
         "a running CoppeliaSim over its ZeroMQ remote API, stepped in lockstep; needs the extra "
         "`pip install -e .[coppeliasim]` and CoppeliaSim listening on [backends.coppeliasim] host:port; "
         "moves only when armed (--arm and safety.armed)",
         requires=("coppeliasim_zmqremoteapi_client", "cbor2", "zmq"))
register("sas", "hw_bridge.backends.sas:SasHardware",
         "the real arm through a SmartArmStack robot driver over ROS 2 ([backends.sas] prefix and domain), "
         "MSCS cameras from OpenCV devices or image topics, a manual drill; needs the extra "
         "`pip install -e .[ros]`; moves only when armed (--arm and safety.armed)",
         requires=("rclpy", "std_msgs", "sensor_msgs"))
register("replay", "hw_bridge.backends.replay:ReplayHardware",
         "feeds a recorded run (MCAP, [backends.replay] recording) back through the controllers offline; "
         "needs nothing extra (mcap is a core dependency)")
