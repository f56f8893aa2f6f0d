"""What the twin-backed test peers (CoppeliaSim test server, SAS twin driver) share as subprocesses."""
from __future__ import annotations

import ctypes
import signal
import sys


def terminate_with_parent() -> None:
    """``preexec_fn`` of a peer subprocess (Linux): SIGTERM it when the process that started it dies,
    so no peer is left over after a crashed test run. Linux sends it when the *thread* that started
    the child ends: start peers from a thread that outlives them (e.g. the main thread)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)        # 1 = PR_SET_PDEATHSIG


#: the ``preexec_fn`` to pass to ``subprocess.Popen`` for a peer (None where Linux's prctl is missing)
PEER_PREEXEC = terminate_with_parent if sys.platform == "linux" else None
