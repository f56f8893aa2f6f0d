"""The timing helpers of the benchmarks: median wall time of repeated calls, medians of phases."""
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


def phase_medians(samples: list[dict[str, float]]) -> dict[str, float]:
    """Median (s) of each phase over repeated runs; ``samples`` holds one {phase: wall s} per run."""
    return {k: float(np.median([s[k] for s in samples])) for k in samples[0]}
