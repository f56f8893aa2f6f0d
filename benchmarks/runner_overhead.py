"""What the engines cost per case. Run: ``python -m benchmarks.runner_overhead [--cases N] [--repeats R]``.

Runs ``scenarios/twin_smoke.toml`` (N cases, default 8) with 2 workers on the local pool and as
Ray tasks on a local Ray instance with this machine's CPUs (2 here; started by the benchmark, its
start-up printed apart), R
times each (default 3). A run's overhead per case is its wall time minus the cases' own wall
time spread over the 2 workers, divided by the cases:
``(wall - sum(case wall) / 2) / N``; it holds process start-up, scheduling, passing contexts and
results, writing ``cases.jsonl``, the report and its plots. Medians over the repeats are printed
with the ratio Ray / local. On a 2-core machine shared with the cases, this measures contention
too; on a cluster the per-case overhead is what matters against cases that take seconds.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

WORKERS = 2


def _run(engine: str, n: int) -> tuple[float, float]:
    """(wall s, overhead per case s) of one run."""
    from scenarios.runner import run_suite
    from scenarios.suite import load_suite

    suite = load_suite(Path(__file__).resolve().parent.parent / "scenarios" / "twin_smoke.toml")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_suite(suite, Path(tmp) / "out", workers=WORKERS if engine == "local" else None, n_cases=n,
                  progress=False, engine=engine)
        wall = time.perf_counter() - t0
        cases = json.loads((Path(tmp) / "out" / "results.json").read_text())["cases"]
    busy = sum(c["wall_s"] for c in cases) / WORKERS
    return wall, (wall - busy) / n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8, choices=range(1, 201), metavar="N (1..200)")
    ap.add_argument("--repeats", type=int, default=3, choices=range(1, 21), metavar="R (1..20)")
    args = ap.parse_args(argv)
    import ray

    from scenarios.engines import connect_ray

    t0 = time.perf_counter()
    connect_ray(None)                   # a new local instance with this machine's CPUs
    print(f"Ray local instance start-up: {time.perf_counter() - t0:.1f} s (once per driver)")
    _run("ray", 2)                      # warm-up: worker processes and imports
    figures = {}
    for engine in ("local", "ray"):
        runs = [_run(engine, args.cases) for _ in range(args.repeats)]
        figures[engine] = (float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs])))
        print(f"{engine:5s}: {args.cases} twin_smoke cases, {WORKERS} workers: wall median {figures[engine][0]:.1f} s, "
              f"overhead per case median {1e3 * figures[engine][1]:.0f} ms ({args.repeats} runs)")
    print(f"ray / local: wall {figures['ray'][0] / figures['local'][0]:.2f}x, overhead per case "
          f"{figures['ray'][1] * 1e3:.0f} ms vs {figures['local'][1] * 1e3:.0f} ms")
    ray.shutdown()


if __name__ == "__main__":
    main()
