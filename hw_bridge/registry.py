"""Backends registered by name and imported only when chosen (Gymnasium-style).

A backend's module is imported on ``get_backend`` / ``make_hardware``, so ROS 2 or ZMQ are
never imported unless that backend is picked.

Other packages add backends through the entry-point group ``micromill.backends``: each entry
point's name is the backend's name and its value ``"module:Class"`` (a ``Hardware`` subclass),
e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."micromill.backends"]
    ur5 = "micromill_ur5.backend:Ur5Hardware"

The group is read once, the first time a name is looked up that is not built in (or the list of
backends is asked for); the plugin's module is imported only when its backend is chosen. A
plugin cannot replace a built-in backend (its entry point is skipped with a warning). An
unknown name is refused with the closest known one suggested.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import logging
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
#: the entry-point group that other packages register backends in
ENTRY_POINT_GROUP = "micromill.backends"
_plugins_loaded = False
log = logging.getLogger("micromill.hw_bridge.registry")


def register(name: str, target: str, summary: str, requires: tuple[str, ...] = ()) -> None:
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered ({_REGISTRY[name].target})")
    _REGISTRY[name] = BackendEntry(name, target, summary, requires)


def _entry_points():
    """The installed entry points of ``ENTRY_POINT_GROUP`` (a function of its own, so tests can replace it)."""
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _load_plugins() -> None:
    """Register the backends of other packages (entry points), once; their modules are not imported."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        source = f"entry point {ep.name} = {ep.value!r} of " + (dist.name if dist is not None else "a package")
        if ep.name in _REGISTRY:
            log.warning("ignoring the %s: backend %r is already registered (%s)", source, ep.name,
                        _REGISTRY[ep.name].target)
            continue
        if not ep.attr:
            log.warning("ignoring the %s: its value must be \"module:Class\"", source)
            continue
        _REGISTRY[ep.name] = BackendEntry(ep.name, f"{ep.module}:{ep.attr}", f"plugin backend ({source})")


def backend_names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def backends() -> list[BackendEntry]:
    return [_REGISTRY[n] for n in backend_names()]


def backend_available(name: str) -> tuple[bool, str]:
    """Whether the modules backend ``name`` needs are installed (found, not imported), and if not, which."""
    if name not in _REGISTRY:
        _load_plugins()
    missing = [m for m in _REGISTRY[name].requires if importlib.util.find_spec(m) is None]
    return (not missing, f"missing {', '.join(missing)}" if missing else "")


class UnknownBackendError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return self.args[0]


def get_backend(name: str):
    """The backend class registered as ``name`` (imports its module now)."""
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        known = backend_names()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownBackendError(f"unknown backend {name!r}{hint} known: {', '.join(known)}")
    entry = _REGISTRY[name]
    module, attr = entry.target.split(":")
    cls = importlib.import_module(module)
    for part in attr.split("."):
        cls = getattr(cls, part)
    from hw_bridge.interface import Hardware

    if not (isinstance(cls, type) and issubclass(cls, Hardware)):
        raise TypeError(f"backend {name!r}: {entry.target} is not a hw_bridge.interface.Hardware subclass")
    return cls


def backend_armed(name: str, armed_flag: bool, scene: SceneSpec, source: str | None = None) -> bool:
    """Whether backend ``name`` would send commands for this run (``hw_bridge.safety.arming_decision``,
    decided before anything is built); ArmingError, naming ``source`` (default: the scene file), on a
    half-armed request."""
    return arming_decision(get_backend(name).moves_real_robot, armed_flag, scene.safety, source or scene.source)


def make_hardware(name: str, scene: SceneSpec, seed: int = 0, *, armed: bool = False, recorder=None, **options):
    """Construct (not configure) the hardware interface of backend ``name``.

    ``armed``: the ``--arm`` flag (a robot that really moves also needs ``safety.armed`` in the
    scene; see ``hw_bridge.safety``); ``recorder``: a ``hw_bridge.recording.McapRecorder`` or None,
    closed here if the backend cannot be built (so no half-written file is left open); ``options``:
    keyword arguments of that backend's constructor (e.g. ``images=(left, right)`` for ``mock``).
    """
    try:
        return get_backend(name)(scene, seed, armed=armed, recorder=recorder, **options)
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
register("mock", "hw_bridge.backends.mock:MockHardware",
         "the robot as its servo model alone (first-order lag, simulated clock), no world: fast, for tests of "
         "safety, motion and planning; cameras only with fixed images (images=(left, right)); needs nothing extra")
register("replay", "hw_bridge.backends.replay:ReplayHardware",
         "feeds a recorded run (MCAP, [backends.replay] recording) back through the controllers offline; "
         "needs nothing extra (mcap is a core dependency)")
