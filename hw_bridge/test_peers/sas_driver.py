"""A SmartArmStack robot driver backed by the twin (``micromill sas-twin``), for the ``sas`` backend.

It talks exactly like a SAS robot driver under ``--prefix`` ``<p>`` (``hw_bridge.backends.sas``
has the topic names and the QoS: reliable, volatile, depth 1): every control period it
publishes ``<p>/get/joint_states`` (position, velocity, no names; header stamp on the ROS
clock), ``<p>/get/joint_positions_min``/``_max`` (the robot description's limits) and
``<p>/get/home_states`` (1 for every joint: the twin needs no homing), like SAS's driver loop;
it applies the latest ``<p>/set/target_joint_positions`` (one publisher only, as SAS demands;
a target of the wrong size, non-finite or outside the limits is logged and ignored) and, as a
position-mode driver, accepts but ignores target velocities and forces.

Real time: a ``TwinWorld`` (scene file + overrides + seed) is stepped at ``control.period_s``
against a monotonic schedule; a late loop catches up by stepping several periods at once
(more than ``MAX_CATCH_UP_S`` behind, the backlog is dropped with a warning). World time w
maps to the monotonic instant t0 + w; a joint sample's header stamp is that instant on the
ROS clock (converted at publishing time, so the two clocks cannot drift apart), so a late
driver shows up as old stamps, and the world's sensor delay and faults act on the stamps.
Between periods the loop itself handles the ROS callbacks (``spin_once`` until the next
period, like SAS's ``spin_some`` in its loop): one thread owns the world and every SAS
endpoint, so the test hooks can destroy and re-create endpoints safely.

Cameras: the MSCS images (bgr8 sensor_msgs/Image on the scene's
``[backends.sas.cameras] left_topic``/``right_topic``, header stamp = ROS time of the
exposure) at ``image_rate_hz``. Rendering costs ~20-70 ms, so it runs in a thread with its own
skull copy and renderer, off the joint-state loop: at an exposure the loop only hands over the
tool pose and the skull cells the mill changed since the last exposure (a small copy), and an
exposure that comes while the renderer is busy is skipped (the rate drops, the joint states
do not wait). The interpreter's GIL switch interval is set to 1 ms so that the render
thread's Python parts delay the loop by about a millisecond at most.

Test hooks (sim-only): ``<p>/micromill_test/fault`` (std_msgs/String: a kind of
``twin.faults.SensorFaults.inject``, ``"clear"``, ``"home"`` or ``"position_only"``, optionally followed by
``#token``) sets ``world.faults`` (``"home"`` teleports the arm to the scene's home pose, so
that tests start from the same place); the driver acknowledges on
``<p>/micromill_test/fault_ack`` with the request and ``" ok"`` or ``" error: ..."``.
``"disconnect"`` destroys every SAS publisher and subscription (the client sees the driver
gone; images stop too) until ``"clear"`` re-creates them; ``"freeze_frames"`` stops new images;
``"position_only"`` publishes joint states without velocities until ``"clear"``, like SAS drivers
that only have positions (the client then estimates velocities from two samples, which the
encoder noise, ``sensors.joint_states.noise_std``, makes noisy).

``start_sas_twin`` runs the driver in a subprocess for tests and returns a ``SasTwinProcess``
(a ``hw_bridge.checker.FaultInjector``).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hw_bridge.ros import RosSession, SasTopics, require_ros, s_to_stamp, sas_qos
from hw_bridge.test_peers.peer_process import PEER_PREEXEC
from scenes.hw_config import ROS_DOMAIN_IDS, ros_name_problem
from scenes.schema import ConfigError
from scenes.spec import SceneSpec, load_scene
from twin.skull import CellBox, Skull, SkullParams
from twin.world import TwinWorld, make_stereo_renderer

try:
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, Int32MultiArray, String
except ImportError:       # no [ros] extra: the entry points raise require_ros()'s install hint first
    pass

log = logging.getLogger("micromill.sas_twin")

#: more than this far behind its schedule (s), the driver drops the backlog instead of catching up
MAX_CATCH_UP_S = 0.5


def fault_topics(prefix: str) -> tuple[str, str]:
    """The test-only (request, acknowledgement) topics of the driver at ``prefix``."""
    return f"{prefix}/micromill_test/fault", f"{prefix}/micromill_test/fault_ack"


@dataclass(frozen=True)
class SkullPatch:
    """Skull cells the mill changed, copied from the world's skull for the renderer's copy."""

    box: CellBox
    outer_z: np.ndarray          # (rows, cols) m
    inner_z: np.ndarray


@dataclass(frozen=True)
class RenderRequest:
    index: int                   # exposure number
    stamp_s: float               # ROS time of the exposure (s)
    T_tool_to_r: np.ndarray      # true tool pose at the exposure (4x4, {R})
    patch: SkullPatch | None     # skull changes since the previous request


class ImagePublisher:
    """Renders the MSCS pair in a thread over its own skull copy and publishes it (bgr8)."""

    def __init__(self, scene: SceneSpec, seed: int, node, left_topic: str, right_topic: str):
        self.skull = Skull(SkullParams(**scene.skull.params))
        self.renderer = make_stereo_renderer(scene, self.skull, seed)
        self._seed = seed
        self._pubs = [node.create_publisher(Image, t, sas_qos()) for t in (left_topic, right_topic)]
        self._requests: queue.Queue[RenderRequest | None] = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="sas-twin-render", daemon=True)
        self._thread.start()

    def submit(self, request: RenderRequest) -> bool:
        """Hand over one exposure; False (and nothing done) while the previous one is still rendering."""
        if not self._idle.is_set():
            return False
        self._idle.clear()
        self._requests.put(request)
        return True

    def _run(self) -> None:
        while (req := self._requests.get()) is not None:
            try:
                if req.patch is not None:
                    b = req.patch.box
                    self.skull.outer_z[b.rows, b.cols] = req.patch.outer_z
                    self.skull.inner_z[b.rows, b.cols] = req.patch.inner_z
                    self.skull.mark_changed(b.rows, b.cols)
                images = self.renderer.render(req.T_tool_to_r, np.random.default_rng([self._seed, req.index]))
                for pub, img, frame_id in zip(self._pubs, (images.left, images.right), ("mscs_left", "mscs_right")):
                    msg = Image()
                    s_to_stamp(req.stamp_s, msg.header.stamp)
                    msg.header.frame_id = frame_id
                    msg.height, msg.width = img.shape[:2]
                    msg.encoding, msg.step = "bgr8", img.shape[1] * 3
                    msg.data = img.tobytes()
                    pub.publish(msg)
            except Exception:            # keep the driver alive; the client sees stale images
                log.exception("sas-twin: rendering or publishing exposure %d failed", req.index)
            finally:
                self._idle.set()

    def close(self) -> None:
        self._idle.wait(timeout=5.0)
        self._requests.put(None)
        self._thread.join(timeout=5.0)


class _SasEndpoints:
    """The driver's SAS publishers and subscriptions (destroyed while "disconnected").

    Without QoS event handlers: those are waitables of the executor, which a destroy between two
    ``spin_once`` calls could leave half-used; publishers and subscriptions themselves are safe."""

    def __init__(self, node, topics: SasTopics, on_target, on_ignored):
        qos = sas_qos()

        def pub(msg_type, topic):
            return node.create_publisher(msg_type, topic, qos,
                                         event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))

        def sub(topic, callback):
            return node.create_subscription(Float64MultiArray, topic, callback, qos,
                                            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))

        self.joint_states = pub(JointState, topics.joint_states)
        self.limits_min = pub(Float64MultiArray, topics.joint_positions_min)
        self.limits_max = pub(Float64MultiArray, topics.joint_positions_max)
        self.home_states = pub(Int32MultiArray, topics.home_states)
        self.subscriptions = [sub(topics.target_joint_positions, on_target),
                              *(sub(t, lambda m, t=t: on_ignored(t))
                                for t in (topics.target_joint_velocities, topics.target_joint_forces))]

    def destroy(self, node) -> None:
        for pub in (self.joint_states, self.limits_min, self.limits_max, self.home_states):
            node.destroy_publisher(pub)
        for sub in self.subscriptions:
            node.destroy_subscription(sub)


class SasTwinDriver:
    """The twin world behind a SAS robot-driver interface (see the module docstring)."""

    def __init__(self, scene: SceneSpec, seed: int, prefix: str, domain_id: int, image_rate_hz: float):
        require_ros()
        self.scene, self.prefix, self.domain_id = scene, prefix, domain_id
        self.topics = SasTopics.under(prefix)
        self.world = TwinWorld(scene, seed)
        self.period_s = scene.control_period_s
        self.image_period_s = 1.0 / image_rate_hz if image_rate_hz > 0 else 0.0
        self._ros = RosSession("micromill_sas_twin", domain_id, spin_thread=False)    # run() spins it
        node = self._ros.node
        self._images = (ImagePublisher(scene, seed, node, scene.backends.sas.cameras.left_topic,
                                       scene.backends.sas.cameras.right_topic) if self.image_period_s else None)
        self._pending_target: np.ndarray | None = None
        self._requests: deque[str] = deque()
        self._warned: set[str] = set()
        self._clock_offset: float | None = None       # ROS minus monotonic time (s), see _ros_time_of
        self._position_only = False
        self._endpoints: _SasEndpoints | None = self._make_endpoints()
        fault_topic, ack_topic = fault_topics(prefix)
        node.create_subscription(String, fault_topic, lambda m: self._requests.append(m.data), 10)
        self._ack = node.create_publisher(String, ack_topic, 10)
        self._limits = (Float64MultiArray(data=self.world.robot.q_min.tolist()),
                        Float64MultiArray(data=self.world.robot.q_max.tolist()))
        self._home = Int32MultiArray(data=[1] * self.world.robot.n_joints)
        self._skull_version = self.world.skull.version

    def _make_endpoints(self) -> _SasEndpoints:
        return _SasEndpoints(self._ros.node, self.topics, self._on_target, self._on_ignored)

    # ---- callbacks (run by run()'s spin_once, on the loop's thread) -------------------------
    def _on_target(self, msg) -> None:
        n = self._ros.node.count_publishers(self.topics.target_joint_positions)
        if n > 1:
            self._warn_once("exclusive", f"{n} publishers on {self.topics.target_joint_positions}: a SAS driver "
                                         f"takes targets from exactly one; ignoring targets until one is left")
            return
        self._pending_target = np.array(msg.data, dtype=float)

    def _on_ignored(self, topic: str) -> None:
        self._warn_once(topic, f"position-mode driver: {topic} is accepted but ignored")

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("sas-twin: %s", text)

    # ---- the loop --------------------------------------------------------------------------
    def _apply_target(self) -> None:
        q, self._pending_target = self._pending_target, None
        if q is None:
            return
        robot = self.world.robot
        if q.shape != (robot.n_joints,) or not np.all(np.isfinite(q)) or not robot.within_position_limits(q):
            log.error("sas-twin: ignoring target %s (needs %d finite values within the joint limits)",
                      np.array2string(q, precision=6), robot.n_joints)
            return
        self.world.arm.set_target(q)

    def _apply_test_requests(self) -> None:
        while self._requests:
            request = self._requests.popleft()
            kind = request.split("#", 1)[0]
            try:
                if kind == "clear":
                    self.world.faults.clear()
                    self._position_only = False
                    if self._endpoints is None:
                        self._endpoints = self._make_endpoints()
                elif kind == "home":
                    self.world.arm.reset(self.scene.robot.home_q)
                elif kind == "position_only":
                    self._position_only = True
                else:
                    self.world.faults.inject(kind)
                    if kind == "disconnect" and self._endpoints is not None:
                        self._endpoints.destroy(self._ros.node)
                        self._endpoints = None
                answer = f"{request} ok"
                log.info("sas-twin: test request %r applied", kind)
            except ValueError as exc:
                answer = f"{request} error: {exc}"
                log.error("sas-twin: test request %r: %s", request, exc)
            self._ack.publish(String(data=answer))

    def _ros_time_of(self, t_monotonic_s: float) -> float:
        """The ROS time (s) of an instant of the monotonic clock, with one offset between the two
        clocks measured at the first call (``_clock_offset_s``). Converting each stamp by reading
        both clocks anew put the scheduling delay between the two reads into the stamps (up to
        milliseconds on a loaded machine), and a position-only client's velocities, differences
        of two samples over their stamps, came out several per cent off; over a driver's life
        (minutes) the two clocks drift by far less than that."""
        if self._clock_offset is None:
            self._clock_offset = self._clock_offset_s()
        return t_monotonic_s + self._clock_offset

    def _clock_offset_s(self, reads: int = 7) -> float:
        """ROS time minus monotonic time (s), from the read of the ROS clock most tightly bracketed
        by two monotonic reads."""
        best = (float("inf"), 0.0)
        for _ in range(reads):
            a = time.monotonic()
            ros = self._ros.node.get_clock().now().nanoseconds * 1e-9
            b = time.monotonic()
            best = min(best, (b - a, ros - 0.5 * (a + b)))
        return best[1]

    def _publish_state(self, t0: float) -> None:
        sample = self.world.latest_joint_sample()
        msg = JointState()
        s_to_stamp(self._ros_time_of(t0 + sample.stamp_s), msg.header.stamp)
        msg.position = sample.position.tolist()
        if not self._position_only:
            msg.velocity = sample.velocity.tolist()
        ep = self._endpoints
        ep.joint_states.publish(msg)
        ep.limits_min.publish(self._limits[0])
        ep.limits_max.publish(self._limits[1])
        ep.home_states.publish(self._home)

    def _skull_patch(self) -> SkullPatch | None:
        sk = self.world.skull
        box = sk.changed_since(self._skull_version)
        self._skull_version = sk.version
        if box is None:
            return None
        return SkullPatch(box, sk.outer_z[box.rows, box.cols].copy(), sk.inner_z[box.rows, box.cols].copy())

    def run(self, stop: threading.Event) -> None:
        """Step, publish and render in real time until ``stop`` is set."""
        w, P = self.world, self.period_s
        t0 = time.monotonic()                       # monotonic instant of world time 0
        next_exposure_s, exposure = 0.0, 0
        log.info("sas-twin: driver at %s (ROS domain %d) running, %g ms period, images at %s",
                 self.prefix, self.domain_id, P * 1e3,
                 f"{1 / self.image_period_s:g} Hz" if self.image_period_s else "off")
        while not stop.is_set():
            self._apply_test_requests()
            self._apply_target()
            due = int((time.monotonic() - t0) / P)
            if (due - w.step_index) * P > MAX_CATCH_UP_S:
                log.warning("sas-twin: %.3f s behind schedule; dropping the backlog", (due - w.step_index) * P)
                t0 += (due - w.step_index) * P
                due = w.step_index
            while w.step_index < due:
                w.step()
            if self._endpoints is not None:
                self._publish_state(t0)
                if (self._images is not None and not w.faults.freeze_frames and w.time_s >= next_exposure_s
                        and self._images.submit(self._render_request(exposure, t0))):
                    exposure += 1
                    next_exposure_s = max(next_exposure_s + self.image_period_s, w.time_s)
            self._spin_until(t0 + (w.step_index + 1) * P, stop)

    def _spin_until(self, deadline: float, stop: threading.Event) -> None:
        """Handle ROS callbacks (targets, test requests) until the monotonic ``deadline`` (s)."""
        while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            self._ros.executor.spin_once(timeout_sec=remaining)

    def _render_request(self, index: int, t0: float) -> RenderRequest:
        w = self.world
        return RenderRequest(index, self._ros_time_of(t0 + w.time_s), w.robot.fk(w.arm.state()[0]), self._skull_patch())

    def close(self) -> None:
        if self._images is not None:
            self._images.close()
        self._ros.close()
        self.world.close()


def check_driver_args(prefix: str, domain_id: int, image_rate_hz: float) -> list[str]:
    """Problems with the driver's arguments (empty: fine)."""
    problems = [p for p in [ros_name_problem("--prefix", prefix)] if p is not None]
    lo, hi = ROS_DOMAIN_IDS
    if not lo <= domain_id <= hi:
        problems.append(f"--domain={domain_id} must be a ROS domain id in {lo}..{hi}")
    if not (np.isfinite(image_rate_hz) and 0.0 <= image_rate_hz <= 100.0):
        problems.append(f"--image-rate-hz={image_rate_hz} must be within [0, 100] (0: no images)")
    return problems


