"""Held-out error of completion weights by band of the true completion, on freshly rendered
grooves (by default the rate-limited grooves the milling loop cuts).

    python -m scenarios.completion_eval [WEIGHTS ...] [--scenes N] [--seed S] [--workers N]
                                        [--grooves rate_limited|carve] [--out FILE.json]

WEIGHTS: shipped names or ``.pt`` paths, each optionally ``LABEL=`` prefixed (default: the
shipped ``completion``); every one is judged on the same samples. The scenes use ``--seed`` (default 1000; training uses 0, so
these are scenes no weights were trained or validated on). Printed: per band of true c
(``completion_training.COMPLETION_BANDS`` and exactly 1) the number of points, the MAE and
the bias (mean estimated - true, completion units) at the trajectory points that show bone
(the ones the controller uses), the fraction of points with c < 0.97 read >= 0.99 (read
through early) and of through points read < 0.99; ``--out`` also writes them, for all points
too, as JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from controllers.perception.completion_detector import load_estimator
from controllers.perception.completion_training import BandErrors, band_errors, band_table_markdown, predict_levels
from scenarios.completion_dataset import GROOVE_MODELS, CompletionDataSettings, generate_completion_samples

DEFAULT_SEED = 1000
DEFAULT_SCENES = 16


def evaluate_bands(weights: list[str], settings: CompletionDataSettings, workers: int = 1
                   ) -> tuple[dict[str, dict[str, BandErrors]], int]:
    """Render ``settings``' samples once and judge each of ``weights`` (``[LABEL=]name or
    path``) on them. Returns, per label (the name where none is given), ``{"points showing bone": ..., "all points": ...}``, and the number of crops."""
    samples = generate_completion_samples(settings, workers=workers)
    seen = samples.point_visible
    out = {}
    for item in weights:
        label, _, name = item.rpartition("=")
        est = predict_levels(load_estimator(name), samples.crops, samples.points_uv)
        out[label or name] = {"points showing bone": band_errors(est[seen], samples.levels[seen]),
                     "all points": band_errors(est, samples.levels)}
    return out, len(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.completion_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="*", default=["completion"], help="[LABEL=]shipped name or .pt path")
    p.add_argument("--scenes", type=int, default=DEFAULT_SCENES, help=f"scenes to render (default {DEFAULT_SCENES})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"scene seed (default {DEFAULT_SEED})")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--grooves", choices=GROOVE_MODELS, default="rate_limited", help="how the grooves are cut")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = CompletionDataSettings(args.scenes, seed=args.seed, grooves=args.grooves)
    t0 = time.perf_counter()
    results, n_crops = evaluate_bands(args.weights, settings, args.workers)
    print(f"{n_crops} crops from {args.scenes} scenes (seed {args.seed}, {args.grooves} grooves), "
          f"{time.perf_counter() - t0:.0f} s; points showing bone:")
    print("\n".join(band_table_markdown({n: r["points showing bone"] for n, r in results.items()})))
    if args.out is not None:
        args.out.write_text(json.dumps({"data": settings.to_dict(), "n_crops": n_crops,
                                        "results": {n: {k: v.to_dict() for k, v in r.items()}
                                                    for n, r in results.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
