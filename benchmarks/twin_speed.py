"""Speed of the twin. Run: ``python -m benchmarks.twin_speed`` (prints medians and ratios).

Figures:
- stereo render, full resolution, one core: warm (drill moved, skull unchanged: the loop's
  case) and cold (skull changed: cache rebuilt), median ms per pair;
- PyBullet step rate of the arm (steps/s);
- DQ Robotics FK and pose-Jacobian evaluations per second;
- real-time factor of a 1 kHz control loop moving the arm through ``hw_bridge`` (simulated
  time / wall time), without and with grabbing every camera frame (30 Hz).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.timing import median_s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    from hw_bridge.registry import make_hardware
    from scenes.spec import load_scene
    from twin.world import TwinWorld

    scene = load_scene()
    world = TwinWorld(scene, seed=0)
    robot = world.robot
    rng = np.random.default_rng(0)
    q_home = scene.robot.home_q
    poses = [robot.fk(q_home + rng.normal(0, 0.002, 8) * [0, 0, 1, 1, 1, 1, 1, 1]) for _ in range(args.repeats)]
    world.renderer.render(poses[0], rng)
    it = iter(poses * 3)
    warm = 1e3 * median_s(lambda: world.renderer.render(next(it), rng), args.repeats)

    def cold():
        world.skull.mark_changed()
        world.renderer.render(poses[0], rng)

    cold_ms = 1e3 * median_s(cold, max(5, args.repeats // 5))

    arm = world.arm
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        arm.step()
    step_rate = n / (time.perf_counter() - t0)

    qs = [q_home + rng.normal(0, 0.05, 8) * [0, 0, 1, 1, 1, 1, 1, 1] for _ in range(2000)]
    t0 = time.perf_counter()
    for q in qs:
        robot.dq_robot.fkm(q)
    fk_rate = len(qs) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q in qs:
        robot.dq_robot.pose_jacobian(q)
    jac_rate = len(qs) / (time.perf_counter() - t0)
    world.close()

    def rtf(grab: bool, seconds: float = 3.0) -> float:
        hw = make_hardware("twin", scene, 0)
        hw.configure()
        hw.activate()
        q0 = hw.read().position
        amp = 0.5 * hw.limits.velocity_max        # sinusoid at half the velocity limit, 1 Hz
        steps = int(seconds / hw.period_s)
        t0 = time.perf_counter()
        for k in range(steps):
            t = k * hw.period_s
            hw.read()
            hw.write(q0 + amp / (2 * np.pi) * np.sin(2 * np.pi * t) * np.r_[0, 0, np.ones(6)])
            hw.advance()
            if grab:
                hw.grab_stereo()
        wall = time.perf_counter() - t0
        hw.close()
        return seconds / wall

    rtf_plain, rtf_cams = rtf(False), rtf(True)
    print("micromill twin benchmark (one core)")
    print(f"  stereo render 960x540, warm (drill moves)   median {warm:7.2f} ms/pair   target <= 20 ms "
          f"({'met' if warm <= 20 else 'NOT met'}; {20 / warm:.2f}x of budget)")
    print(f"  stereo render 960x540, cold (skull changed) median {cold_ms:7.2f} ms/pair")
    print(f"  arm servo step rate (PyBullet synced lazily) {step_rate:10.0f} steps/s")
    print(f"  DQ Robotics FK                              {fk_rate:10.0f} evals/s")
    print(f"  DQ Robotics pose Jacobian                   {jac_rate:10.0f} evals/s")
    print(f"  1 kHz loop via hw_bridge, arm moving        real-time factor {rtf_plain:6.2f}x")
    print(f"  ... and grabbing every 30 Hz camera frame   real-time factor {rtf_cams:6.2f}x")


if __name__ == "__main__":
    main()
