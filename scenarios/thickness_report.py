"""The thickness classifier's ablation table, as in seed 000's tables, from trained weights.

    python -m scenarios.thickness_report --data DIR/data --weights DIR [--baseline completion ...]
        [--out docs/thickness_tables.md]

reads the held-out scenes (56..63) of the cached samples (``micromill train thickness``'s
``data/thickness_samples.npz``), every variant's weights in ``--weights`` (``thickness.pt``,
``thickness_<variant>.pt``) and the window-crop completion CNN(s) ``--baseline`` (shipped name
or .pt; ``scenarios.thickness_baseline``), and writes markdown:

- the ablation table: per variant top-1, top-3, within one class, MAE (all, and where the true
  thickness is below 60 um), "through" precision/recall, crops/s on one thread (the classifier's
  ``classify`` on uint8 crops, batches of 64, median of 20) and the weights' size, beside the
  seed's figures; per camera crop (what the networks were trained on) and fused over both
  cameras (the in-loop sensor: mean of the two cameras' probabilities where both see a point);
- the regression baseline rows (left camera only: its network reads the window crop);
- the shipped model's per-class table.

Measured numbers, never typed in: regenerate after retraining.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

SEED_000 = {"top1": 0.8352, "top3": 0.9688, "fps": 90.0}
VARIANT_ORDER = ("full", "no_fgaf", "no_cnsn", "no_weighted_loss", "regression")
VARIANT_TEXT = {"full": "full (FGAF + CrossNorm/SelfNorm + depth-weighted loss)", "no_fgaf": "without FGAF",
                "no_cnsn": "without CrossNorm/SelfNorm", "no_weighted_loss": "without the weighted loss",
                "regression": "same network, regression head (L1)"}


def held_out(data_dir: Path, first_scene: int):
    from scenarios.thickness_dataset import ThicknessSamples
    s = ThicknessSamples.load(Path(data_dir) / "thickness_samples.npz")
    return s, s.scene_index >= first_scene


def fuse_cameras(probs: np.ndarray, view_id: np.ndarray, point: np.ndarray, thickness_m: np.ndarray):
    """Per (view, point): the mean of the cameras' probabilities (or estimates); returns it and the truth."""
    key = view_id.astype(np.int64) * 1024 + point.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    counts = np.bincount(inv).astype(float)
    if probs.ndim == 2:
        fused = np.zeros((len(uniq), probs.shape[1]))
        np.add.at(fused, inv, probs)
        fused /= counts[:, None]
    else:
        fused = np.bincount(inv, weights=probs) / counts
    truth = np.zeros(len(uniq))
    truth[inv] = thickness_m
    return fused, truth


def crops_per_s(classifier, crops: np.ndarray, repeats: int = 20) -> float:
    import torch
    torch.set_num_threads(1)
    batch = crops[:64]
    classifier.classify(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        classifier.classify(batch)
        times.append(time.perf_counter() - t)
    return len(batch) / float(np.median(times))


def _p(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _u(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def row(name: str, m: dict, rate: float | None, size_mb: float | None) -> str:
    return (f"| {name} | {m['n']} | {_p(m['top1'])} | {_p(m['top3'])} | {_p(m['within_one'])} | {_u(m['mae_um'])} | "
            f"{_u(m['mae_below_60um_um'])} | {_u(m['mae_bone_below_60um_um'])} | {_p(m['through_precision'])} / {_p(m['through_recall'])} | "
            f"{'–' if rate is None else f'{rate:.0f}'} | {'–' if size_mb is None else f'{size_mb:.2f}'} |")


HEADER = ("| variant | crops | top-1 | top-3 | within one class | MAE (um) | MAE, true < 60 um (um) | "
          "MAE, bone left 0.5-60 um (um) | through precision / recall | crops/s, 1 thread | weights (MB) |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def build(data_dir: Path, weights_dir: Path, baselines: list[str], first_scene: int = 56,
          variants: tuple[str, ...] = VARIANT_ORDER) -> str:
    import torch
    from controllers.perception.completion_detector import load_estimator
    from controllers.perception.thickness_classifier import load_classifier
    from controllers.perception.thickness_training import evaluate_thickness
    from scenarios.thickness_baseline import regression_thickness
    from scenarios.train_thickness import variant_stem

    torch.set_num_threads(1)
    estimators = {b: load_estimator(b) for b in baselines}          # a bad baseline fails before the long work
    s, keep = held_out(data_dir, first_scene)
    crops, t_true = s.crops[keep], s.thickness_m[keep].astype(float)
    vid, pt = s.view_id[keep], s.point_index[keep]
    views = np.isin(s.view_ids, np.unique(vid))
    lines = [f"Held out: scenes {first_scene}..{int(s.scene_index.max())} of the cached samples "
             f"({len(crops)} camera crops, {int(views.sum())} views; generated {time.strftime('%Y-%m-%d')} "
             f"on {os.cpu_count()} cores). Per camera crop:", "", HEADER,
             f"| seed 000 (its own data: motile cells, depth classes) | – | {_p(SEED_000['top1'])} | "
             f"{_p(SEED_000['top3'])} | – | – | – | – | – | {SEED_000['fps']:.0f} fps | – |"]
    fused_lines, per_class = [], None
    for v in variants:
        path = weights_dir / f"{variant_stem(v)}.pt"
        if not path.is_file():
            lines.append(f"| {VARIANT_TEXT[v]} | not trained | | | | | | | | | |")
            continue
        clf = load_classifier(path)
        reading = clf.classify(crops)
        pred = reading.probs if v != "regression" else reading.thickness_m
        m = evaluate_thickness(pred, t_true)
        lines.append(row(VARIANT_TEXT[v], m, crops_per_s(clf, crops), path.stat().st_size / 1e6))
        fp, ft = fuse_cameras(pred, vid, pt, t_true)
        fused_lines.append(row(VARIANT_TEXT[v], evaluate_thickness(fp, ft), None, None))
        if v == "full":
            per_class = m["per_class"]
    for b in baselines:
        est, true = regression_thickness(estimators[b], s.__class__(**{
            **vars(s), "view_crops": s.view_crops[views], "view_points_uv": s.view_points_uv[views],
            "view_thickness_m": s.view_thickness_m[views],
            "view_initial_thickness_m": s.view_initial_thickness_m[views],
            "view_visible": s.view_visible[views], "view_ids": s.view_ids[views]}))
        lines.append(row(f"regression baseline: window completion CNN `{b}` (left camera, true t0)",
                         evaluate_thickness(est, true), None, None))
    lines += ["", "Fused over both cameras (the in-loop sensor's reading: the mean of the cameras' "
              "probabilities where both see the point, one camera's where the other does not):", "", HEADER,
              *fused_lines]
    if per_class:
        lines += ["", "Full model, per class (camera crops):", "", "| class (um) | true | predicted | recall |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r['name']} | {r['n_true']} | {r['n_predicted']} | {_p(r['recall'])} |" for r in per_class]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="the thickness classifier's ablation table (markdown)")
    ap.add_argument("--data", required=True, type=Path, help="folder holding thickness_samples.npz")
    ap.add_argument("--weights", required=True, type=Path, help="folder holding thickness*.pt")
    ap.add_argument("--baseline", action="append", default=[], help="completion CNN weights (name or .pt)")
    ap.add_argument("--variant", action="append", choices=VARIANT_ORDER,
                    help="only these variants (default: all five)")
    ap.add_argument("--out", type=Path, help="markdown file to write (default: print)")
    args = ap.parse_args(argv)
    text = build(args.data, args.weights, args.baseline, variants=tuple(args.variant or VARIANT_ORDER))
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
