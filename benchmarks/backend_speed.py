"""Speed of one control period through each backend, and the cost of recording.

Run: ``python -m benchmarks.backend_speed [--periods N]`` (needs the coppeliasim and ros extras;
it starts the CoppeliaSim test server and the SAS twin driver itself). Prints medians and ratios.

Figures, per backend, for a loop of read() + write() + advance() holding a slow sinusoid:
- wall time per period (median, p95) and periods per second of wall time;
- on the real-time ``sas`` backend: the achieved period (median, p95) against the configured
  one, and the joint-state age at read (backend clock: now - header stamp, median, p95), i.e.
  DDS latency plus the driver's publishing period;
Recording (twin): the same loop with an MCAP recorder (joint state every period + every
command) vs without (ratio); for one stereo frame (PNG, scale 1 and 0.5) the time the control
loop waits (a copy) and the time the recorder's writer thread spends encoding it.

The coppeliasim figure is against the twin-backed test server, whose server side is Python:
real CoppeliaSim answers each call faster, but the round-trip count per period (17 reads + 8
writes + 2 for the step and its `_*wait*_` handshake) is the backend's own.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _loop(hw, periods: int) -> dict:
    hw.configure()
    hw.activate()
    q0 = hw.read().position
    amp = 0.2 * hw.limits.velocity_max * hw.period_s * 20 * np.eye(8)[7]
    wall, ages, stamps = [], [], []
    for k in range(periods):
        t0 = time.perf_counter()
        s = hw.read()
        ages.append(hw.now() - s.stamp_s)
        hw.write(q0 + amp * np.sin(k / 20))
        hw.advance()
        wall.append(time.perf_counter() - t0)
        stamps.append(time.monotonic())
    hw.close()
    w, a, p = np.array(wall[5:]), np.array(ages[5:]), np.diff(stamps[5:])
    return {"wall_ms": (1e3 * np.median(w), 1e3 * np.percentile(w, 95)), "rate_hz": 1 / np.median(w),
            "age_ms": (1e3 * np.median(a), 1e3 * np.percentile(a, 95)),
            "period_ms": (1e3 * np.median(p), 1e3 * np.percentile(p, 95))}


def _line(name: str, r: dict, period_s: float, realtime: bool) -> str:
    text = (f"{name:<12} wall/period median {r['wall_ms'][0]:.3f} ms, p95 {r['wall_ms'][1]:.3f} ms "
            f"({r['rate_hz']:.0f} periods/s)")
    if realtime:
        text += (f"; achieved period median {r['period_ms'][0]:.2f} ms, p95 {r['period_ms'][1]:.2f} ms "
                 f"(configured {period_s * 1e3:g} ms); joint-state age median {r['age_ms'][0]:.2f} ms, "
                 f"p95 {r['age_ms'][1]:.2f} ms")
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--periods", type=int, default=1000)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from hw_bridge.recording import McapRecorder, RunMetadata
    from hw_bridge.registry import make_hardware
    from hw_bridge.test_peers.coppeliasim_server import start_test_server
    from hw_bridge.test_peers.sas_driver import start_sas_twin
    from scenes.spec import load_scene

    overrides = {"control.period_s": 0.01}
    scene = load_scene(None, overrides)
    base = _loop(make_hardware("twin", scene), args.periods)
    print(_line("twin", base, scene.control_period_s, False))
    with start_test_server(None, overrides, seed=0) as server:
        cop = _loop(make_hardware("coppeliasim", load_scene(None, server.scene_overrides), armed=True), args.periods)
    print(_line("coppeliasim", cop, scene.control_period_s, False)
          + f"; {cop['wall_ms'][0] / base['wall_ms'][0]:.1f}x the twin's")
    with start_sas_twin(None, overrides, seed=0) as driver:
        sas_scene = load_scene(None, driver.scene_overrides)
        sas = _loop(make_hardware("sas", sas_scene, armed=True), args.periods)
    print(_line("sas", sas, sas_scene.control_period_s, True))

    with tempfile.TemporaryDirectory() as tmp:
        meta = RunMetadata.for_run("benchmark", {}, "twin", 0, scene, overrides)
        rec = _loop(make_hardware("twin", scene, recorder=McapRecorder(Path(tmp) / "a.mcap", meta)), args.periods)
        size = (Path(tmp) / "a.mcap").stat().st_size
        print(f"recording    twin loop with a recorder: wall/period median {rec['wall_ms'][0]:.3f} ms = "
              f"{rec['wall_ms'][0] / base['wall_ms'][0]:.2f}x without; {size / args.periods:.0f} bytes/period")
        hw = make_hardware("twin", scene)
        hw.configure()
        hw.activate()
        while hw.grab_stereo() is None:
            hw.write(hw.read().position)
            hw.advance()
        frame = hw.grab_stereo()
        for scale in (1.0, 0.5):
            r = McapRecorder(Path(tmp) / f"f{scale}.mcap", meta, image_scale=scale)
            ts = []
            t_all = time.perf_counter()
            for k in range(5):
                t0 = time.perf_counter()
                r.on_frame(hw.now(), type(frame)(frame.stamp_s, frame.index + k, frame.left, frame.right))
                ts.append(time.perf_counter() - t0)
            r.close()                            # waits for the writer thread
            encode = (time.perf_counter() - t_all) / 5
            print(f"recording    one stereo frame at scale {scale:g}: the control loop waits median "
                  f"{1e3 * np.median(ts):.1f} ms; the writer thread encodes it in {1e3 * encode:.0f} ms; "
                  f"{(Path(tmp) / f'f{scale}.mcap').stat().st_size / 5 / 1e6:.2f} MB")
        hw.close()


if __name__ == "__main__":
    main()
