"""Speed of bone removal and of re-rendering a milled skull. Run:
``python -m benchmarks.milling_physics_speed`` (prints medians; one core).

Figures:
- ``BoneMill.step`` in contact: the burr moving 60 um per step (one 20 ms control period at
  3 mm/s) along a 2 mm circle, drill on, 30 um into untouched bone (first pass) and 30 um
  below the floor of a 0.27 mm deep groove (late pass: the groove walls are in reach, every
  cell under the burr is evaluated); and without contact (1 mm above the bone, the fast path);
- ``TwinWorld.step`` at a 20 ms control period: arm holding still above the skull (no
  contact), and the arm following the same kind of circle, burr in the bone, drill on;
- one stereo frame (both cameras, sensor noise, drill drawn) with the skull unchanged (the
  floor), after a world step that milled a little (incremental refresh) and after marking the
  whole skull changed (full refresh, what every change cost before the incremental refresh),
  and the ratio of the last two.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.timing import median_s


def _circle_s(skull, centre, radius, n, step_m, depth_m, burr_radius_m) -> np.ndarray:
    """Burr centres (n, 3) in {S} along a circle, ``depth_m`` into the (current) outer surface."""
    th = step_m / radius * np.arange(n)
    x, y = centre[0] + radius * np.cos(th), centre[1] + radius * np.sin(th)
    return np.stack([x, y, skull.outer_height(x, y) + burr_radius_m - depth_m], axis=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="mill / world steps per figure")
    ap.add_argument("--frames", type=int, default=15, help="stereo frames per figure")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    from scenes.spec import load_scene
    from twin.milling import BoneMill, carve_sphere
    from twin.skull import Skull, SkullParams
    from twin.world import TwinWorld

    scene = load_scene(overrides={"control.period_s": 0.02})
    rb, dt = scene.milling.burr_radius_m, 0.02
    step_m = 3e-3 * dt                                      # 60 um per period at 3 mm/s

    # ---- BoneMill alone ------------------------------------------------------------------------
    skull = Skull(SkullParams(**scene.skull.params))
    mill = BoneMill(skull, scene.milling)
    centre = (0.0, -skull.params.bregma_lambda_m / 3)
    lap = int(2 * np.pi * 2e-3 / step_m)                # one lap of the 2 mm circle: fresh bone
    path = _circle_s(skull, centre, 2e-3, lap + 1, step_m, 30e-6, rb)

    def mill_pass(points) -> tuple[float, float]:
        """Median step time (us) and the fraction of steps in contact along ``points``."""
        it = iter(range(len(points) - 1))
        contact = []

        def one():
            k = next(it)
            contact.append(mill.step(dt * (k + 1), points[k], points[k + 1], True, 38000.0, dt).in_contact)
        return 1e6 * median_s(one, len(points) - 1), float(np.mean(contact))

    mill_shallow_us, shallow_contact = mill_pass(path)
    # a 0.27 mm deep groove on a 1 mm circle (clear of the first), milled 30 um deeper
    groove = _circle_s(skull, centre, 1e-3, lap // 2 + 1, step_m, 0.27e-3, rb)
    for p in groove:
        carve_sphere(skull, p, rb)
    mill_deep_us, deep_contact = mill_pass(groove - [0.0, 0.0, 30e-6])
    above = path[0] + [0.0, 0.0, 1e-3]
    mill_free_us = 1e6 * median_s(lambda: mill.step(1.0, above, above + [step_m, 0.0, 0.0], True, 38000.0, dt),
                              args.steps)

    # ---- TwinWorld.step ----------------------------------------------------------------------
    world = TwinWorld(scene, seed=0)
    world_free_us = 1e6 * median_s(world.step, args.steps)
    path_w = _circle_s(world.skull, centre, 2e-3, args.steps + args.frames + 1, step_m, 30e-6, rb)
    qs = [world.joints_placing_burr_at(path_w[0], scene.robot.home_q)]
    for p in path_w[1:]:
        qs.append(world.joints_placing_burr_at(p, qs[-1]))
    world.arm.reset(qs[0])
    world.drill_on, world.drill_speed_rpm = True, 38000.0
    targets = iter(qs[1:])
    world_contact = []

    def world_step():
        world.arm.set_target(next(targets))
        world.step()
        world_contact.append(world.last_contact.in_contact)

    world_contact_us = 1e6 * median_s(world_step, args.steps)

    # ---- stereo frame after a small cut ------------------------------------------------------------
    rng = np.random.default_rng(0)
    renderer = world.renderer

    def frame_after_cut():
        world.arm.set_target(next(targets))
        world.step()
        T = world.robot.fk(world.arm.state()[0])
        t0 = time.perf_counter()
        renderer.render(T, rng)
        return time.perf_counter() - t0

    renderer.render(world.robot.fk(world.arm.state()[0]), rng)
    inc_ms = 1e3 * float(np.median([frame_after_cut() for _ in range(args.frames)]))
    T_now = world.robot.fk(world.arm.state()[0])
    same_ms = 1e3 * median_s(lambda: renderer.render(T_now, rng), args.frames)

    def frame_full():
        world.skull.mark_changed()
        T = world.robot.fk(world.arm.state()[0])
        t0 = time.perf_counter()
        renderer.render(T, rng)
        return time.perf_counter() - t0

    full_ms = 1e3 * float(np.median([frame_full() for _ in range(max(args.frames // 3, 3))]))
    world.close()

    print("micromill milling physics benchmark (one core; medians)")
    print(f"  BoneMill.step, 60 um move, first pass   {mill_shallow_us:8.1f} us   target <= 150 us "
          f"({shallow_contact:.0%} of steps in contact)")
    print(f"  BoneMill.step, 60 um move, 0.3 mm deep  {mill_deep_us:8.1f} us   target <= 150 us "
          f"({deep_contact:.0%} of steps in contact)")
    print(f"  BoneMill.step, no contact (fast path)   {mill_free_us:8.1f} us   target ~10 us")
    print(f"  TwinWorld.step, 20 ms period, idle      {world_free_us:8.1f} us")
    print(f"  TwinWorld.step, 20 ms period, milling   {world_contact_us:8.1f} us   "
          f"({np.mean(world_contact):.0%} of steps in contact)")
    print(f"  stereo frame, skull unchanged           {same_ms:8.2f} ms   (the floor: drill and noise)")
    print(f"  stereo frame after a small cut          {inc_ms:8.2f} ms   (incremental refresh)")
    print(f"  stereo frame after a full refresh       {full_ms:8.2f} ms")
    print(f"  ratio full / incremental                {full_ms / inc_ms:8.2f} x")


if __name__ == "__main__":
    main()
