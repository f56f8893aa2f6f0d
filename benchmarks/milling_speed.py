"""Real-time factor of closed-loop milling on the twin. Run: ``python -m benchmarks.milling_speed``.

A whole window (drill on to stop) on the default skull at the milling control rate (50 Hz),
from the ideal (ground-truth) trajectory so the figure is the milling loop alone: controller
(planner, DQ Robotics QP, completion sensing), ``hw_bridge`` checks, and the twin (arm, bone
removal, rendering when the sensor looks at images). One CPU core (torch/OpenCV threads = 1).

Figures: simulated time, wall time and real-time factor (simulated / wall) for
- ``oracle``: the sim-only oracle (no images are rendered);
- ``cnn``: the completion CNN on rendered stereo frames at the loop's perception rate;
plus medians of the per-period pieces (control step with the twin step inside it, the bone
model's step) and of one perception update (render + CNN). Targets (issue 4): >= 100x with the
oracle, >= 10x with the CNN.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _run(kind: str, seed: int) -> dict:
    from controllers.completion_sensing import CameraCompletionSensor
    from controllers.milling import MillingSettings, mill_window
    from controllers.perception.completion_detector import load_estimator
    from controllers.pipeline import open_session
    from hw_bridge.registry import make_hardware
    from scenes.spec import load_scene
    from scenarios.scoring import ideal_camera, ideal_trajectory, score_milling
    from twin.completion_oracle import OracleCompletionSensor, OracleErrorModel

    hw = make_hardware("twin", load_scene("default", {"control.period_s": 0.02, "skull.seed": seed}), seed)
    try:
        session = open_session(hw)
        gt = hw.ground_truth
        traj = ideal_trajectory(gt)
        if kind == "oracle":
            sensor = OracleCompletionSensor(gt, OracleErrorModel(mae=0.0), np.random.default_rng(seed))
        else:
            model, T = ideal_camera(gt, traj)
            sensor = CameraCompletionSensor(load_estimator(), model, T, traj.centre_mi, hw.rig.drill)
        mill_steps, percepts = [], []
        step0, est0 = gt.mill.step, sensor.estimate

        def timed_step(*a, **k):
            t = time.perf_counter()
            out = step0(*a, **k)
            mill_steps.append(time.perf_counter() - t)
            return out

        def timed_estimate(*a, **k):
            t = time.perf_counter()
            out = est0(*a, **k)
            percepts.append(time.perf_counter() - t)
            return out

        gt.mill.step, sensor.estimate = timed_step, timed_estimate
        t_wall = time.perf_counter()
        t_sim = hw.now()
        grab0 = hw.grab_stereo
        grabs = []

        def timed_grab():
            t = time.perf_counter()
            out = grab0()
            grabs.append(time.perf_counter() - t)
            return out

        hw.grab_stereo = timed_grab
        rep = mill_window(session.loop, session.pc, traj, sensor, MillingSettings())
        wall = time.perf_counter() - t_wall
        sim = hw.now() - t_sim
        m = score_milling(gt, rep)
        return {"kind": kind, "sim_s": sim, "wall_s": wall, "rtf": sim / wall, "stop": rep.stop_reason.value,
                "success": m["success"], "periods": len(mill_steps),
                "period_ms": 1e3 * (wall - sum(percepts) - sum(grabs)) / max(len(mill_steps), 1),
                "mill_step_ms": 1e3 * float(np.median(mill_steps)),
                "perception_ms": 1e3 * float(np.median(percepts)) if percepts else 0.0,
                "render_ms": 1e3 * float(np.median(grabs)) if grabs else 0.0, "updates": len(percepts)}
    finally:
        hw.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["oracle", "cnn"], default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    for kind in ([args.only] if args.only else ["oracle", "cnn"]):
        r = _run(kind, args.seed)
        target = 100.0 if kind == "oracle" else 10.0
        print(f"{kind:6s}: {r['sim_s']:.1f} s simulated in {r['wall_s']:.1f} s wall -> real-time factor "
              f"{r['rtf']:.1f}x (target >= {target:g}x); stop {r['stop']}, success {bool(r['success'])}")
        print(f"        per 20 ms period (excluding perception) {r['period_ms']:.3f} ms over {r['periods']} periods; "
              f"bone-model step median {r['mill_step_ms']:.3f} ms; {r['updates']} perception updates: "
              f"frame grab/render median {r['render_ms']:.1f} ms, estimate median {r['perception_ms']:.1f} ms")


if __name__ == "__main__":
    main()
