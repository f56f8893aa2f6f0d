"""The ``mock`` backend: the robot as its servo model alone, no world; for tests of the safety layer,
motion and planning where the twin's skull, renderer and PyBullet are not the point.

- Joint servo: each accepted command becomes the target of a first-order lag with the scene's
  ``robot.servo_time_constant_s``, discretised exactly per period and rate-limited by the
  description's velocity limits (the twin's servo model, ``twin.arm.SimArm``, without PyBullet):
  ``step = clip((q_target - q) * (1 - exp(-dt / tau)), qd_min * dt, qd_max * dt)``.
- Clock: simulated, ``control.period_s`` per ``advance()``; not real time.
- Joint states: sampled at ``sensors.joint_states.rate_hz`` and delivered ``delay_s`` later, like
  the twin's, but without encoder noise: the same commands give the same states whatever the seed.
- Cameras: only with fixed images, ``MockHardware(scene, seed, images=(left, right))`` (uint8 BGR,
  (H, W, 3), the same shape; or ``make_hardware("mock", scene, images=...)``): frames are then
  exposed at ``sensors.cameras.rate_hz`` and available ``delay_s`` later, like the twin's, always
  showing these images. Without images ``has_cameras`` is False and ``grab_stereo()`` gives None
  (no blank frames that perception could mistake for a view).
- Drill: its state is kept (on, speed); nothing is milled.
- Faults: ``inject(kind)`` / ``clear()`` provoke the twin's sensor faults (``twin.faults``: NaN,
  frozen or delayed joint states, frozen frames, a disconnect), so the contract suite's fault
  cases (``hw_bridge.checker.FAULT_CHECKS``) run on it too.
- ``moves_real_robot = False``: it always "sends" (nothing real moves). ``true_state()`` gives the
  servo's own joint positions and velocities (sim-only, for tests).

Construction takes well under a millisecond after the scene is loaded: no twin world is built.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from hw_bridge.errors import ConnectionLost, HardwareError
from hw_bridge.interface import DrillState, Hardware, JointState, StereoFrame
from scenes.spec import SceneSpec
from twin.faults import SensorFaults


class MockHardware(Hardware):
    name = "mock"
    moves_real_robot = False
    realtime = False

    def __init__(self, scene: SceneSpec, seed: int = 0, *, images: tuple[np.ndarray, np.ndarray] | None = None,
                 **kwargs):
        super().__init__(scene, seed, **kwargs)
        self._images = None if images is None else _checked_images(images)
        #: injected sensor faults (twin.faults), as on the twin
        self.faults = SensorFaults()
        dt = self.period_s
        self._alpha = 1.0 - np.exp(-dt / scene.robot.servo_time_constant_s)
        self._step_min, self._step_max = self.robot.qd_min * dt, self.robot.qd_max * dt
        self._q = np.array(scene.robot.home_q, dtype=float)
        self._qd = np.zeros_like(self._q)
        self._target = self._q.copy()
        self._step_index = 0
        self._drill = DrillState(False, 0.0)
        self._samples: deque[JointState] = deque()
        self._next_sample_s = 0.0
        self._frozen: JointState | None = None
        self._last_frame: StereoFrame | None = None
        self._sample()

    @property
    def has_cameras(self) -> bool:
        return self._images is not None

    def now(self) -> float:
        return self._step_index * self.period_s

    def true_state(self) -> tuple[np.ndarray, np.ndarray]:
        """SIM-ONLY: the servo's joint positions and velocities now (copies; no delay)."""
        return self._q.copy(), self._qd.copy()

    # ---- faults (hw_bridge.checker.FaultInjector) ------------------------------------------
    def inject(self, kind: str) -> None:
        self.faults.inject(kind)

    def clear(self) -> None:
        self.faults.clear()

    def _check_connected(self) -> None:
        if self.faults.disconnected:
            raise ConnectionLost("the mock stopped answering (injected fault: faults.disconnected)")

    # ---- the servo and its sensors ---------------------------------------------------------
    def _sample(self) -> None:
        js = self._scene.sensors.joint_states
        t = self.now()
        if t + 1e-12 >= self._next_sample_s:
            self._samples.append(JointState(t, self._q.copy(), self._qd.copy()))
            self._next_sample_s += 1.0 / js.rate_hz
            keep = js.delay_s + self.faults.joint_state_extra_delay_s + 2.0 / js.rate_hz
            while len(self._samples) > 2 and self._samples[1].stamp_s < t - keep:
                self._samples.popleft()

    def _delivered(self) -> JointState:
        delay = self._scene.sensors.joint_states.delay_s + self.faults.joint_state_extra_delay_s
        cutoff = self.now() - delay + 1e-12
        for s in reversed(self._samples):
            if s.stamp_s <= cutoff:
                return s
        return self._samples[0]

    def _advance(self) -> None:
        if self.faults.ignore_commands:       # injected: the joints ignore commands and stay put
            self._target = self._q.copy()
        step = np.clip((self._target - self._q) * self._alpha, self._step_min, self._step_max)
        self._q = self._q + step
        self._qd = step / self.period_s
        self._step_index += 1
        self._sample()

    # ---- backend hooks ---------------------------------------------------------------------
    def _read(self) -> JointState:
        self._check_connected()
        if self.faults.freeze_joint_states:
            if self._frozen is None:
                self._frozen = self._delivered()
            s = self._frozen
        else:
            self._frozen = None
            s = self._delivered()
            if self.faults.nan_joint_states:
                return JointState(s.stamp_s, np.full_like(s.position, np.nan), s.velocity.copy())
        return JointState(s.stamp_s, s.position.copy(), s.velocity.copy())

    def _write(self, q_target: np.ndarray) -> None:
        self._check_connected()
        self._target = np.array(q_target, dtype=float)

    def _grab_stereo(self) -> StereoFrame | None:
        self._check_connected()
        if self.faults.freeze_frames:
            return self._last_frame
        cs = self._scene.sensors.cameras
        k = int(np.floor((self.now() - cs.delay_s) * cs.rate_hz + 1e-9))
        if k < 0:
            return None
        if self._last_frame is None or self._last_frame.index != k:
            left, right = self._images
            self._last_frame = StereoFrame(k / cs.rate_hz, k, left.copy(), right.copy())
        return self._last_frame

    def _set_drill(self, on: bool, speed_rpm: float) -> None:
        self._check_connected()
        self._drill = DrillState(on, speed_rpm)

    def drill_state(self) -> DrillState:
        return self._drill


def _checked_images(images) -> tuple[np.ndarray, np.ndarray]:
    try:
        left, right = images
    except (TypeError, ValueError):
        raise HardwareError("mock: images must be a (left, right) pair of arrays") from None
    pair = []
    for side, img in (("left", left), ("right", right)):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise HardwareError(f"mock: the {side} image is {img.dtype} {img.shape}; expected uint8 BGR (H, W, 3)")
        pair.append(img.copy())
    if pair[0].shape != pair[1].shape:
        raise HardwareError(f"mock: left {pair[0].shape} and right {pair[1].shape} images differ in size")
    return pair[0], pair[1]
