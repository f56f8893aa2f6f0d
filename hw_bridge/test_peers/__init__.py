"""Protocol peers backed by the twin, for tests and ``micromill sas-twin``.

Each speaks a real robot's or simulator's wire protocol on one side and drives a ``TwinWorld``
on the other, so the hardware backends can be tested end to end without the real thing:

- ``coppeliasim_server``: a test server that speaks CoppeliaSim's ZeroMQ remote-API protocol
  (``python -m hw_bridge.test_peers.coppeliasim_server``), for the ``coppeliasim`` backend;
- ``sas_driver``: a SmartArmStack robot driver over ROS 2 (``micromill sas-twin``), for the
  ``sas`` backend;
- ``peer_process``: what both share when run as subprocesses of a test.

They also expose the twin's injectable sensor faults (``twin.faults``) to their test clients,
so the contract suite's fault cases (``hw_bridge.checker.FAULT_CHECKS``) run over the wire.
Nothing here is used on the real robot.
"""