def run_sas_twin(scene_path: str | None, overrides: dict[str, Any], seed: int, prefix: str, domain_id: int,
                 image_rate_hz: float = 5.0) -> int:
    """Run the twin-backed SAS driver until SIGINT or SIGTERM; returns the exit code (0).

    Raises ConfigError for a bad scene, override or argument (the CLI exits 2 with the list)."""
    problems = check_driver_args(prefix, domain_id, image_rate_hz)
    if problems:
        raise ConfigError("micromill sas-twin", problems)
    require_ros()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    scene = load_scene(scene_path, overrides)
    sys.setswitchinterval(1e-3)                 # the render thread yields the GIL to the loop within ~1 ms
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    driver = SasTwinDriver(scene, seed, prefix, domain_id, image_rate_hz)
    try:
        driver.run(stop)
    finally:
        driver.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("sas-twin: stopped")
    return 0


# ---- the test helper ----------------------------------------------------------------------------
class SasTwinProcess:
    """A ``micromill sas-twin`` subprocess and a probe node that talks to it (``start_sas_twin``).

    A ``hw_bridge.checker.FaultInjector``: ``inject``/``clear`` return once the driver applied
    the request (it acknowledges on its ack topic); ``clear`` also waits for a joint state
    published after it (after a "disconnect", the re-created publishers have been discovered).
    """

    #: the longest a request or a fresh joint state may take to come back (s)
    REPLY_TIMEOUT_S = 10.0
    #: a request is published again this often until acknowledged (s): the first may go out before
    #: the driver's subscription matched
    RESEND_S = 0.5

    def __init__(self, process: subprocess.Popen, stderr_path: Path, prefix: str, domain_id: int,
                 scene_overrides: dict[str, Any]):
        self.process, self.prefix, self.domain_id = process, prefix, domain_id
        #: the overrides the client loads the driver's scene file with (see start_sas_twin)
        self.scene_overrides = scene_overrides
        #: the driver's stdout and stderr
        self.stderr_path = stderr_path
        self._lock = threading.Lock()
        self._states_received = 0
        self._acks: list[str] = []
        self._tokens = itertools.count()
        self._ros = RosSession("micromill_sas_twin_probe", domain_id)
        node = self._ros.node
        fault_topic, ack_topic = fault_topics(prefix)
        node.create_subscription(JointState, SasTopics.under(prefix).joint_states, self._on_state, sas_qos())
        node.create_subscription(String, ack_topic, self._on_ack, 10)
        self._fault_pub = node.create_publisher(String, fault_topic, 10)

    def _on_state(self, _msg) -> None:
        with self._lock:
            self._states_received += 1

    def _on_ack(self, msg) -> None:
        with self._lock:
            self._acks.append(msg.data)

    def stderr_tail(self, n_chars: int = 4000) -> str:
        return self.stderr_path.read_text(errors="replace")[-n_chars:]

    def _fail(self, what: str) -> RuntimeError:
        code = self.process.poll()
        state = f"exited with code {code}" if code is not None else "still running"
        return RuntimeError(f"sas-twin at {self.prefix} (ROS domain {self.domain_id}, {state}): {what}; "
                            f"its stderr ends with:\n{self.stderr_tail()}")

    def wait_for_states(self, after: int, timeout_s: float) -> None:
        """Until more than ``after`` joint states arrived at the probe (RuntimeError on timeout or exit)."""
        deadline = time.monotonic() + timeout_s
        while self._states_received <= after:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self._fail(f"no joint states on {SasTopics.under(self.prefix).joint_states} "
                                 f"within {timeout_s:g} s")
            time.sleep(0.01)

    def _request(self, kind: str) -> None:
        request = f"{kind}#{next(self._tokens)}"
        deadline = time.monotonic() + self.REPLY_TIMEOUT_S
        next_send = 0.0
        while True:
            with self._lock:
                answer = next((a for a in self._acks if a.startswith(request + " ")), None)
            if answer is not None:
                if answer != f"{request} ok":
                    raise ValueError(f"sas-twin refused test request {kind!r}: {answer.removeprefix(request)}")
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self._fail(f"test request {kind!r} not acknowledged within {self.REPLY_TIMEOUT_S:g} s")
            if time.monotonic() >= next_send and self._fault_pub.get_subscription_count() > 0:
                self._fault_pub.publish(String(data=request))
                next_send = time.monotonic() + self.RESEND_S
            time.sleep(0.005)

    def inject(self, kind: str) -> None:
        """Set the fault ``kind`` (twin.faults) in the driver; returns once the driver applied it."""
        self._request(kind)

    def position_only(self) -> None:
        """Publish joint states without velocities until ``clear()`` (a position-only SAS driver)."""
        self._request("position_only")

    def clear(self) -> None:
        """Clear every fault; returns once the driver publishes joint states again."""
        seen = self._states_received
        self._request("clear")
        self.wait_for_states(seen, self.REPLY_TIMEOUT_S)

    def home(self) -> None:
        """Teleport the driver's arm to the scene's home pose (sim-only: tests start from one place)."""
        self._request("home")

    def stop(self) -> int:
        """SIGINT the driver (SIGKILL if it does not end within 10 s) and close the probe; the exit code.
        The driver's log is deleted after a clean exit (0) and kept (``stderr_path``) otherwise."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._ros.close()
        if self.process.returncode == 0:
            self.stderr_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> SasTwinProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


#: startup of the driver process (imports, world, second renderer: ~10 s, more on a loaded machine)
START_TIMEOUT_S = 120.0


def start_sas_twin(scene_path: str | None, overrides: dict[str, Any], seed: int, prefix: str = "/arm1",
                   image_rate_hz: float = 5.0) -> SasTwinProcess:
    """Start ``micromill sas-twin`` in a subprocess and wait until its joint states arrive.

    The ROS domain is 1 + pid % 100, so concurrent test processes rarely share one (and never
    the default domain 0). The returned ``scene_overrides`` are what the client loads its scene
    with (``load_scene(scene_path, twin.scene_overrides)``): ``overrides`` themselves (client and
    driver must agree, e.g. on ``control.period_s``), then the prefix and domain, arming
    (``safety.armed``; the client also needs ``armed=True``), ``backends.sas.drill = "none"``
    (nobody answers a manual drill in a test), and looser watchdog limits for a shared, loaded
    test machine where two Python processes and a renderer share two cores:
    ``max_joint_state_age_s`` 0.25 s and ``control_deadline_s`` 0.25 s (a descheduled process
    easily loses tens of ms; 0.25 s is still below the 0.5 s of the injected joint-state delay,
    so that fault still reads as stale) and ``max_image_age_s`` 1.0 s (5 Hz images are up to
    0.2 s apart, plus up to ~0.3 s of rendering under load, doubled for margin).
    """
    require_ros()
    domain_id = 1 + os.getpid() % 100
    problems = check_driver_args(prefix, domain_id, image_rate_hz)
    if problems:
        raise ValueError("; ".join(problems))
    cmd = [sys.executable, "-m", "scenarios.cli", "sas-twin", "--prefix", prefix, "--domain", str(domain_id),
           "--seed", str(seed), "--overrides", json.dumps(overrides), "--image-rate-hz", str(image_rate_hz)]
    if scene_path is not None:
        cmd += ["--scene", str(scene_path)]
    fd, stderr_name = tempfile.mkstemp(prefix="sas-twin-", suffix=".log")
    with os.fdopen(fd, "w") as stderr:
        process = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], stdin=subprocess.DEVNULL,
                                   stdout=stderr, stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                   preexec_fn=PEER_PREEXEC)
    scene_overrides = {**overrides, "backends.sas.prefix": prefix, "backends.sas.ros_domain_id": domain_id,
                       "safety.armed": True, "backends.sas.drill": "none",
                       "safety.max_joint_state_age_s": 0.25, "safety.control_deadline_s": 0.25,
                       "safety.max_image_age_s": 1.0}
    twin = SasTwinProcess(process, Path(stderr_name), prefix, domain_id, scene_overrides)
    try:
        twin.wait_for_states(0, START_TIMEOUT_S)
    except BaseException:
        twin.stop()
        raise
    return twin
