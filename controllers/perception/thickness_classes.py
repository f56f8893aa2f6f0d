"""Remaining-bone thickness as fine-grained classes, and the point crops the classifier reads
(seed 000's depth-as-classification, applied to the bone left under the groove).

Classes (upper edges in um; class 0 is "through": no bone left under the point's cross-section):

    through | (0.5,10] (10,20] (20,30] (30,40] (40,50] (50,60] | (60,80] (80,100] |
    (100,150] (150,200] (200,300] | > 300

10 um classes below 60 um, where the milling decision is made (a point must stop with less
than the 20 um bridge threshold left and without the burr going more than 20 um into the
membrane: the whole window is ~40 um wide), 20 um classes from 60 to 100 um (the approach of
the decision: the planner slows down there), coarser above (the cut only needs "far from
through"; 0.85 exp(-t / 120 um) translucency changes by < 0.05 per 100 um above 200 um, so
finer classes there would be guesses). ``CLASS_CENTRES_M`` are the classes' representative
thicknesses for the depth-weighted loss and the expected-value estimate (400 um for "> 300").

Crops: ``CROP_PX`` x ``CROP_PX`` native image pixels (no resampling) centred on a point's
projection (sub-pixel, ``cv2.getRectSubPix``; outside the image: border replicated). At the
MSCS's ~25.7 px/mm a crop is ~1.25 mm: the 1 mm groove across plus a margin of untouched bone
on each side, and the neighbouring points (0.39 mm apart at r = 2 mm, n = 32) at its edges.
The training data (``scenarios.thickness_dataset``) and the in-loop sensor
(``controllers.completion_sensing``) both cut crops with ``crop_points``.
"""
from __future__ import annotations

import cv2
import numpy as np

CROP_PX = 32
#: upper class edges (m); a thickness t is in class k = number of edges strictly below t
CLASS_UPPER_EDGES_M = np.array([0.5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300]) * 1e-6
CLASS_CENTRES_M = np.array([0, 5, 15, 25, 35, 45, 55, 70, 90, 125, 175, 250, 400]) * 1e-6
CLASS_NAMES = ("through", "0-10", "10-20", "20-30", "30-40", "40-50", "50-60", "60-80", "80-100",
               "100-150", "150-200", "200-300", ">300")
N_CLASSES = len(CLASS_NAMES)
THROUGH_CLASS = 0


def thickness_class(thickness_m: np.ndarray) -> np.ndarray:
    """Class index (int64, same shape) of remaining thicknesses ``thickness_m`` (m, >= 0)."""
    t = np.asarray(thickness_m, dtype=float)
    return np.searchsorted(CLASS_UPPER_EDGES_M, t, side="left").astype(np.int64)


def crop_points(image: np.ndarray, centres_px: np.ndarray, size_px: int = CROP_PX) -> np.ndarray:
    """(N, size, size, C) uint8 crops of ``image`` (H, W, C) centred on ``centres_px`` (N, 2)
    (x, y; pixel centres are integers), bilinear at sub-pixel centres."""
    centres = np.asarray(centres_px, dtype=float).reshape(-1, 2)
    if not np.all(np.isfinite(centres)):
        raise ValueError("crop_points: centres_px must be finite")
    out = np.empty((len(centres), size_px, size_px) + image.shape[2:], dtype=image.dtype)
    for k, (x, y) in enumerate(centres):
        out[k] = cv2.getRectSubPix(image, (size_px, size_px), (float(x), float(y)))
    return out
