"""The one timing helper of the benchmarks: median wall time of repeated calls."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def median_s(fn: Callable[[], object], n: int) -> float:
    """Median wall time (s) of ``n`` calls of ``fn()``."""
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))
