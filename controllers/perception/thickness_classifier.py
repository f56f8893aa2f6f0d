"""Remaining bone thickness at groove points from 32 x 32 camera crops (issue 15): the trained
``ThicknessNet`` behind a numpy interface, and its weights file.

``ThicknessClassifier.classify`` takes crops cut by ``thickness_classes.crop_points`` and returns
a ``ThicknessReading``: class probabilities over ``thickness_classes.CLASS_NAMES``, the expected
thickness over ``CLASS_CENTRES_M`` and the probability of "through". A regression network (the
ablation variant) has no distribution: its reading is one-hot on the estimate's class, with
``thickness_m`` its estimate clipped to [0, 400 um].

Weights: ``weights/thickness.pt`` (format tag, network config and state, model card), read by
the shared checked reader (``weights_io``); every failure is a ``DetectorLoadError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from controllers.perception.thickness_classes import CLASS_CENTRES_M, CROP_PX, THROUGH_CLASS, thickness_class
from controllers.perception.thickness_net import ThicknessNet, ThicknessNetConfig
from controllers.perception.thickness_training import predict
from controllers.perception.weights_io import DetectorLoadError, read_weights

FORMAT = "micromill-thickness/1"
TRAIN_COMMAND = "micromill train thickness"
BATCH = 256


@dataclass(frozen=True)
class ThicknessReading:
    """``probs`` (N, K) class probabilities; ``thickness_m`` (N,) expected thickness (m) over
    ``CLASS_CENTRES_M``; ``p_through`` (N,) probability of the "through" class."""

    probs: np.ndarray
    thickness_m: np.ndarray
    p_through: np.ndarray

    @property
    def classes(self) -> np.ndarray:
        """(N,) the most probable class."""
        return self.probs.argmax(axis=1)


class ThicknessClassifier:
    def __init__(self, net: ThicknessNet, card: dict | None = None):
        self.net = net.eval()
        self.config: ThicknessNetConfig = net.config
        self.card = card or {}
        self.crop_px = CROP_PX

    def classify(self, crops_bgr: np.ndarray) -> ThicknessReading:
        """Reading of (N, 32, 32, 3) uint8 BGR crops (N may be 0)."""
        crops = np.asarray(crops_bgr)
        if crops.ndim != 4 or crops.shape[1:] != (self.crop_px, self.crop_px, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (N, {self.crop_px}, {self.crop_px}, 3) uint8 BGR, "
                             f"got {crops.shape} {crops.dtype}")
        out = predict(self.net, crops, BATCH)
        if self.config.head == "classes":
            probs = out
            thickness = probs @ CLASS_CENTRES_M
        else:
            thickness = np.clip(out, 0.0, CLASS_CENTRES_M[-1])
            probs = np.zeros((len(crops), len(CLASS_CENTRES_M)))
            probs[np.arange(len(crops)), thickness_class(thickness)] = 1.0
        return ThicknessReading(probs, thickness, probs[:, THROUGH_CLASS].copy())


def save_classifier(path: Path | str, model: ThicknessNet | ThicknessClassifier, config: ThicknessNetConfig | None,
                    card: dict) -> None:
    """Write ``model`` (a network or a classifier; ``config``: its config, None to take the
    model's) with ``card`` (the training record) in the format ``load_classifier`` reads."""
    net = model.net if isinstance(model, ThicknessClassifier) else model
    config = config or net.config
    if config != net.config:
        raise ValueError(f"save_classifier: config {config} is not the network's {net.config}")
    torch.save({"format": FORMAT, "net": {"config": config.to_dict(), "state": net.state_dict()}, "card": card},
               str(path))


def load_classifier(name_or_path: str | Path = "thickness") -> ThicknessClassifier:
    """Load the classifier; every failure is a ``DetectorLoadError`` that names the file and the problem."""
    path, blob = read_weights(name_or_path, FORMAT, "thickness", TRAIN_COMMAND)
    try:
        net = ThicknessNet(ThicknessNetConfig(**blob["net"]["config"]))
        net.load_state_dict(blob["net"]["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DetectorLoadError(f"{path}: incompatible with this code ({type(exc).__name__}: {exc})") from None
    return ThicknessClassifier(net, blob.get("card", {}))


def model_card(name_or_path: str | Path = "thickness") -> dict:
    """The training record stored with the weights, read through the same checks as ``load_classifier``."""
    return read_weights(name_or_path, FORMAT, "thickness", TRAIN_COMMAND)[1].get("card", {})
