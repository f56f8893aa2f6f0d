"""The ``twin`` backend: the embedded PyBullet twin, stepped in lockstep with the controller.

It sends exactly what the real robot sends (joint states, stereo images, timestamps).
Ground truth (skull geometry, true tool pose, render labels) is reachable only through
``ground_truth``, for scoring and training labels; controllers must not use it. Sensor
faults for safety tests are injected on ``ground_truth.faults`` (``twin.faults``).
"""
from __future__ import annotations

import numpy as np

from hw_bridge.errors import ConnectionLost
from hw_bridge.interface import DrillState, Hardware, JointState, StereoFrame
from scenes.spec import SceneSpec
from twin.world import TwinWorld


class TwinHardware(Hardware):
    name = "twin"
    moves_real_robot = False

    def __init__(self, scene: SceneSpec, seed: int = 0, **kwargs):
        super().__init__(scene, seed, **kwargs)
        self._world: TwinWorld | None = None

    @property
    def ground_truth(self) -> TwinWorld:
        """The simulated world itself: for scoring and labels only (sim-only)."""
        if self._world is None:
            raise RuntimeError("twin: configure() first")
        return self._world

    def _on_configure(self) -> None:
        self._world = TwinWorld(self._scene, self.seed)

    def _on_close(self) -> None:
        if self._world is not None:
            self._world.close()

    def _check_connected(self) -> None:
        if self._world.faults.disconnected:
            raise ConnectionLost("the twin stopped answering (injected fault: faults.disconnected)")

    def _read(self) -> JointState:
        self._check_connected()
        s = self._world.latest_joint_sample()
        return JointState(s.stamp_s, s.position.copy(), s.velocity.copy())

    def _write(self, q_target: np.ndarray) -> None:
        self._check_connected()
        self._world.arm.set_target(q_target)

    def _grab_stereo(self) -> StereoFrame | None:
        self._check_connected()
        f = self._world.latest_frame()
        if f is None:
            return None
        return StereoFrame(f.stamp_s, f.index, lambda: f.images.left, lambda: f.images.right)   # rendered when read

    def _set_drill(self, on: bool, speed_rpm: float) -> None:
        self._check_connected()
        self._world.drill_on, self._world.drill_speed_rpm = on, speed_rpm

    def drill_state(self) -> DrillState:
        w = self.ground_truth
        return DrillState(w.drill_on, w.drill_speed_rpm)

    def inject(self, kind: str) -> None:
        """FaultInjector (hw_bridge.checker): a sensor fault in what the twin sends (twin.faults)."""
        self.ground_truth.faults.inject(kind)

    def clear(self) -> None:
        self.ground_truth.faults.clear()

    def now(self) -> float:
        return self.ground_truth.time_s

    def _advance(self) -> None:
        self.ground_truth.step()
