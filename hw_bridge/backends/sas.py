"""The ``sas`` backend: the real arm through a SmartArmStack (SAS) robot driver over ROS 2.

It is a SAS robot-driver *client* (like ``sas::RobotDriverClient``), configured by the scene's
``[backends.sas]`` table (``scenes.hw_config.SasSpec``):

- topics under ``prefix`` ``<p>``: it subscribes ``<p>/get/joint_states`` (sensor_msgs/JointState:
  position, velocity, effort, no names), ``<p>/get/joint_positions_min`` and ``_max``
  (std_msgs/Float64MultiArray) and ``<p>/get/home_states`` (std_msgs/Int32MultiArray, kept in
  ``home_states``), and publishes ``<p>/set/target_joint_positions`` (Float64MultiArray);
- QoS: exactly what SAS creates on both sides (rclcpp's default profile with queue depth 1:
  reliable, volatile, keep-last 1). SAS republishes the limits every control cycle, so
  volatile durability loses nothing; a reliable subscriber also matches only SAS's reliable
  publishers, so nothing is silently mixed;
- ROS 2 runs in its own ``rclpy`` context (``RosSession``: its own DDS participant in
  ``ros_domain_id``, a node, a single-threaded executor in a daemon thread); the process's
  global rclpy context and signal handlers are never touched, so several instances coexist;
- ``configure()`` waits up to ``enable_timeout_s`` until the driver is "enabled" in SAS's
  sense (joint states and both limit arrays received), the driver subscribes to the target
  topic and no other client publishes targets (SAS requires one publisher); it then checks
  that the driver's joint count and limits equal the robot description's within
  ``limits_tolerance`` (again at every ``activate()``) and refuses otherwise, naming the joint,
  the driver's value and the description's value;
- a driver whose joint-state publisher disappears (on read) or whose target subscription
  disappears (on write) raises ``ConnectionLost`` (the safety layer stops the run); one that
  stops publishing is caught by the stale-state watchdog;
- the clock (``now()``) is the ROS clock, the same clock as the driver's header stamps;
  ``advance()`` sleeps to the next boundary of a fixed-rate schedule (``control.period_s``) on
  the monotonic clock (a controller more than one period late restarts the schedule instead
  of bursting; the safety layer's deadline watchdog judges the lateness);
- cameras (``[backends.sas.cameras]``): ``hw_bridge.rig_cameras`` (OpenCV devices or two
  sensor_msgs/Image topics, read in this backend's ROS session); ``configure()`` waits up to
  ``enable_timeout_s`` for the first stereo pair;
- drill (``drill``): ``hw_bridge.drill`` (the operator switches it when asked, or none).

A driver that sends no joint velocities (some SAS drivers only have positions) gets them
estimated as the difference of the last two positions over their stamps (the first sample: 0).
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from hw_bridge.drill import Drill, PromptFn, make_drill
from hw_bridge.errors import ConnectionLost, HardwareError
from hw_bridge.interface import DrillState, Hardware, JointState, StereoFrame
from hw_bridge.rig_cameras import ImageTopicStereoCamera, OpenCVStereoCamera, StereoSource
from hw_bridge.ros import RosSession, SasTopics, require_ros, sas_qos, stamp_to_s
from scenes.spec import SceneSpec

try:
    from rclpy.clock import ROSClock
    from sensor_msgs.msg import JointState as JointStateMsg
    from std_msgs.msg import Float64MultiArray, Int32MultiArray
except ImportError:                  # the [ros] extra is not installed: require_ros() says how to install it
    pass

log = logging.getLogger("micromill.hw_bridge.sas")

#: how often the configure-time waits look again (s)
_POLL_S = 0.005


def _wait_until(condition, deadline_monotonic: float) -> bool:
    while not condition():
        if time.monotonic() >= deadline_monotonic:
            return condition()
        time.sleep(_POLL_S)
    return True


class SasHardware(Hardware):
    """The arm through a SAS robot driver (see the module docstring)."""

    name = "sas"
    moves_real_robot = True
    realtime = True

    def __init__(self, scene: SceneSpec, seed: int = 0, *, drill_prompt: PromptFn | None = None, **kwargs):
        """``drill_prompt``: how a manual drill asks the operator (default: the terminal; see hw_bridge.drill)."""
        require_ros()
        super().__init__(scene, seed, **kwargs)
        self.spec = scene.backends.sas
        self.topics = SasTopics.under(self.spec.prefix)
        #: the driver's latest ``<p>/get/home_states`` (None before one arrived)
        self.home_states: np.ndarray | None = None
        self._drill_prompt = drill_prompt
        self._clock = ROSClock()
        self._lock = threading.Lock()
        self._joint_state: JointState | None = None
        self._limits_min: np.ndarray | None = None
        self._limits_max: np.ndarray | None = None
        self._ros: RosSession | None = None
        self._target_pub = None
        self._cameras: StereoSource | None = None
        self._drill: Drill | None = None
        self._next_tick: float | None = None

    @property
    def has_cameras(self) -> bool:
        return self.spec.cameras.kind != "none"

    def _where(self) -> str:
        return f"the SAS robot driver at prefix {self.spec.prefix} (ROS domain {self.spec.ros_domain_id})"

    # ---- subscriptions (executor thread) --------------------------------------------------
    def _on_joint_states(self, msg) -> None:
        stamp = stamp_to_s(msg.header.stamp)
        position = np.array(msg.position, dtype=float)
        if len(msg.velocity) == position.size:
            velocity = np.array(msg.velocity, dtype=float)
        else:                         # a driver without velocities: difference of the last two samples
            prev = self._joint_state
            if prev is not None and prev.position.size == position.size and stamp > prev.stamp_s:
                velocity = (position - prev.position) / (stamp - prev.stamp_s)
            else:
                velocity = np.zeros_like(position)
        with self._lock:
            self._joint_state = JointState(stamp, position, velocity)

    def _on_limits(self, which: str, msg) -> None:
        values = np.array(msg.data, dtype=float)
        with self._lock:
            if which == "min":
                self._limits_min = values
            else:
                self._limits_max = values

    def _on_home_states(self, msg) -> None:
        self.home_states = np.array(msg.data, dtype=int)

    # ---- lifecycle hooks ----------------------------------------------------------------
    def _on_configure(self) -> None:
        self._drill = make_drill(self.spec.drill, self._drill_prompt)
        try:
            self._connect()
        except BaseException:
            try:
                self._release()
            except HardwareError as exc:      # the configure error is the one to see; this one is logged
                log.error("%s: releasing after a failed configure: %s", self.name, exc)
            raise

    def _connect(self) -> None:
        spec, topics = self.spec, self.topics
        self._ros = RosSession("micromill_sas_client", spec.ros_domain_id)
        node, qos = self._ros.node, sas_qos()
        node.create_subscription(JointStateMsg, topics.joint_states, self._on_joint_states, qos)
        for which, topic in (("min", topics.joint_positions_min), ("max", topics.joint_positions_max)):
            node.create_subscription(Float64MultiArray, topic, lambda m, w=which: self._on_limits(w, m), qos)
        node.create_subscription(Int32MultiArray, topics.home_states, self._on_home_states, qos)
        self._target_pub = node.create_publisher(Float64MultiArray, topics.target_joint_positions, qos)

        deadline = time.monotonic() + spec.enable_timeout_s
        received = {topics.joint_states: lambda: self._joint_state is not None,
                    topics.joint_positions_min: lambda: self._limits_min is not None,
                    topics.joint_positions_max: lambda: self._limits_max is not None}
        if not _wait_until(lambda: all(f() for f in received.values()), deadline):
            missing = [t for t, f in received.items() if not f()]
            raise HardwareError(
                f"sas: {self._where()} is not enabled after backends.sas.enable_timeout_s = "
                f"{spec.enable_timeout_s:g} s: nothing arrived on {', '.join(missing)} (a SAS client is enabled only "
                f"once joint states and both limit arrays arrived); is the driver running with this prefix and "
                f"ROS_DOMAIN_ID?")
        n = self.limits.position_min.size
        n_state = self._joint_state.position.size
        if n_state != n:
            raise HardwareError(f"sas: {self._where()} sends {n_state} joint positions on {topics.joint_states}; "
                                f"the robot description {self.robot.path} has {n} joints")
        self._check_limits("not configured")
        if not _wait_until(lambda: self._target_pub.get_subscription_count() > 0, deadline):
            raise HardwareError(f"sas: {self._where()} does not subscribe to {topics.target_joint_positions} "
                                f"within backends.sas.enable_timeout_s = {spec.enable_timeout_s:g} s")
        others = node.count_publishers(topics.target_joint_positions) - 1
        if others > 0:
            raise HardwareError(f"sas: {others} other publisher(s) already send targets on "
                                f"{topics.target_joint_positions}; a SAS driver takes targets from exactly one client")
        if self.has_cameras:
            self._cameras = self._make_cameras()
            if not _wait_until(lambda: self._cameras.grab() is not None,
                               time.monotonic() + spec.enable_timeout_s):
                raise HardwareError(f"sas: the cameras ({self._camera_source()}) delivered no stereo pair within "
                                    f"backends.sas.enable_timeout_s = {spec.enable_timeout_s:g} s")

    def _camera_source(self) -> str:
        c = self.spec.cameras
        if c.kind == "opencv":
            return f"OpenCV devices {c.left_device!r} and {c.right_device!r}"
        return f"image topics {c.left_topic} and {c.right_topic}"

    def _make_cameras(self) -> StereoSource:
        c = self.spec.cameras
        if c.kind == "opencv":
            return OpenCVStereoCamera(c.left_device, c.right_device, self.now)
        return ImageTopicStereoCamera(self._ros.node, c.left_topic, c.right_topic)

    def _check_limits(self, refused: str) -> None:
        """HardwareError naming every joint whose driver limit differs from the robot description's."""
        with self._lock:
            driver = {"joint_positions_min": self._limits_min, "joint_positions_max": self._limits_max}
        tol = self.spec.limits_tolerance
        problems = []
        for (name, got), want in zip(driver.items(), (self.limits.position_min, self.limits.position_max)):
            if got.size != want.size:
                problems.append(f"{self.spec.prefix}/get/{name} has {got.size} values, the robot description "
                                f"has {want.size} joints")
                continue
            for j in np.flatnonzero(~(np.abs(got - want) <= tol)):
                problems.append(f"joint {j}: the driver's {name.removeprefix('joint_positions_')} = {got[j]:.9g}, "
                                f"the description's = {want[j]:.9g}")
        if problems:
            raise HardwareError(f"sas: {refused}: the limits of {self._where()} differ from the robot description "
                                f"{self.robot.path} by more than backends.sas.limits_tolerance = {tol:g}: "
                                + "; ".join(problems))

    def _on_activate(self) -> None:
        self._check_limits("not activated")
        self._next_tick = None

    def _on_close(self) -> None:
        self._release()

    def _release(self) -> None:
        """Stop spinning (before the cameras destroy their subscriptions), close the cameras, close
        the ROS session: each step on its own, a failed one does not skip the next; then
        ``HardwareError`` names every failure."""
        ros, cameras = self._ros, self._cameras
        self._ros = self._cameras = None
        steps = []
        if ros is not None:
            steps.append(("stopping the ROS executor", ros.stop_spinning))
        if cameras is not None:
            steps.append(("closing the cameras", cameras.close))
        if ros is not None:
            steps.append(("closing the ROS session", ros.close))
        failures = []
        for what, fn in steps:
            try:
                fn()
            except Exception as exc:          # noqa: BLE001 - every step must run; all are reported below
                log.warning("%s: close: %s failed: %s", self.name, what, exc)
                failures.append(f"{what}: {exc}")
        if failures:
            raise HardwareError(f"sas: {'; '.join(failures)}")

    # ---- I/O hooks ----------------------------------------------------------------------
    def _read(self) -> JointState:
        if self._ros.node.count_publishers(self.topics.joint_states) == 0:
            raise ConnectionLost(f"nobody publishes {self.topics.joint_states} any more: {self._where()} is gone")
        with self._lock:
            s = self._joint_state
        return JointState(s.stamp_s, s.position.copy(), s.velocity.copy())

    def _write(self, q_target: np.ndarray) -> None:
        if self._target_pub.get_subscription_count() == 0:
            raise ConnectionLost(f"nobody subscribes to {self.topics.target_joint_positions} any more: "
                                 f"{self._where()} is gone")
        self._target_pub.publish(Float64MultiArray(data=[float(v) for v in q_target]))

    def _grab_stereo(self) -> StereoFrame | None:
        return self._cameras.grab()

    def _set_drill(self, on: bool, speed_rpm: float) -> None:
        self._drill.set(on, speed_rpm)

    def drill_state(self) -> DrillState:
        return self._drill.state() if self._drill is not None else DrillState(False, 0.0)

    def now(self) -> float:
        """The ROS clock (s): the clock of the driver's header stamps."""
        return self._clock.now().nanoseconds * 1e-9

    def _advance(self) -> None:
        t = time.monotonic()
        if self._next_tick is None or t - self._next_tick > self.period_s:
            self._next_tick = t                    # first period, or more than one period late: restart
        self._next_tick += self.period_s
        delay = self._next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
