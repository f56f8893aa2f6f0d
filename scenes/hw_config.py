"""Scene tables for the hardware side: ``[safety]`` and ``[backends.*]`` (typed, checked at load).

``[safety]`` is read by every backend (``hw_bridge.safety``). Each ``[backends.<name>]``
table configures one backend and is ignored by the others; all are optional and default to
the values below, so a scene written for the twin needs none of them.

Units: SI in the dataclasses; the file uses mm where the name says so (``*_mm_s``: mm in
the skull frame {S}).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from scenes.schema import Reader

MM = 1e-3
#: a ROS 2 topic or prefix: "/" then names of letters, digits and "_", separated by "/"
_ROS_NAME = re.compile(r"^(/[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class SafetySpec:
    """What the safety layer enforces on every backend (``hw_bridge.safety``).

    ``armed`` is the configuration half of arming a robot that really moves (CoppeliaSim,
    SmartArmStack): commands reach it only when this is true AND the run was started with
    ``--arm``; otherwise the run is a dry run that logs what it would send.
    """

    armed: bool
    workspace_min_s: np.ndarray        # (3,) m: tool (burr centre) box in the skull frame {S}
    workspace_max_s: np.ndarray        # (3,) m
    max_joint_state_age_s: float       # older joint states stop the run
    max_image_age_s: float             # older stereo frames (or none for this long after activation) stop it
    control_deadline_s: float          # wall time between advance() calls on real-time backends


@dataclass(frozen=True)
class CoppeliaSimSpec:
    host: str
    port: int
    connect_timeout_s: float           # the client itself would block forever
    joint_paths: tuple[str, ...]       # CoppeliaSim object paths of the 8 joints, rail first
    left_sensor_path: str              # vision sensors ("" = no cameras)
    right_sensor_path: str
    populate: bool                     # add the skull mesh and the MSCS sensors on configure


@dataclass(frozen=True)
class RigCamerasSpec:
    """The MSCS cameras of the real rig: ``none``, two OpenCV capture devices, or two image topics."""

    kind: str                          # "none" | "opencv" | "image_topics"
    left_device: str                   # OpenCV: a device index ("0") or a path/URL
    right_device: str
    left_topic: str                    # sensor_msgs/Image topics
    right_topic: str


@dataclass(frozen=True)
class SasSpec:
    prefix: str                        # SmartArmStack robot-driver prefix, e.g. "/arm1"
    ros_domain_id: int
    enable_timeout_s: float            # wait this long for joint states and both limit arrays
    limits_tolerance: float            # rad | m: driver limits vs the robot description
    drill: str                         # "manual" (ask the operator) | "none" (log only)
    cameras: RigCamerasSpec


@dataclass(frozen=True)
class ReplaySpec:
    recording: str                     # path of an MCAP file written by a recorded run ("" = none)


@dataclass(frozen=True)
class BackendsSpec:
    coppeliasim: CoppeliaSimSpec
    sas: SasSpec
    replay: ReplaySpec


DEFAULT_JOINT_PATHS = ("/rail", "/stage", "/joint1", "/joint2", "/joint3", "/joint4", "/joint5", "/joint6")


def read_safety(top: Reader, errors: list[str]) -> SafetySpec:
    s = top.sub("safety")
    lo = np.array(s.vector("workspace_min_mm_s", 3, -1e3, 1e3, [-40.0, -40.0, -3.0])) * MM
    hi = np.array(s.vector("workspace_max_mm_s", 3, -1e3, 1e3, [40.0, 40.0, 40.0])) * MM
    if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.any(lo >= hi):
        errors.append(f"safety.workspace_min_mm_s={(lo / MM).tolist()} must be below "
                      f"safety.workspace_max_mm_s={(hi / MM).tolist()} on every axis")
    spec = SafetySpec(s.boolean("armed", False), lo, hi,
                      s.number("max_joint_state_age_s", 1e-3, 10.0, 0.1),
                      s.number("max_image_age_s", 1e-3, 60.0, 0.5),
                      s.number("control_deadline_s", 1e-3, 10.0, 0.1))
    s.finish()
    return spec


#: ROS 2 domain ids (ROS_DOMAIN_ID)
ROS_DOMAIN_IDS = (0, 232)


def ros_name_problem(field: str, value: str) -> str | None:
    """None when ``value`` is a ROS 2 topic or prefix ("/a/b"); else a message naming ``field``."""
    if isinstance(value, str) and _ROS_NAME.match(value):
        return None
    return f"{field}={value!r} is not a ROS 2 name (\"/a/b\": letters, digits and _)"


def _ros_name(r: Reader, key: str, default: str, errors: list[str]) -> str:
    value = r.string(key, default=default)
    problem = ros_name_problem(r.name(key), value)
    if problem is not None:
        errors.append(problem)
    return value


def read_backends(top: Reader, errors: list[str]) -> BackendsSpec:
    b = top.sub("backends")

    c = b.sub("coppeliasim")
    paths = c.raw("joint_paths", list(DEFAULT_JOINT_PATHS))
    if not isinstance(paths, list) or len(paths) != 8 or not all(isinstance(p, str) and p for p in paths):
        errors.append(f"backends.coppeliasim.joint_paths={paths!r} must be a list of 8 non-empty object paths "
                      f"(rail, stage, then the six arm joints)")
        paths = list(DEFAULT_JOINT_PATHS)
    coppeliasim = CoppeliaSimSpec(
        host=c.string("host", default="localhost"),
        port=c.integer("port", 1, 65535, 23000),
        connect_timeout_s=c.number("connect_timeout_s", 0.1, 600.0, 5.0),
        joint_paths=tuple(paths),
        left_sensor_path=c.string("left_sensor_path", default="/mscs_left"),
        right_sensor_path=c.string("right_sensor_path", default="/mscs_right"),
        populate=c.boolean("populate", True))
    if bool(coppeliasim.left_sensor_path) != bool(coppeliasim.right_sensor_path):
        errors.append("backends.coppeliasim.left_sensor_path and right_sensor_path must both be set or both be \"\"")
    if not coppeliasim.host:
        errors.append("backends.coppeliasim.host must not be empty")
    c.finish()

    s = b.sub("sas")
    cam = s.sub("cameras")
    cameras = RigCamerasSpec(
        kind=cam.string("kind", ("none", "opencv", "image_topics"), "image_topics"),
        left_device=cam.string("left_device", default="0"),
        right_device=cam.string("right_device", default="1"),
        left_topic=_ros_name(cam, "left_topic", "/mscs/left/image_raw", errors),
        right_topic=_ros_name(cam, "right_topic", "/mscs/right/image_raw", errors))
    cam.finish()
    sas = SasSpec(
        prefix=_ros_name(s, "prefix", "/arm1", errors),
        ros_domain_id=s.integer("ros_domain_id", *ROS_DOMAIN_IDS, 0),
        enable_timeout_s=s.number("enable_timeout_s", 0.1, 600.0, 5.0),
        limits_tolerance=s.number("limits_tolerance", 0.0, 0.1, 1e-6),
        drill=s.string("drill", ("manual", "none"), "manual"),
        cameras=cameras)
    s.finish()

    r = b.sub("replay")
    replay = ReplaySpec(r.string("recording", default=""))
    r.finish()
    b.finish()
    return BackendsSpec(coppeliasim, sas, replay)
