"""ROS 2 plumbing shared by the ``sas`` backend, its image-topic cameras (``hw_bridge.rig_cameras``)
and the SAS twin driver (``hw_bridge.test_peers.sas_driver``): the install hint when ROS 2 is
missing, SmartArmStack's topic names and QoS, header-stamp conversion, ``RosSession`` (an
rclpy context, node and executor of its own) and ``FASTDDS_SHM_PROFILE``, the shipped Fast DDS
profile for full-size image topics on one host (set ``FASTDDS_DEFAULT_PROFILES_FILE`` to it in
every process that uses those topics; docs/hardware_and_safety.md).

Importable without ROS 2: the rclpy imports are guarded, and ``require_ros()`` raises
``HardwareError`` with the install hint before anything needs them.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from hw_bridge.errors import HardwareError

try:
    import rclpy
    import sensor_msgs.msg  # noqa: F401  (imported to check it: require_ros() names what is missing)
    import std_msgs.msg  # noqa: F401
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    _ROS_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:          # the [ros] extra is not installed
    _ROS_IMPORT_ERROR = _exc

log = logging.getLogger("micromill.hw_bridge.ros")

#: Fast DDS profile with a 32 MiB shared-memory segment per participant, for 960x540 image topics
FASTDDS_SHM_PROFILE = Path(__file__).with_name("fastdds_shm_profile.xml")


def require_ros() -> None:
    """Raise HardwareError with the install hint when rclpy or the message packages are missing."""
    if _ROS_IMPORT_ERROR is not None:
        raise HardwareError(f"the sas backend needs ROS 2 for Python (rclpy, std_msgs, sensor_msgs, "
                            f"rmw_fastrtps_cpp): pip install -e \".[ros]\" ({_ROS_IMPORT_ERROR})")


def sas_qos() -> QoSProfile:
    """The QoS of every SAS topic: rclcpp's default profile with queue depth 1 (reliable, volatile)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def stamp_to_s(stamp) -> float:
    """builtin_interfaces/Time -> seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t_s: float, stamp) -> None:
    """Write ``t_s`` (s) into a builtin_interfaces/Time."""
    ns = round(t_s * 1e9)
    stamp.sec, stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000


@dataclass(frozen=True)
class SasTopics:
    """The topics of one SAS robot driver (SmartArmStack's names under its prefix)."""

    joint_states: str
    joint_positions_min: str
    joint_positions_max: str
    home_states: str
    target_joint_positions: str
    target_joint_velocities: str
    target_joint_forces: str

    @classmethod
    def under(cls, prefix: str) -> SasTopics:
        return cls(f"{prefix}/get/joint_states", f"{prefix}/get/joint_positions_min",
                   f"{prefix}/get/joint_positions_max", f"{prefix}/get/home_states",
                   f"{prefix}/set/target_joint_positions", f"{prefix}/set/target_joint_velocities",
                   f"{prefix}/set/target_joint_forces")


class RosSession:
    """One rclpy context of its own (a DDS participant in ROS domain ``domain_id``), one node and a
    single-threaded executor; installs no signal handlers.

    ``spin_thread=True``: the executor spins in a daemon thread. Entities may then be created
    at any time, but destroyed only after ``stop_spinning()`` (rclpy cannot destroy entities
    under an executor waiting in another thread). ``False``: the owner spins (``executor.spin_once``)
    in its own loop and may destroy entities between spins.
    """

    def __init__(self, node_name: str, domain_id: int, spin_thread: bool = True):
        require_ros()
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = rclpy.create_node(node_name, context=self.context)
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
        except Exception:
            self.context.try_shutdown()
            raise
        self._thread: threading.Thread | None = None
        if spin_thread:
            self._thread = threading.Thread(target=self.executor.spin, name=f"ros:{node_name}", daemon=True)
            self._thread.start()

    def stop_spinning(self) -> None:
        """Stop the executor (and its thread); idempotent."""
        self.executor.shutdown(timeout_sec=1.0)
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def close(self) -> None:
        """Stop spinning, destroy the node and shut this context down (idempotent)."""
        if not self.context.ok():
            return
        self.stop_spinning()
        if self._thread is not None and self._thread.is_alive():
            log.warning("ROS executor thread did not stop within 2 s; its node is left to the process exit")
            return
        self.node.destroy_node()
        self.context.try_shutdown()
