"""Wall time of whole seeded milling cases, phase by phase. Run: ``python -m benchmarks.case_speed``.

Runs the first ``--cases`` (default 3) cases of a milling suite (``scenarios/milling.toml``, the
completion CNN; ``--suite milling_oracle`` for the sim-only oracle) through the runner's own
``make_cases`` and ``run_case``, one after the other on one core (torch/OpenCV/OpenMP threads =
1), and prints the median wall time of each phase from the job's notes:

- ``calibration``: the rig's calibration (the first case's; later cases reuse it, cached per
  process as in a suite worker);
- ``world``: the case's hardware interface and twin world (skull, renderer, arm);
- ``fit``: the fit stage (park, bregma/lambda, dense stereo, local refinement);
- ``milling``: the milling stage (drill on to stop);
- ``case``: the whole case without the calibration (networks, scene, world, fit, milling,
  scoring), against the target (issue 12): <= 6 s per case.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

TARGET_CASE_S = 6.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3, help="cases to run (the suite's first N)")
    ap.add_argument("--suite", choices=["milling", "milling_oracle"], default="milling")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import torch

    from benchmarks.timing import phase_medians
    from scenarios.cases import make_cases, run_case
    from scenarios.suite import load_suite

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    suite = load_suite(Path("scenarios") / f"{args.suite}.toml")
    samples, calibration_s = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for ctx in make_cases(suite, args.cases, suite.seed, Path(tmp), n_artifact_cases=0):
            res = run_case(suite.job, ctx)
            if res.error is not None:
                raise SystemExit(f"case {ctx.index} failed:\n{res.error}")
            n = res.notes
            if calibration_s is None:
                calibration_s = n["calibration_wall_s"]
            samples.append({"world": n["world_wall_s"], "fit": n["fit_wall_s"], "milling": n["milling_wall_s"],
                            "case": res.wall_s - n["calibration_wall_s"]})
            print(f"case {ctx.index}: world {samples[-1]['world']:.2f} s, fit {samples[-1]['fit']:.2f} s, "
                  f"milling {samples[-1]['milling']:.2f} s, case {samples[-1]['case']:.2f} s "
                  f"({n['stop']})")
    med = phase_medians(samples)
    print(f"{args.suite}, {len(samples)} cases, one core: calibration {calibration_s:.2f} s (first case, "
          f"cached afterwards); medians: world {med['world']:.2f} s, fit {med['fit']:.2f} s, "
          f"milling {med['milling']:.2f} s, whole case {med['case']:.2f} s (target <= {TARGET_CASE_S:g} s)")


if __name__ == "__main__":
    main()
