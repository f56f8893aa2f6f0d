"""``micromill train thickness``: render groove point crops with the twin (or load them), train the
thickness classifier (or one of its ablations) on CPU, evaluate it on held-out scenes, and write
the weights, a model card and the metrics (issue 15).

Data: ``scenarios.thickness_dataset`` renders scenes 0..63 of the seed in one call; scenes
0..55 train (validation for the best epoch: the last ``VAL_SCENES`` of those), scenes 56..63
are held out and only evaluated. The samples are saved as ``<out>/data/thickness_samples.npz``
(with ``data_settings.json``) so that the ablation variants reuse them with ``--data``.

Variants (``VARIANTS``): ``full`` (FGAF + CrossNorm/SelfNorm + depth-weighted loss),
``no_fgaf``, ``no_cnsn``, ``no_weighted_loss`` (lam = 0) and ``regression`` (L1 on the
thickness). Files: ``thickness.pt`` / ``thickness.md`` for ``full``, ``thickness_<variant>.pt``
/ ``.md`` for the others (so every variant can be written to one folder), and ``metrics.json``
holding the held-out metrics of every variant written to that folder (merged, by variant).

The whole command is meant to fit in ``--budget-min`` (default 20 min, data included) on a
2-core CPU machine: training gets what is left after the data and a reserve for evaluation.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from controllers.perception.thickness_classes import CLASS_NAMES, CROP_PX
from controllers.perception.thickness_classifier import load_classifier, save_classifier
from controllers.perception.thickness_net import ThicknessNetConfig
from controllers.perception.thickness_training import (ThicknessTrainSettings, evaluate_thickness, predict,
                                                       train_thickness_net)
from controllers.perception.weights_io import WEIGHTS_DIR

N_SCENES = 64
FIRST_HELD_OUT_SCENE = 56          # scenes 56..63: held out
VAL_SCENES = 6                     # the last 6 training scenes (50..55) choose the best epoch
EVAL_RESERVE_S = 30.0
MIN_TRAIN_S = 60.0
DATA_FILE = "thickness_samples.npz"
PAPER = {"top1": 0.8352, "top3": 0.9688, "fps": 90}      # seed 000's abstract

VARIANTS: dict[str, tuple[ThicknessNetConfig, dict]] = {
    "full": (ThicknessNetConfig(), {}),
    "no_fgaf": (ThicknessNetConfig(fgaf=False), {}),
    "no_cnsn": (ThicknessNetConfig(crossnorm_selfnorm=False), {}),
    "no_weighted_loss": (ThicknessNetConfig(), {"lam": 0.0}),
    "regression": (ThicknessNetConfig(head="regression"), {}),
}


def variant_stem(variant: str) -> str:
    return "thickness" if variant == "full" else f"thickness_{variant}"


def _split(samples, select: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(crops=samples.crops[select], thickness_m=np.asarray(samples.thickness_m)[select],
                           scene_index=np.asarray(samples.scene_index)[select])


def load_or_generate(data_dir: Path | None, save_dir: Path, seed: int, workers: int, progress: bool,
                     n_scenes: int = N_SCENES) -> tuple[object, dict, float]:
    """The samples (from ``data_dir/DATA_FILE`` if given, else rendered and saved under
    ``save_dir``), their settings as a dict, and the wall time spent (s)."""
    from scenarios.thickness_dataset import ThicknessDataSettings, ThicknessSamples, generate_thickness_samples

    t0 = time.perf_counter()
    if data_dir is not None:
        path = Path(data_dir) / DATA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no cached thickness samples (write them with `micromill train "
                                    f"thickness --out DIR`, then pass --data DIR/data)")
        samples = ThicknessSamples.load(path)
        meta_path = Path(data_dir) / "data_settings.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"source": str(path)}
        meta["loaded_from"] = str(path)
        return samples, meta, time.perf_counter() - t0
    settings = ThicknessDataSettings(n_scenes, seed=seed)
    with tqdm(total=settings.n_scenes, desc="thickness data", unit="scene", disable=not progress) as bar:
        samples = generate_thickness_samples(settings, workers=workers, progress=bar.update)
    wall = time.perf_counter() - t0
    save_dir.mkdir(parents=True, exist_ok=True)
    samples.save(save_dir / DATA_FILE)
    meta = {**settings.to_dict(), "workers": workers, "generation_wall_s": wall}
    (save_dir / "data_settings.json").write_text(json.dumps(meta, indent=1))
    return samples, meta, wall


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.2f} %"


def _um(x: float) -> str:
    return "n/a" if x != x else f"{x:.1f} um"


METRIC_ROWS = [
    ("crops", lambda m: str(m["n"])),
    ("top-1", lambda m: _pct(m["top1"])),
    ("top-3", lambda m: _pct(m["top3"])),
    ("within one class", lambda m: _pct(m["within_one"])),
    ("MAE of thickness", lambda m: _um(m["mae_um"])),
    ("MAE, true thickness < 60 um", lambda m: f"{_um(m['mae_below_60um_um'])} ({m['n_below_60um']} crops)"),
    ("MAE, bone left 0.5-60 um (through crops excluded)",
     lambda m: f"{_um(m.get('mae_bone_below_60um_um', float('nan')))} ({m.get('n_bone_below_60um', 0)} crops)"),
    ("\"through\" precision / recall", lambda m: f"{_pct(m['through_precision'])} / {_pct(m['through_recall'])}"),
]


def card_markdown(card: dict) -> str:
    log, m = card["train_log"], card["held_out"]
    load = " / ".join(f"{v:.1f}" for v in card["load_average_1min"])
    lines = [f"# Remaining-bone thickness classifier ({card['variant']})", "",
             "32 x 32 px camera crop centred on a groove point -> remaining bone thickness as fine-grained "
             "classes (controllers/perception/thickness_net.py, thickness_classes.py; after seed 000). "
             "Trained on twin renders only; NOT validated on real microscope images (no bone dust, blood, "
             "irrigation or real bone optics in the twin): retrain or fine-tune on measured real crops before "
             "trusting it on the rig.", "",
             f"- trained: {card['trained_at']} in {card['wall_s']:.0f} s wall (data {card['data_wall_s']:.0f} s, "
             f"training {log['wall_s']:.0f} s, evaluation {card['eval_wall_s']:.0f} s), torch {card['torch']}, "
             f"{card['training']['threads']} thread(s); CPU load average (1 min) at start / after data / after "
             f"training: {load} on {card['cpu_count']} cores",
             f"- data: {json.dumps(card['data'])}",
             f"- split: {card['n_train']} training crops (scenes 0-{card['first_val_scene'] - 1}), "
             f"{card['n_val']} validation crops choosing the best epoch (scenes {card['first_val_scene']}-"
             f"{FIRST_HELD_OUT_SCENE - 1}), {m['n']} held-out crops (scenes {FIRST_HELD_OUT_SCENE}-"
             f"{card['n_scenes'] - 1}, never trained on or selected by)",
             f"- network: {json.dumps(card['net'])}, {card['n_parameters']} parameters, weights "
             f"{card['weights_bytes'] / 1e6:.2f} MB",
             f"- training: {json.dumps(card['training'])}",
             f"- epochs: {log['epochs_done']} of {log['epochs_planned']} planned, kept epoch {log['best_epoch']} "
             f"(first-epoch loss {log['first_loss']:.4f}, last {log['loss']:.4f}); stopped by time budget: "
             f"{log['stopped_by_budget']}", "",
             "## Held-out scenes", "",
             "Classifier: class = argmax, thickness = expected value over the class centres. Regression: class "
             "of the estimate; its top-3 = its class and the two other classes with the nearest centres. "
             "\"Through\" = predicted class 0.", "",
             "| metric | this model | seed 000 (abstract, its own data) |", "| --- | --- | --- |"]
    paper = {"top-1": _pct(PAPER["top1"]), "top-3": _pct(PAPER["top3"])}
    for name, fmt in METRIC_ROWS:
        lines.append(f"| {name} | {fmt(m)} | {paper.get(name, '')} |")
    lines += ["", "## Per class (held out)", "", "| class | true crops | predicted | recall |", "| --- | --- | --- | --- |"]
    for row in m["per_class"]:
        lines.append(f"| {row['name']} | {row['n_true']} | {row['n_predicted']} | {_pct(row['recall'])} |")
    lines += ["", "## Confusion (rows true, columns predicted)", "",
              "| true \\ predicted | " + " | ".join(CLASS_NAMES) + " |", "| --- |" + " --- |" * len(CLASS_NAMES)]
    for name, row in zip(CLASS_NAMES, m["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def train_thickness_model(out_dir: Path | None = None, seed: int = 0, workers: int = 2, budget_min: float = 20.0,
                          variant: str = "full", data_dir: Path | None = None, epochs: int | None = None,
                          n_scenes: int = N_SCENES, progress: bool = True) -> dict:
    """Data, training, held-out evaluation, files (module docstring). Returns the model card."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {sorted(VARIANTS)}")
    if n_scenes <= FIRST_HELD_OUT_SCENE:
        raise ValueError(f"n_scenes={n_scenes}: must be > {FIRST_HELD_OUT_SCENE} (scenes from "
                         f"{FIRST_HELD_OUT_SCENE} on are held out)")
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    save_data = (out_dir / "data") if out_dir != WEIGHTS_DIR else Path("runs") / "thickness" / "data"
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    samples, data_meta, data_wall = load_or_generate(data_dir, save_data, seed, workers, progress, n_scenes)
    load.append(os.getloadavg()[0])
    if samples.crops.shape[1:] != (CROP_PX, CROP_PX, 3):
        raise ValueError(f"samples hold {samples.crops.shape[1:]} crops, the classifier reads "
                         f"({CROP_PX}, {CROP_PX}, 3)")
    scene = np.asarray(samples.scene_index)
    first_val = FIRST_HELD_OUT_SCENE - VAL_SCENES
    train, val = _split(samples, scene < first_val), _split(samples, (scene >= first_val) & (scene < FIRST_HELD_OUT_SCENE))
    held = _split(samples, scene >= FIRST_HELD_OUT_SCENE)
    if not len(train.crops) or not len(held.crops):
        raise ValueError(f"{len(train.crops)} training and {len(held.crops)} held-out crops: need both")
    config, overrides = VARIANTS[variant]
    settings = ThicknessTrainSettings(seed=seed, **overrides, **({"epochs": epochs} if epochs else {}),
                                      time_budget_s=max(MIN_TRAIN_S, budget_min * 60.0 - data_wall - EVAL_RESERVE_S))
    bar = tqdm(total=settings.epochs, desc=f"thickness {variant}", unit="epoch", disable=not progress)

    def on_epoch(done: int, planned: int, info: dict) -> None:
        bar.total = planned
        bar.update(1)
        bar.set_postfix(loss=f"{info['loss']:.3f}", val_top1=f"{info.get('val_top1', float('nan')):.3f}")

    net, log = train_thickness_net(train, val if len(val.crops) else None, config, settings, on_epoch)
    bar.close()
    load.append(os.getloadavg()[0])
    t_eval = time.perf_counter()
    metrics = evaluate_thickness(predict(net, held.crops), held.thickness_m)
    stem = variant_stem(variant)
    path = out_dir / f"{stem}.pt"
    card = {"variant": variant, "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": seed,
            "torch": str(torch.__version__), "data": data_meta, "n_scenes": n_scenes,
            "first_val_scene": first_val, "n_train": len(train.crops), "n_val": len(val.crops),
            "net": config.to_dict(), "n_parameters": sum(p.numel() for p in net.parameters()),
            "training": settings.to_dict(), "train_log": log.to_dict(), "data_wall_s": data_wall,
            "eval_wall_s": time.perf_counter() - t_eval, "load_average_1min": load, "cpu_count": os.cpu_count(),
            "held_out": metrics, "note": "trained on twin renders only"}
    save_classifier(path, net, config, card)
    card["weights_bytes"] = path.stat().st_size
    card["wall_s"] = time.perf_counter() - t0
    save_classifier(path, net, config, card)
    load_classifier(path)                                    # what we write must load
    (out_dir / f"{stem}.md").write_text(card_markdown(card))
    metrics_path = out_dir / "metrics.json"
    merged = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    merged[variant] = {"held_out": metrics, "weights": path.name, "wall_s": card["wall_s"],
                       "epochs_done": log.epochs_done, "best_epoch": log.best_epoch,
                       "stopped_by_budget": log.stopped_by_budget}
    metrics_path.write_text(json.dumps(merged, indent=1))
    return card


def summary_lines(card: dict) -> list[str]:
    """What ``micromill train thickness`` prints."""
    m, log = card["held_out"], card["train_log"]
    return [f"held-out ({m['n']} crops, {card['variant']}): top-1 {_pct(m['top1'])}, top-3 {_pct(m['top3'])}, "
            f"within one {_pct(m['within_one'])}; MAE {_um(m['mae_um'])} (< 60 um: {_um(m['mae_below_60um_um'])}); "
            f"through precision {_pct(m['through_precision'])}, recall {_pct(m['through_recall'])}",
            f"wall {card['wall_s']:.0f} s (data {card['data_wall_s']:.0f} s); epochs {log['epochs_done']}/"
            f"{log['epochs_planned']} (kept {log['best_epoch']}); weights {card['weights_bytes'] / 1e6:.2f} MB; "
            f"stopped by time budget: {log['stopped_by_budget']}"]
