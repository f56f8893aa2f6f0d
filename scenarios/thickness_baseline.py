"""The regression baseline of the thickness ablation: the window-crop completion CNN
(``controllers.perception.completion_detector``), read as a remaining thickness.

On the held-out views of a ``ThicknessSamples`` file (left camera, the completion CNN's own
window crop) the CNN's completion map is read the way the milling sensor reads it: the highest
level among ``probes`` points across the groove within +-``half_width_m`` (0.15 mm) of each
sampling point, and converted to a thickness with the point's TRUE initial thickness:
t_est = (1 - c) x t0_true. Knowing t0 is an advantage the controller does not have (it never
knows the bone's initial thickness); the baseline gets it so that the comparison measures how
well each network sees the bone near through, not how well t0 could be guessed.

Crop scale: the completion crop's half-size is 1.35 r_px + 20 image px, resampled to S crop px,
so with R the points' mean distance from the crop centre in crop px the image-to-crop scale is
s = 40 / (S - 2.7 R) image px per crop px (``completion_detector.CropConfig``). The probes'
offsets are taken at the MSCS's 25.7 px/mm (the default rig; the randomised rigs vary by a few
per cent, well inside one probe spacing).
"""
from __future__ import annotations

import numpy as np

from controllers.perception.completion_detector import CompletionEstimator, sample_map
from scenarios.thickness_dataset import ThicknessSamples

PX_PER_M = 25.7e3          # MSCS default rig, image px per m at the skull


def regression_thickness(estimator: CompletionEstimator, data: ThicknessSamples, half_width_m: float = 0.15e-3,
                         probes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Estimated and true remaining thickness (m) at every held-out point the left camera sees."""
    cfg = estimator.config
    s_px = cfg.input_px
    c_crop = np.full(2, s_px / 2 - 0.5)
    est, true = [], []
    offsets = np.linspace(-1.0, 1.0, probes)
    for crop, uv, t_true, t0, vis in zip(data.view_crops, data.view_points_uv, data.view_thickness_m,
                                         data.view_initial_thickness_m, data.view_visible):
        cmap = estimator.predict_map(crop)
        d = uv - c_crop
        r_crop = float(np.mean(np.hypot(d[:, 0], d[:, 1])))
        scale = (2 * cfg.margin_px) / (s_px - 2 * cfg.radius_scale * r_crop)      # image px per crop px
        radial = d / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
        step = half_width_m * PX_PER_M / scale
        pts = uv[:, None, :] + offsets[None, :, None] * step * radial[:, None, :]
        c = sample_map(cmap, pts.reshape(-1, 2)).reshape(len(uv), probes).max(axis=1)
        est.append(((1.0 - np.clip(c, 0.0, 1.0)) * t0)[vis])
        true.append(t_true[vis])
    if not est:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(est), np.concatenate(true)
