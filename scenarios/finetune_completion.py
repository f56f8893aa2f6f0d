"""``micromill train completion --data DIR``: fine-tune the completion estimator on the user's own
labelled windows (``scenarios.completion_labels``).

As for the keypoints (``scenarios.finetune_keypoints``): load and check the labels; hold out a
seeded random fraction of the frames; evaluate the base estimator (default the shipped twin
weights) at the labelled points of the held-out images; fine-tune its network with
``controllers.perception.completion_training.train_completion(initial=base)`` on crops cut as the
estimator cuts them, with each labelled point's level as the target in a disc around it; evaluate
again; write ``completion.pt`` and ``completion.md`` (what data, the split, the base weights, both
held-out figures) into ``out_dir``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from controllers.perception.completion_detector import CompletionEstimator, load_estimator, model_card
from controllers.perception.completion_training import (CompletionTrainSettings, completion_metrics, predict_levels,
                                                         train_completion)
from controllers.perception.weights_io import weights_path
from scenarios.coco_labels import held_out_split
from scenarios.completion_labels import CompletionCrops, completion_crops, load_completion_labels
from scenarios.train_completion import METRIC_ROWS

#: default planned epochs when fine-tuning the completion network
FINETUNE_EPOCHS = 30
#: default learning rate when fine-tuning (that of training from scratch)
FINETUNE_LEARNING_RATE = 2e-3


def held_out_levels(estimator: CompletionEstimator, crops: CompletionCrops) -> tuple[np.ndarray, np.ndarray]:
    """(estimated, true) completion at every labelled point of ``crops``, flattened."""
    est, true = [], []
    for i, (uv, lv) in enumerate(zip(crops.points_uv, crops.levels)):
        labelled = ~np.isnan(lv)
        est.append(predict_levels(estimator, crops.crops[i:i + 1], uv[None])[0][labelled])
        true.append(lv[labelled])
    return np.concatenate(est), np.concatenate(true)


def _card_markdown(card: dict) -> str:
    d = card["data"]
    lines = ["# Completion-level estimator (fine-tuned on labelled images)", "",
             f"Window-crop completion network (controllers/perception/completion_net.py), fine-tuned from "
             f"`{card['base']['path']}` (trained {card['base'].get('trained_at', '?')}) on the labelled windows "
             f"below: check the held-out figures before using it.", "",
             f"- trained: {card['trained_at']} in {card['wall_s']:.0f} s wall (training "
             f"{card['train_log']['wall_s']:.0f} s), torch {card['torch']}, {card['threads']} CPU thread(s)",
             f"- data: folder `{d['folder']}`, labels `{d['labels']}`, {d['n_images']} images of "
             f"{d['image_size_px'][0]} x {d['image_size_px'][1]} px in {d['n_groups']} frames, {d['n_points']} "
             f"labelled points, label disc radius {d['label_radius_px']} px",
             f"- split: {card['n_train']} training / {card['n_val']} held-out images ({d['n_val_groups']} of the "
             f"{d['n_groups']} frames, fraction {d['held_out_fraction']}, seed {card['seed']})",
             f"- crop: {json.dumps(card['crop'])}",
             f"- training: {json.dumps(card['training'])}",
             f"- epochs done: {card['train_log']['epochs_done']} of {card['train_log']['epochs_planned']} planned; "
             f"stopped by time budget: {card['train_log']['stopped_by_budget']}", "",
             "## Held-out labelled points", "",
             "Error = |c_estimated - c_true| in percentage points of completion (c x 100).", "",
             "| metric | fine-tuned | base |", "| --- | --- | --- |"]
    for name, fmt in METRIC_ROWS:
        lines.append(f"| {name} | {fmt(card['validation'])} | {fmt(card['base_validation'])} |")
    return "\n".join(lines) + "\n"


def finetune_completion(data: Path | str, out_dir: Path | str, base: str | Path | None = None,
                        held_out_fraction: float = 0.2, seed: int = 0, epochs: int = FINETUNE_EPOCHS,
                        learning_rate: float = FINETUNE_LEARNING_RATE, batch_size: int = 16,
                        budget_min: float = 19.0, progress: bool = True) -> dict:
    """Fine-tune ``base`` (a weights name or path; default the shipped ``completion``) on the
    labelled windows ``data`` (folder or JSON); write ``completion.pt``/``.md`` into ``out_dir``;
    return the model card. ``budget_min``: wall-clock budget of the training (min)."""
    t0 = time.perf_counter()
    labels = load_completion_labels(data, progress)
    val_mask = held_out_split(labels.groups, held_out_fraction, seed)
    train, val = labels.subset(np.nonzero(~val_mask)[0]), labels.subset(np.nonzero(val_mask)[0])
    base_ref = base if base is not None else "completion"
    base_est = load_estimator(base_ref)
    train_crops, val_crops = completion_crops(train, base_est.config), completion_crops(val, base_est.config)
    base_metrics = completion_metrics(*held_out_levels(base_est, val_crops)).to_dict()
    settings = CompletionTrainSettings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                       base_channels=base_est.net.config.base_channels,
                                       depth=base_est.net.config.depth, seed=seed,
                                       time_budget_s=budget_min * 60.0)
    estimator, log = train_completion(train_crops.crops, train_crops.target, train_crops.valid, base_est.config,
                                      settings, progress=progress, initial=base_est)
    metrics = completion_metrics(*held_out_levels(estimator, val_crops)).to_dict()
    base_path = weights_path(base_ref)
    folder = Path(data) if Path(data).is_dir() else Path(data).parent
    h, w = labels.images.shape[1:3]
    card = {"trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": seed, "torch": str(torch.__version__),
            "threads": settings.threads, "fine_tuned": True,
            "base": {"path": str(base_path), "trained_at": model_card(base_path).get("trained_at")},
            "data": {"folder": str(folder), "labels": str(labels.labels_path), "n_images": len(labels),
                     "image_size_px": [w, h], "n_groups": len(set(labels.groups)),
                     "n_val_groups": len(set(val.groups)), "held_out_fraction": held_out_fraction,
                     "n_points": int(sum((~np.isnan(lv)).sum() for lv in labels.levels)),
                     "label_radius_px": labels.label_radius_px},
            "crop": base_est.config.to_dict(), "net": estimator.net.config.to_dict(),
            "training": settings.to_dict(), "train_log": vars(log), "n_train": len(train), "n_val": len(val),
            "held_out_files": [f.name for f in val.files], "validation": metrics, "base_validation": base_metrics}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "completion.pt"
    card["wall_s"] = time.perf_counter() - t0
    estimator.save(path, card)
    load_estimator(path)                                  # what we write must load
    (out_dir / "completion.md").write_text(_card_markdown(card))
    return card
