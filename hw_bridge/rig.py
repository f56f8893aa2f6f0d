"""What the controllers may know about the rig: a small named description, not the scene.

A real lab knows its robot's description (kinematics, joint limits), its control period, its
cameras' image size, the drill it mounted and the calibration setpoints it chose. It does not
know the skull's true pose or the cameras' true intrinsics. ``RigDescription`` holds exactly
the first list; ``Hardware.rig`` hands it to the controllers, and the scene (with the second
list) stays inside ``hw_bridge`` and the twin.

Units: SI (m, rad, s); image size in pixels and drill speed in rpm, as the names say.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenes.robot_description import RobotDescription
from scenes.spec import DrillSpec


@dataclass(frozen=True)
class JointLimits:
    position_min: np.ndarray   # rad | m
    position_max: np.ndarray
    velocity_max: np.ndarray   # rad/s | m/s (symmetric)


@dataclass(frozen=True)
class RigDescription:
    """The rig as the controllers see it."""

    robot: RobotDescription
    limits: JointLimits
    period_s: float                        # control period
    image_width_px: int
    image_height_px: int
    drill: DrillSpec                       # the mounted drill (m; rpm): the one source of the burr radius rd
    calibration_targets_r: np.ndarray      # (k, 3) absolute tip setpoints in {R} for landmark calibration (m)

    @property
    def image_size_px(self) -> tuple[int, int]:
        """(width, height) of each MSCS image."""
        return self.image_width_px, self.image_height_px

    @classmethod
    def from_scene(cls, scene, robot: RobotDescription) -> "RigDescription":
        """The lab-known part of a scene (``scenes.spec.SceneSpec``)."""
        limits = JointLimits(robot.q_min.copy(), robot.q_max.copy(), np.minimum(-robot.qd_min, robot.qd_max))
        return cls(robot, limits, float(scene.control_period_s), int(scene.mscs.width_px), int(scene.mscs.height_px),
                   scene.drill, np.asarray(scene.calibration_targets_r(), float))
