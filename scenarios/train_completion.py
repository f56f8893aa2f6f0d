"""``micromill train completion``: render milled windows with the twin, train the completion
network on CPU, evaluate it on held-out scenes, and write the weights plus a model card
(``completion.pt`` and ``completion.md``).

The whole command is meant to fit in ``--budget-min`` (default 19 min) on a 2-core CPU
machine: data generation runs in ``workers`` processes, training gets what is left after a
reserve for evaluation and stops early (saying so in the card) if it runs out.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from controllers.perception.completion_detector import load_estimator
from controllers.perception.completion_training import (READING_LEVELS, THROUGH_LEVEL, UNTOUCHED_LEVEL,
                                                        BandErrors, CompletionTrainSettings, band_errors,
                                                        band_table_markdown, completion_metrics, predict_levels,
                                                        reading_rates, train_completion)
from controllers.perception.weights_io import WEIGHTS_DIR
from scenarios.completion_dataset import PROFILE_KINDS, CompletionDataSettings, generate_completion_samples

N_SCENES = 64
VALIDATION_SCENE_FRACTION = 0.12
EVAL_RESERVE_S = 60.0
MIN_TRAIN_S = 60.0


#: the rows of a model card's table of ``CompletionMetrics`` (as dicts): name, formatter
METRIC_ROWS = [
    ("points (untouched / through)", lambda m: f"{m['n_points']} ({m['n_untouched']} / {m['n_through']})"),
    ("MAE (pct. points)", lambda m: f"{m['mae_pct']:.2f}"),
    ("MAE, untouched points", lambda m: f"{m['mae_untouched_pct']:.2f}"),
    ("MAE, through points", lambda m: f"{m['mae_through_pct']:.2f}"),
    ("95th percentile of the error", lambda m: f"{m['p95_abs_error_pct']:.2f}"),
    ("through decision: precision / recall", lambda m: f"{m['through_precision']:.3f} / {m['through_recall']:.3f}"),
    ("largest estimate on an untouched point / smallest on a through point (%)",
     lambda m: f"{m['untouched_max_pct']:.1f} / {m['through_min_pct']:.1f}")]


def _card_markdown(card: dict) -> str:
    log = card["train_log"]
    load = " / ".join(f"{v:.1f}" for v in card["load_average_1min"])
    shared = (" (shared with other jobs: times are longer than on a free machine)"
              if max(card["load_average_1min"]) > card["cpu_count"] else "")
    lines = ["# Completion-level estimator", "",
             "Window-crop encoder-decoder (controllers/perception/completion_net.py) giving a per-pixel "
             "completion map c in [0, 1] (0 untouched bone, 1 cut through), sampled at the trajectory "
             "points. Trained only on twin renders; NOT validated on real MSCS images (no bone dust, blood, "
             "irrigation or real bone optics in the twin): retrain or fine-tune on labelled real frames "
             "before trusting it on the rig.", "",
             f"- trained: {card['trained_at']} in {card['wall_s']:.0f} s wall (data {card['data_wall_s']:.0f} s, "
             f"training {log['wall_s']:.0f} s, evaluation {card['eval_wall_s']:.0f} s), torch {card['torch']}, "
             f"{card['threads']} CPU thread(s) for training, {card['data']['workers']} data processes; CPU load "
             f"average (1 min) at start / after data / after training: {load} on {card['cpu_count']} cores{shared}",
             f"- data: {json.dumps(card['data'])}",
             f"- profiles (kinds of milled state): {', '.join(PROFILE_KINDS)}",
             f"- crops: {card['n_train']} train / {card['n_val']} validation (validation = held-out scenes "
             f"{card['val_scenes']})",
             f"- crop: {json.dumps(card['crop'])}",
             f"- training: {json.dumps(card['training'])}",
             f"- epochs done: {log['epochs_done']} of {log['epochs_planned']} planned (first-epoch loss "
             f"{log['first_loss']:.4f}, last {log['loss']:.4f}); stopped by time budget: {log['stopped_by_budget']}",
             f"- weights: {card['weights_bytes'] / 1e6:.2f} MB", "",
             "## Validation at the trajectory points (held-out scenes)", "",
             "Error = |c_estimated - c_true| in percentage points of completion (c x 100), at the "
             f"{card['data']['n_points']} trajectory points of every validation crop (the drill may hide "
             "some). The paper reports 24.32 % \"MAPE\" for its network; this MAE in points is the "
             "closest comparable number (a percentage error relative to c_true is undefined at c = 0). "
             f"\"Through\" = c >= {THROUGH_LEVEL}, \"untouched\" = c <= {UNTOUCHED_LEVEL}.", "",
             "Points showing bone are the ones the controller uses (it drops points hidden by the drill); "
             "\"all points\" includes the hidden ones, where the map is extrapolated from the surroundings.", "",
             "| metric | " + " | ".join(card["validation"]) + " |", "| --- |" + " --- |" * len(card["validation"])]
    for name, fmt in METRIC_ROWS:
        lines.append(f"| {name} | " + " | ".join(fmt(m) for m in card["validation"].values()) + " |")
    lines += ["", "## Readings at the high end (points showing bone, one frame each)", "",
              "Fraction of estimates at or above a through threshold, by true completion: a planner that "
              "stops a point at the first reading above its threshold stops early on the rows below 0.98.", "",
              "| c_true | points | " + " | ".join(f">= {t}" for t in READING_LEVELS) + " |",
              "| --- | --- |" + " --- |" * len(READING_LEVELS)]
    for r in card["reading_rates"]:
        closing = "]" if r["true_max"] >= 1.0 else ")"
        lines.append(f"| [{r['true_min']}, {r['true_max']}{closing} | {r['n']} | "
                     + " | ".join(f"{r['at_or_above'][str(t)]:.3f}" for t in READING_LEVELS) + " |")
    lines += ["", "## Error by band of the true completion (points showing bone, validation scenes)", "",
              "MAE and bias (mean estimated - true) in completion units; \"early\": points not yet near "
              "through read as through; \"late\": through points not read as through.", ""]
    lines += band_table_markdown({"this model": BandErrors(**card["bands"])})
    return "\n".join(lines) + "\n"


def train_completion_model(out_dir: Path | None = None, seed: int = 0, workers: int = 2, budget_min: float = 19.0,
                           n_scenes: int | None = None, epochs: int | None = None, grooves: str = "rate_limited",
                           progress: bool = True) -> dict:
    """Generate, train, evaluate, save. ``grooves``: how the training grooves are cut
    (``CompletionDataSettings.grooves``). Returns the model card (also stored inside the weights
    and written as Markdown beside them), which records the machine's load average so that a
    run slowed by other work on a shared CPU says so."""
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    data = CompletionDataSettings(n_scenes or N_SCENES, seed=seed, grooves=grooves)
    if data.n_scenes < 2:
        raise ValueError(f"n_scenes={data.n_scenes}: need >= 2 (the last {VALIDATION_SCENE_FRACTION:.0%}, at least "
                         f"one, are held out for validation)")
    with tqdm(total=data.n_scenes, desc="completion data", unit="scene", disable=not progress) as bar:
        samples = generate_completion_samples(data, workers=workers, progress=bar.update)
    data_wall = time.perf_counter() - t0
    load.append(os.getloadavg()[0])
    first_val = min(round(data.n_scenes * (1 - VALIDATION_SCENE_FRACTION)), data.n_scenes - 1)
    val = samples.scene_index >= first_val
    train, held = samples.subset(~val), samples.subset(val)
    settings = CompletionTrainSettings(seed=seed, **({"epochs": epochs} if epochs else {}),
                                       time_budget_s=max(MIN_TRAIN_S, budget_min * 60.0 - data_wall - EVAL_RESERVE_S))
    estimator, log = train_completion(train.crops, train.target, train.valid, data.crop, settings, train.hidden,
                                      progress)
    load.append(os.getloadavg()[0])
    t_eval = time.perf_counter()
    estimated = predict_levels(estimator, held.crops, held.points_uv)
    metrics = {"all points": completion_metrics(estimated, held.levels).to_dict(),
               "points showing bone": completion_metrics(estimated[held.point_visible],
                                                         held.levels[held.point_visible]).to_dict()}
    rates = reading_rates(estimated[held.point_visible], held.levels[held.point_visible])
    bands = band_errors(estimated[held.point_visible], held.levels[held.point_visible])
    path = out_dir / "completion.pt"
    card = {"trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": seed, "torch": str(torch.__version__),
            "threads": settings.threads, "data": {**data.to_dict(), "workers": workers}, "crop": data.crop.to_dict(),
            "net": estimator.net.config.to_dict(), "training": settings.to_dict(), "train_log": vars(log),
            "n_train": len(train), "n_val": len(held), "val_scenes": f"{first_val}-{data.n_scenes - 1}",
            "data_wall_s": data_wall, "eval_wall_s": time.perf_counter() - t_eval,
            "load_average_1min": load, "cpu_count": os.cpu_count(), "validation": metrics,
            "reading_rates": rates, "bands": bands.to_dict()}
    estimator.save(path, card)
    card["weights_bytes"] = path.stat().st_size
    card["wall_s"] = time.perf_counter() - t0
    estimator.save(path, card)
    load_estimator(path)                                  # what we ship must load
    (out_dir / "completion.md").write_text(_card_markdown(card))
    return card


def summary_lines(card: dict) -> list[str]:
    """What ``micromill train completion`` prints."""
    log = card["train_log"]
    lines = [f"held-out {name} ({m['n_points']}): MAE {m['mae_pct']:.2f} pct. points (untouched "
             f"{m['mae_untouched_pct']:.2f}, through {m['mae_through_pct']:.2f}); through decision precision "
             f"{m['through_precision']:.3f}, recall {m['through_recall']:.3f}"
             for name, m in card["validation"].items()]
    return lines + [
            f"wall {card['wall_s']:.0f} s (data {card['data_wall_s']:.0f} s); epochs {log['epochs_done']}/"
            f"{log['epochs_planned']}; weights {card['weights_bytes'] / 1e6:.2f} MB; stopped by time budget: "
            f"{log['stopped_by_budget']}"]

