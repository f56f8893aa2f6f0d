"""Scene tables for the hardware side: ``[safety]`` and ``[backends.*]`` (typed, checked at load).

``[safety]`` is read by every backend (``hw_bridge.safety``). Each ``[backends.<name>]``
table configures one backend and is ignored by the others; all are optional and default to
the values below, so a scene written for the twin needs none of them.

Units: SI in ``SafetySpec``; the file uses mm where the name says so (``*_mm_s``: mm in the
skull frame {S}). The ``[backends.*]`` models are used as they are (their units are SI).
Each field is defined once, in the pydantic models below, with bounds and description.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, Strict, model_validator

from scenes.fields import FROZEN, Bool, Int, Name, Real, cross_field_error

MM = 1e-3
#: a ROS 2 topic or prefix: "/" then names of letters, digits and "_", separated by "/"
_ROS_NAME = re.compile(r"^(/[A-Za-z_][A-Za-z0-9_]*)+$")
#: ROS 2 domain ids (ROS_DOMAIN_ID)
ROS_DOMAIN_IDS = (0, 232)
DEFAULT_JOINT_PATHS = ("/rail", "/stage", "/joint1", "/joint2", "/joint3", "/joint4", "/joint5", "/joint6")


def ros_name_problem(field: str, value: str) -> str | None:
    """None when ``value`` is a ROS 2 topic or prefix ("/a/b"); else a message naming ``field``."""
    if isinstance(value, str) and _ROS_NAME.match(value):
        return None
    return f"{field}={value!r} is not a ROS 2 name (\"/a/b\": letters, digits and _)"


def _ros_name(value: str) -> str:
    if not _ROS_NAME.match(value):
        raise ValueError('is not a ROS 2 name ("/a/b": letters, digits and _)')
    return value


RosName = Annotated[str, Strict(), AfterValidator(_ros_name)]
WorkspaceMm = tuple[Annotated[Real, Field(ge=-1e3, le=1e3)], Annotated[Real, Field(ge=-1e3, le=1e3)],
                    Annotated[Real, Field(ge=-1e3, le=1e3)]]


class SafetyFile(BaseModel):
    """``[safety]``: what the safety layer enforces on every backend (``hw_bridge.safety``)."""

    model_config = FROZEN

    armed: Bool = Field(False, description="the configuration half of arming a robot that really moves "
                                           "(also needs --arm); otherwise a dry run")
    workspace_min_mm_s: WorkspaceMm = Field((-40.0, -40.0, -3.0),
                                            description="tool (burr centre) box in the skull frame {S}: lower corner")
    workspace_max_mm_s: WorkspaceMm = Field((40.0, 40.0, 40.0), description="the box's upper corner")
    max_joint_state_age_s: Real = Field(0.1, ge=1e-3, le=10.0, description="older joint states stop the run")
    max_image_age_s: Real = Field(0.5, ge=1e-3, le=60.0,
                                  description="older stereo frames (or none this long after activation) stop the run")
    control_deadline_s: Real = Field(0.1, ge=1e-3, le=10.0,
                                     description="wall time between advance() calls on real-time backends")
    tracking_lag_s: Real = Field(0.15, ge=1e-3, le=10.0,
                                 description="armed: a joint may trail its command by what it covers at its velocity "
                                             "limit in this time (servo lag + joint-state delay + margin)")
    tracking_timeout_s: Real = Field(0.1, ge=1e-3, le=10.0,
                                     description="armed: a joint farther from its command than that for longer "
                                                 "than this stops the run (it does not follow its commands)")

    @model_validator(mode="after")
    def _box(self) -> "SafetyFile":
        if any(lo >= hi for lo, hi in zip(self.workspace_min_mm_s, self.workspace_max_mm_s)):
            raise cross_field_error("workspace_min_mm_s", list(self.workspace_min_mm_s),
                                    "below {sibling:workspace_max_mm_s} on every axis")
        return self


@dataclass(frozen=True)
class SafetySpec:
    """What the safety layer enforces on every backend (``hw_bridge.safety``), SI.

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
    tracking_lag_s: float              # armed: tolerance on |command - measured| = velocity limit x this
    tracking_timeout_s: float          # armed: beyond the tolerance for longer than this stops the run

    @classmethod
    def from_file(cls, f: SafetyFile) -> "SafetySpec":
        return cls(f.armed, np.array(f.workspace_min_mm_s) * MM, np.array(f.workspace_max_mm_s) * MM,
                   f.max_joint_state_age_s, f.max_image_age_s, f.control_deadline_s, f.tracking_lag_s,
                   f.tracking_timeout_s)


