"""Real-time factor of closed-loop milling on the twin. Run: ``python -m benchmarks.milling_speed``.

A whole window (drill on to stop) on the default skull at the milling control rate (50 Hz),
from the ideal (ground-truth) trajectory so the figure is the milling loop alone: controller
(planner, DQ Robotics QP, completion sensing), ``hw_bridge`` checks, and the twin (arm, bone
removal, rendering when the sensor looks at images). One CPU core (torch/OpenCV threads = 1).
Each kind runs ``--repeats`` times (a fresh twin each time); the figures are medians over runs.

Figures: simulated time, wall time and real-time factor (simulated / wall) for
- ``oracle``: the sim-only oracle (no images are rendered);
- ``cnn``: the completion CNN on rendered stereo frames at the loop's perception rate;
plus where the wall time goes: per 20 ms period (ms, total over the run / periods) the motion
controller's command (DQ Robotics QP), the write (safety checks), the twin's step (arm and bone
model, the bone model also alone), the read, and the rest of the loop (planner, sensor
bookkeeping); per perception update (median ms) the frame grab (render of the left image, the
skull layers of both) and the estimate (the completion CNN). Targets (issue 12): >= 300x with
the oracle, >= 30x with the CNN.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from typing import Callable

import numpy as np

TARGETS = {"oracle": 300.0, "cnn": 30.0}
#: per-period pieces (ms per period), in print order
PERIOD_PIECES = ("motion command", "write", "twin step", "bone model", "read", "rest")


def _timed(fn: Callable, times: list[float]) -> Callable:
    """``fn`` that appends each call's wall time (s) to ``times``."""
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        times.append(time.perf_counter() - t)
        return out
    return wrapper


def _run(kind: str, seed: int) -> dict:
    """One window of ``kind`` on a fresh twin: real-time factor and the time of each piece."""
    from controllers.completion_sensing import CameraCompletionSensor
    from controllers.milling import MillingSettings, mill_window
    from controllers.motion.milling_control import MillingMotionController
    from controllers.perception.completion_detector import load_estimator
    from controllers.pipeline import open_session
    from hw_bridge.registry import make_hardware
    from scenes.spec import load_scene
    from scenarios.scoring import ideal_camera, ideal_trajectory, score_milling
    from twin.completion_oracle import OracleCompletionSensor, OracleErrorModel

    hw = make_hardware("twin", load_scene("default", {"control.period_s": 0.02, "skull.seed": seed}), seed)
    command0 = MillingMotionController.command
    try:
        session = open_session(hw)
        gt = hw.ground_truth
        traj = ideal_trajectory(gt)
        if kind == "oracle":
            sensor = OracleCompletionSensor(gt, OracleErrorModel(mae=0.0), np.random.default_rng(seed))
        else:
            model, T = ideal_camera(gt, traj)
            sensor = CameraCompletionSensor(load_estimator(), model, T, traj.centre_mi, hw.rig.drill)
        t = defaultdict(list)
        gt.mill.step = _timed(gt.mill.step, t["bone model"])
        sensor.estimate = _timed(sensor.estimate, t["estimate"])
        hw.grab_stereo = _timed(hw.grab_stereo, t["grab"])
        hw.write = _timed(hw.write, t["write"])
        hw.advance = _timed(hw.advance, t["twin step"])
        hw.read = _timed(hw.read, t["read"])
        MillingMotionController.command = _timed(command0, t["motion command"])
        t_wall, t_sim = time.perf_counter(), hw.now()
        rep = mill_window(session.loop, session.pc, traj, sensor, MillingSettings())
        wall, sim = time.perf_counter() - t_wall, hw.now() - t_sim
        periods = max(len(t["twin step"]), 1)
        per_period = {k: 1e3 * sum(t[k]) / periods for k in PERIOD_PIECES if k != "rest"}
        loop_ms = 1e3 * (wall - sum(t["grab"]) - sum(t["estimate"])) / periods
        per_period["rest"] = loop_ms - sum(v for k, v in per_period.items() if k != "bone model")
        return {"sim_s": sim, "wall_s": wall, "rtf": sim / wall, "stop": rep.stop_reason.value,
                "success": bool(score_milling(gt, rep)["success"]), "periods": periods, "period_ms": loop_ms,
                "pieces_ms": per_period, "updates": len(t["estimate"]),
                "grab_ms": 1e3 * float(np.median(t["grab"])) if t["grab"] else 0.0,
                "estimate_ms": 1e3 * float(np.median(t["estimate"])) if t["estimate"] else 0.0}
    finally:
        MillingMotionController.command = command0
        hw.close()


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def _report(kind: str, runs: list[dict]) -> None:
    """Print the medians over ``runs`` of one kind."""
    r0 = runs[0]
    rtf = [r["rtf"] for r in runs]
    print(f"{kind:6s}: {_median(runs, 'sim_s'):.1f} s simulated in {_median(runs, 'wall_s'):.2f} s wall (median of "
          f"{len(runs)}) -> real-time factor {np.median(rtf):.1f}x (runs {', '.join(f'{v:.1f}' for v in rtf)}; "
          f"target >= {TARGETS[kind]:g}x); stop {r0['stop']}, success {r0['success']}")
    pieces = ", ".join(f"{k} {np.median([r['pieces_ms'][k] for r in runs]):.3f}" for k in PERIOD_PIECES)
    print(f"        per 20 ms period (excluding perception) {_median(runs, 'period_ms'):.3f} ms over "
          f"{r0['periods']} periods: {pieces} ms")
    if r0["updates"]:
        print(f"        {r0['updates']} perception updates: frame grab/render median {_median(runs, 'grab_ms'):.1f} ms, "
              f"estimate median {_median(runs, 'estimate_ms'):.1f} ms")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["oracle", "cnn"], default=None)
    ap.add_argument("--repeats", type=int, default=3, help="windows per kind (>= 1; medians over them)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    for kind in ([args.only] if args.only else ["oracle", "cnn"]):
        _report(kind, [_run(kind, args.seed) for _ in range(args.repeats)])


if __name__ == "__main__":
    main()
