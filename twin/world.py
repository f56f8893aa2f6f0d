"""The twin world: arm, skull, MSCS cameras and drill, advanced in lockstep by one period.

Sensors follow ``SceneSpec.sensors`` (the one place where rates, delays and noise live):
- joint states are sampled at ``joint_states.rate_hz`` with Gaussian noise and delivered
  ``delay_s`` after sampling;
- camera frames are exposed at t_k = k / ``cameras.rate_hz`` and become available at
  t_k + ``delay_s``; a frame shows the world as it was at t_k. Frames are rendered lazily,
  only when their images are read, so a controller that never looks (or only waits for a newer
  frame) costs nothing; the right image's drill and noise only when it is read (each frame's
  noise has its own generator, so the images do not depend on what is read).

Bone removal (``twin.milling.BoneMill``, parameters ``SceneSpec.milling``): every period the
burr centre's motion, from the arm's true joints before and after the period, is mapped into
the skull frame and milled with the drill's state; ``last_contact`` holds the result and
``mill_trace`` (``twin.milling.MillTrace``, ground truth, bounded) keeps every period's time,
burr centre, force, deflection and breach depth for explaining failures.

Fault injection (SIM-ONLY, ``twin.faults``): ``faults`` (``SensorFaults``) switches a fault on
or off at once (the safety tests); a ``FaultSchedule`` (``set_fault_schedule``) times them over a
run from the cut's start (the first period with the drill on), and adds dropped frames and extra
image latency; ``faults_fired`` records which of its kinds took effect.

Everything random is drawn from generators spawned from one seed: same seed, same commands,
same outputs.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable
from weakref import WeakSet

import numpy as np

from scenes.frames import invert
from scenes.robot_description import RobotDescription
from scenes.spec import SceneSpec
from twin.arm import SimArm
from twin.cameras import CameraModel, cameras_from_spec
from twin.faults import FaultSchedule, SensorFaults
from twin.milling import NO_CONTACT, BoneMill, MillContact, MillTrace
from twin.render import DrillGeometry, Lighting, SensorNoise, StereoImages, StereoRenderer
from twin.skull import Skull, SkullParams


@dataclass(frozen=True)
class JointSample:
    stamp_s: float
    position: np.ndarray
    velocity: np.ndarray


class CameraFrame:
    """Stereo exposure ``index`` k at ``stamp_s`` t_k (s). ``images`` (with ground-truth labels,
    twin only) are rendered on first access, so a frame that is only waited for (its stamp read)
    costs nothing; ``render`` gives them as they were when the frame was taken (see
    ``TwinWorld.latest_frame``)."""

    def __init__(self, stamp_s: float, index: int, render: Callable[[], StereoImages]):
        self.stamp_s = stamp_s
        self.index = index
        self._render: Callable[[], StereoImages] | None = render
        self._images: StereoImages | None = None

    @property
    def images(self) -> StereoImages:
        if self._render is not None:
            self._images, self._render = self._render(), None
        return self._images


def make_stereo_renderer(scene: SceneSpec, skull: Skull, seed: int) -> StereoRenderer:
    """The MSCS renderer of ``scene`` over ``skull`` (cameras, drill, lighting, sensor noise)."""
    d = scene.drill
    cs = scene.sensors.cameras
    return StereoRenderer(
        skull, scene.T_s_to_r, cameras_from_spec(scene.mscs),
        Lighting(scene.lighting.direction_s, scene.lighting.intensity, scene.lighting.ambient),
        DrillGeometry(d.burr_radius_m, d.neck_radius_m, d.neck_length_m, d.shank_radius_m, d.shank_length_m),
        SensorNoise(cs.read_noise_dn, cs.shot_noise_gain), seed)


#: at most this many consecutive camera exposures are lost to ``FaultSchedule.dropped_frame_fraction``
#: (the next one is delivered), so a frame's exposure stays within the kept joint history
MAX_DROPPED_RUN = 30


class TwinWorld:
    def __init__(self, scene: SceneSpec, seed: int = 0):
        self.scene = scene
        self.robot = RobotDescription(scene.robot.description_path)
        self.period_s = scene.control_period_s
        seeds = np.random.SeedSequence(seed).spawn(3)
        self._joint_rng = np.random.default_rng(seeds[0])
        self._camera_rng_seed = seeds[1]
        self.skull = Skull(SkullParams(**scene.skull.params))
        self.T_s_to_r = scene.T_s_to_r
        self.renderer = make_stereo_renderer(scene, self.skull, int(seeds[2].generate_state(1)[0] % (2**31)))
        self.cameras: tuple[CameraModel, CameraModel] = self.renderer.camera_models
        self.drill_geometry = self.renderer.drill
        self.arm = SimArm(self.robot, scene.robot.home_q, self.period_s, scene.robot.servo_time_constant_s)
        self.drill_on = False
        self.drill_speed_rpm = 0.0
        self.faults = SensorFaults()          # injected sensor faults (safety tests; twin.faults)
        self._frozen_sample: JointSample | None = None
        #: SIM-ONLY: the timed faults of this session (None: none), its cut start (s) and the kinds that took effect
        self.fault_schedule: FaultSchedule | None = None
        self.cut_start_s: float | None = None
        self.faults_fired: set[str] = set()
        self.mill = BoneMill(self.skull, scene.milling)
        self.last_contact: MillContact = NO_CONTACT
        #: SIM-ONLY ground truth: the milling physics of every period (scoring only)
        self.mill_trace = MillTrace()
        #: joints (rad) at the end of the last step and the burr centre (m, {S}) there
        self._last_burr: tuple[np.ndarray, np.ndarray] | None = None
        T_r_to_s = invert(self.T_s_to_r)
        self._R_r_to_s, self._p_r_to_s = T_r_to_s[:3, :3], T_r_to_s[:3, 3]
        self.step_index = 0
        # Recent true joint positions, for camera exposures in the past (delay).
        horizon = scene.sensors.cameras.delay_s + 2.0 / scene.sensors.cameras.rate_hz
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=int(horizon / self.period_s) + 3)
        self._joint_samples: deque[JointSample] = deque()
        self._next_joint_sample_s = 0.0
        self._last_frame: CameraFrame | None = None
        self._unrendered: WeakSet[CameraFrame] = WeakSet()     # frames taken, still referenced, not rendered
        self._record()

    @property
    def time_s(self) -> float:
        return self.step_index * self.period_s

    def _record(self) -> None:
        q, qd = self.arm.state()
        t = self.time_s
        self._history.append((t, q))
        js = self.scene.sensors.joint_states
        if t + 1e-12 >= self._next_joint_sample_s:
            noise = self._joint_rng.normal(0.0, js.noise_std, q.shape) if js.noise_std > 0 else 0.0
            self._joint_samples.append(JointSample(t, q + noise, qd))
            self._next_joint_sample_s += 1.0 / js.rate_hz
            extra = self.faults.joint_state_extra_delay_s
            if self.fault_schedule is not None:      # keep what a delay window will deliver when it starts
                extra = max(extra, self.fault_schedule.joint_state_delay_s)
            keep = js.delay_s + extra + 2.0 / js.rate_hz
            while len(self._joint_samples) > 2 and self._joint_samples[1].stamp_s < t - keep:
                self._joint_samples.popleft()

    def set_fault_schedule(self, schedule: FaultSchedule | None) -> None:
        """SIM-ONLY: apply ``schedule`` from now on; it owns the timed fields of ``faults``
        (joint-state delay and freeze, disconnection) while set. None: no schedule, and those
        fields cleared (the robot answers again)."""
        if schedule is None and self.fault_schedule is not None:
            FaultSchedule().apply(self.faults, None)
        self.fault_schedule, self.cut_start_s = schedule, None
        latency = 0.0 if schedule is None else schedule.image_latency_s
        cs = self.scene.sensors.cameras
        horizon = cs.delay_s + latency + (MAX_DROPPED_RUN + 2.0) / cs.rate_hz
        self._history = deque(self._history, maxlen=int(horizon / self.period_s) + 3)
        self._apply_schedule()

    def _apply_schedule(self) -> None:
        sched = self.fault_schedule
        if sched is None:
            return
        if self.cut_start_s is None and self.drill_on:
            self.cut_start_s = self.time_s
        t_cut = None if self.cut_start_s is None else self.time_s - self.cut_start_s
        self.faults_fired |= sched.apply(self.faults, t_cut)

    def burr_centre_s(self, q: np.ndarray) -> np.ndarray:
        """Burr centre (m) in the skull frame {S} at joints ``q``."""
        return self._R_r_to_s @ self.robot.tool_position(q) + self._p_r_to_s

    def joints_placing_burr_at(self, p_s: np.ndarray, q0: np.ndarray, tol_m: float = 1e-9) -> np.ndarray:
        """SIM-ONLY (tests, benchmarks, scenario set-up with ``arm.reset``): joints near ``q0`` that
        put the burr centre at ``p_s`` (m, {S}). Damped Newton on the burr position (numeric
        Jacobian); the tool's orientation is left free (it stays close to that of ``q0``)."""
        q = np.array(q0, dtype=float)
        err = p_s - self.burr_centre_s(q)
        for _ in range(30):
            if np.linalg.norm(err) < tol_m:
                return q
            J = np.stack([(self.burr_centre_s(q + h) - self.burr_centre_s(q - h)) / 2e-6
                          for h in np.eye(q.size) * 1e-6], axis=1)
            q = q + J.T @ np.linalg.solve(J @ J.T + 1e-12 * np.eye(3), err)
            err = p_s - self.burr_centre_s(q)
        raise ValueError(f"joints_placing_burr_at: no joints put the burr at {p_s} m within {tol_m:g} m "
                         f"(off by {np.linalg.norm(err):.3g} m)")

    def step(self) -> None:
        """Advance the world by one control period: arm, then bone removal along the burr's path.
        The burr centre at the start is the last step's end when the joints are still those."""
        if self.drill_on:
            self._render_taken_frames()
        q0 = self.arm.state()[0]
        last = self._last_burr
        a_s = last[1] if last is not None and np.array_equal(last[0], q0) else self.burr_centre_s(q0)
        if self.faults.ignore_commands:       # injected: the driver ignores commands, the arm stays put
            self.arm.set_target(q0)
        self.arm.step()
        self.step_index += 1
        q1 = self.arm.state()[0]
        b_s = self.burr_centre_s(q1)
        self._last_burr = (q1, b_s)
        self.last_contact = self.mill.step(self.time_s, a_s, b_s, self.drill_on, self.drill_speed_rpm, self.period_s)
        self.mill_trace.append(self.time_s, b_s, self.last_contact)
        self._apply_schedule()
        self._record()

    def latest_joint_sample(self) -> JointSample:
        """The newest joint-state sample delivered by now (sampled at least ``delay_s`` ago),
        altered by the injected ``faults`` (frozen, extra delay, NaN)."""
        if self.faults.freeze_joint_states:
            if self._frozen_sample is None:
                self._frozen_sample = self._delivered_sample()
            return self._frozen_sample
        self._frozen_sample = None
        sample = self._delivered_sample()
        if self.faults.nan_joint_states:
            sample = JointSample(sample.stamp_s, np.full_like(sample.position, np.nan), sample.velocity)
        return sample

    def _delivered_sample(self) -> JointSample:
        delay = self.scene.sensors.joint_states.delay_s + self.faults.joint_state_extra_delay_s
        cutoff = self.time_s - delay + 1e-12
        available = [s for s in self._joint_samples if s.stamp_s <= cutoff]
        return available[-1] if available else self._joint_samples[0]

    def true_q_at(self, t: float) -> np.ndarray:
        """True joint positions at time ``t`` (nearest recorded period). Only the last camera delay
        plus two frames are kept; an older ``t`` raises instead of answering with the wrong time."""
        t_s, q = min(self._history, key=lambda h: abs(h[0] - t))
        if abs(t_s - t) > self.period_s + 1e-9:
            raise ValueError(f"true_q_at(t={t:.4f} s): outside the kept history "
                             f"[{self._history[0][0]:.4f}, {self._history[-1][0]:.4f}] s")
        return q

    def latest_frame(self) -> CameraFrame | None:
        """The newest camera frame available by now, or None before the first one arrives
        (the last one again while ``faults.freeze_frames``). A ``fault_schedule`` adds its image
        latency to the delay and skips the exposures it drops."""
        if self.faults.freeze_frames:
            return self._last_frame
        cs = self.scene.sensors.cameras
        sched = self.fault_schedule
        latency = 0.0 if sched is None else sched.image_latency_s
        k = int(np.floor((self.time_s - cs.delay_s - latency) * cs.rate_hz + 1e-9))
        if sched is not None:
            newest = k
            while k >= 0 and newest - k < MAX_DROPPED_RUN and sched.frame_dropped(k):
                k -= 1
            if k >= 0 and k != newest:
                self.faults_fired.add("dropped_frames")
            if k >= 0 and latency > 0.0:
                self.faults_fired.add("image_latency")
        if k < 0:
            return None
        if self._last_frame is not None and self._last_frame.index == k:
            return self._last_frame
        t_k = k / cs.rate_hz
        T_tool = self.robot.fk(self.true_q_at(t_k))
        rng = np.random.default_rng([*self._camera_rng_seed.generate_state(2), k])
        version = self.skull.version

        def render() -> StereoImages:
            if self.skull.version != version:
                raise RuntimeError(f"camera frame {k}: the skull changed (version {version} -> "
                                   f"{self.skull.version}) before its images were rendered")
            return self.renderer.render(T_tool, rng, defer_right=True)

        self._last_frame = CameraFrame(t_k, k, render)
        self._unrendered.add(self._last_frame)
        return self._last_frame

    def _render_taken_frames(self) -> None:
        """Render the frames taken and still held but not yet looked at, in the order they were
        taken, before the bone can change: they show the skull as it was when they were taken,
        and the renderer's caches pass through the same states as if each had been rendered then."""
        for frame in sorted(self._unrendered, key=lambda f: f.index):
            frame.images
        self._unrendered.clear()

    def close(self) -> None:
        self.arm.close()