class CoppeliaSimSpec(BaseModel):
    """``[backends.coppeliasim]``."""

    model_config = FROZEN

    host: Name = Field("localhost", description="host of the CoppeliaSim ZeroMQ remote API")
    port: Int = Field(23000, ge=1, le=65535, description="its port")
    connect_timeout_s: Real = Field(5.0, ge=0.1, le=600.0, description="give up connecting after this (the client "
                                                                         "itself would block forever)")
    joint_paths: tuple[Name, Name, Name, Name, Name, Name, Name, Name] = Field(
        DEFAULT_JOINT_PATHS, description="CoppeliaSim object paths of the 8 joints: rail, stage, the six arm joints")
    left_sensor_path: Annotated[str, Strict()] = Field("/mscs_left", description='vision sensor ("" = no cameras)')
    right_sensor_path: Annotated[str, Strict()] = Field("/mscs_right", description='vision sensor ("" = no cameras)')
    populate: Bool = Field(True, description="armed: add the skull mesh and the MSCS sensors on configure")
    stop_running_simulation: Bool = Field(False, description="armed: stop a simulation found running (another "
                                                             "client's or a crashed run's) instead of refusing")

    @model_validator(mode="after")
    def _both_sensors(self) -> "CoppeliaSimSpec":
        if bool(self.left_sensor_path) != bool(self.right_sensor_path):
            raise cross_field_error("left_sensor_path", self.left_sensor_path,
                                    'set together with {sibling:right_sensor_path} (both set or both "")')
        return self


class RigCamerasSpec(BaseModel):
    """``[backends.sas.cameras]``: the MSCS cameras of the real rig."""

    model_config = FROZEN

    kind: Literal["none", "opencv", "image_topics"] = Field(
        "image_topics", description='"none", "opencv" (two capture devices) or "image_topics"')
    left_device: Name = Field("0", description='OpenCV: a device index ("0") or a path/URL')
    right_device: Name = Field("1", description="OpenCV: the right camera's device")
    left_topic: RosName = Field("/mscs/left/image_raw", description="sensor_msgs/Image topic")
    right_topic: RosName = Field("/mscs/right/image_raw", description="sensor_msgs/Image topic")


class SasSpec(BaseModel):
    """``[backends.sas]``: the SmartArmStack (ROS 2) robot driver."""

    model_config = FROZEN

    prefix: RosName = Field("/arm1", description='SmartArmStack robot-driver prefix, e.g. "/arm1"')
    ros_domain_id: Int = Field(0, ge=ROS_DOMAIN_IDS[0], le=ROS_DOMAIN_IDS[1], description="ROS_DOMAIN_ID")
    enable_timeout_s: Real = Field(5.0, ge=0.1, le=600.0,
                                   description="wait this long for joint states and both limit arrays")
    limits_tolerance: Real = Field(1e-6, ge=0.0, le=0.1,
                                   description="rad | m: driver limits vs the robot description")
    drill: Literal["manual", "none"] = Field("manual", description='"manual" (ask the operator) | "none" (log only)')
    cameras: RigCamerasSpec = Field(default_factory=RigCamerasSpec, description="the rig's cameras")


class ReplaySpec(BaseModel):
    """``[backends.replay]``."""

    model_config = FROZEN

    recording: Annotated[str, Strict()] = Field("", description='MCAP file written by a recorded run ("" = none)')


class BackendsSpec(BaseModel):
    """``[backends]``: one optional table per backend."""

    model_config = FROZEN

    coppeliasim: CoppeliaSimSpec = Field(default_factory=CoppeliaSimSpec, description="CoppeliaSim backend")
    sas: SasSpec = Field(default_factory=SasSpec, description="SmartArmStack backend")
    replay: ReplaySpec = Field(default_factory=ReplaySpec, description="replay backend")
