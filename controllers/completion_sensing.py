"""Completion levels c_i at the milling path's sampling points, from what the robot gives.

``CompletionSensor`` is what the milling loop asks: given a stereo frame, the sampling points
in {R} and the tool pose at the frame's exposure, the levels c_i in [0, 1] (NaN where the
point cannot be seen). ``CameraCompletionSensor`` is the real one: it projects the points into
the left image through the calibration (T_mi_to_r) and the stereo camera model, marks points
hidden behind the drill (burr, neck and shank silhouettes, from the rig's drill geometry and
the tool pose) and runs the completion CNN. A sim-only oracle with the same interface lives in
``twin/completion_oracle.py``.

``CompletionFilter`` is the per-point median of the last k valid readings, applied by the
milling loop to whatever sensor it is given.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from controllers.perception.completion_detector import CompletionEstimator
from controllers.reconstruction import OrthoStereoModel
from hw_bridge.interface import StereoFrame
from scenes.frames import apply, invert


class CompletionSensor(Protocol):
    #: False for a sensor that never looks at the images (the sim-only oracle): the loop then
    #: passes ``frame=None`` and does not ask the cameras for a frame it would not use.
    uses_images: bool

    def estimate(self, frame: StereoFrame | None, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        """c_i (n,) in [0, 1]: for each sampling point the highest level among its k probe points
        ``probes_r`` (n, k, 3) (m, {R}) across the groove; NaN where unknown."""


class CameraCompletionSensor:
    """The completion CNN on the left image, at points projected through the calibration."""

    uses_images = True

    def __init__(self, estimator: CompletionEstimator, model: OrthoStereoModel, T_mi_to_r: np.ndarray,
                 centre_r: np.ndarray, drill, occlusion_margin_px: float = 4.0):
        self.estimator = estimator
        self.model = model
        self.T_r_to_mi = invert(T_mi_to_r)
        self.centre_r = np.asarray(centre_r, float)
        self.drill = drill            # the rig's drill (DrillSpec): burr/neck/shank radii and lengths (m)
        self.margin_px = occlusion_margin_px
        self.px_per_m = 1.0 / abs(float(model.prx_m_per_px))

    def left_px(self, p_r: np.ndarray) -> np.ndarray:
        """Left-image pixels (N, 2) of {R} points, through the calibration and the camera model."""
        uv_l, _ = self.model.project(np.atleast_2d(apply(self.T_r_to_mi, np.asarray(p_r, float))))
        return uv_l

    def hidden(self, points_px: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        """Points (bool (n,)) inside the drill's silhouette (burr disc, neck and shank bands)."""
        d = self.drill
        axis_up = -T_tool_to_r[:3, 2]                    # the shaft runs along -z of the tool
        tip = T_tool_to_r[:3, 3]
        neck_end = tip + d.neck_length_m * axis_up
        shank_end = neck_end + d.shank_length_m * axis_up
        a, b, c = self.left_px(np.stack([tip, neck_end, shank_end]))
        hide = np.linalg.norm(points_px - a, axis=1) <= d.burr_radius_m * self.px_per_m + self.margin_px
        for (s, e, radius_m) in ((a, b, d.neck_radius_m), (b, c, d.shank_radius_m)):
            hide |= _distance_to_segment(points_px, s, e) <= radius_m * self.px_per_m + self.margin_px
        return hide

    def estimate(self, frame: StereoFrame, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        n, k = probes_r.shape[:2]
        pts_px = self.left_px(probes_r.reshape(-1, 3))
        centre_px = self.left_px(self.centre_r)[0]
        c = np.array(self.estimator.estimate(frame.left, centre_px, pts_px).levels, dtype=float).reshape(n, k)
        c[self.hidden(pts_px, T_tool_to_r).reshape(n, k)] = np.nan
        return np.fmax.reduce(c, axis=1)          # highest seen probe; NaN only if all are hidden


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


class CompletionFilter:
    """Per-point median of the last ``window`` valid (finite) readings; NaN until one arrives."""

    def __init__(self, n: int, window: int = 3):
        if window < 1:
            raise ValueError(f"CompletionFilter window={window!r}: must be >= 1")
        self._hist = np.full((window, n), np.nan)     # per point, its last valid readings (ring)
        self._next = np.zeros(n, dtype=int)

    def update(self, c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, dtype=float)
        ok = np.isfinite(c)
        idx = np.flatnonzero(ok)
        self._hist[self._next[idx], idx] = c[idx]
        self._next[idx] = (self._next[idx] + 1) % self._hist.shape[0]
        out = np.full(c.shape, np.nan)
        seen = np.isfinite(self._hist).any(axis=0)
        out[seen] = np.nanmedian(self._hist[:, seen], axis=0)
        return out
