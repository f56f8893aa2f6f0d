"""Sub-pixel peak extraction from confidence maps.

The keypoint is the maximum of the predicted map (paper section III-A1), refined to
sub-pixel precision by fitting a parabola to the *logarithm* of the map through the maximum
and its two neighbours along each axis. A Gaussian is a parabola in log space, so the
refinement is exact for a separable Gaussian peak (what the network is trained to output),
which the property tests check.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_FLOOR = 1e-6   # log of non-positive map values is undefined; the floor keeps the fit finite


@dataclass(frozen=True)
class Peak:
    """Peak position (px, (x, y) = (column, row), sub-pixel) and its confidence (map value)."""

    xy: np.ndarray
    confidence: float


def _offset(m_minus: float, m0: float, m_plus: float) -> float:
    a, b, c = np.log(max(m_minus, _FLOOR)), np.log(max(m0, _FLOOR)), np.log(max(m_plus, _FLOOR))
    denom = a - 2.0 * b + c
    if denom >= 0.0:          # flat or not a maximum in log space: no refinement
        return 0.0
    return float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))


def find_peak(confidence_map: np.ndarray, within: np.ndarray | None = None) -> Peak:
    """Maximum of a 2-D map (over the pixels where the boolean mask ``within`` is True, if given)
    with a log-parabola sub-pixel refinement on the unmasked map."""
    m = np.asarray(confidence_map, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"confidence_map must be a non-empty 2-D array, got shape {m.shape}")
    search = m if within is None else np.where(within, m, -np.inf)
    r, c = np.unravel_index(int(np.argmax(search)), m.shape)
    h, w = m.shape
    dx = _offset(m[r, c - 1], m[r, c], m[r, c + 1]) if 0 < c < w - 1 else 0.0
    dy = _offset(m[r - 1, c], m[r, c], m[r + 1, c]) if 0 < r < h - 1 else 0.0
    return Peak(np.array([c + dx, r + dy]), float(m[r, c]))


def find_peaks(confidence_map: np.ndarray, count: int, min_separation_px: float) -> list[Peak]:
    """The ``count`` highest peaks at least ``min_separation_px`` apart, highest first
    (greedy non-maximum suppression: take the maximum, blank a disc around it, repeat)."""
    m = np.asarray(confidence_map, dtype=np.float64)
    free = np.ones(m.shape, bool)
    yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    out = []
    for _ in range(count):
        if not free.any():
            break
        p = find_peak(m, free)
        out.append(p)
        free &= (xx - p.xy[0]) ** 2 + (yy - p.xy[1]) ** 2 > min_separation_px ** 2
    return out


def gaussian_map(shape_hw: tuple[int, int], xy: np.ndarray, sigma_px: float) -> np.ndarray:
    """Training target: ``exp(-|p - xy|^2 / (2 sigma^2))`` on pixel centres, float32, peak 1 at ``xy``."""
    h, w = shape_hw
    x = np.arange(w, dtype=np.float32)
    y = np.arange(h, dtype=np.float32)
    gx = np.exp(-((x - np.float32(xy[0])) ** 2) / np.float32(2 * sigma_px ** 2))
    gy = np.exp(-((y - np.float32(xy[1])) ** 2) / np.float32(2 * sigma_px ** 2))
    return np.outer(gy, gx).astype(np.float32)
