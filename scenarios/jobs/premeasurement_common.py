"""Pieces shared by the calibration, surface-fit and milling jobs: the sim-only keypoint-noise
condition and figure helpers."""
from __future__ import annotations

import numpy as np

from controllers.perception.keypoint_detector import Keypoint, KeypointDetector


class NoisyKeypoints:
    """SIM-ONLY test condition: wraps a detector and adds Gaussian noise (``sigma_px`` per axis)
    to every found keypoint, to study the pipeline at a chosen perception error (e.g. the
    paper's 3.18 px RMSE, i.e. sigma = 3.18 / sqrt(2) px per axis). Seeded by the case."""

    def __init__(self, detector: KeypointDetector, sigma_px: float, rng: np.random.Generator):
        self.detector = detector
        self.config = detector.config
        self.sigma_px = sigma_px
        self.rng = rng

    def detect(self, image_bgr: np.ndarray) -> list[Keypoint]:
        out = self.detector.detect(image_bgr)
        if self.sigma_px <= 0:
            return out
        return [Keypoint(k.name, k.found, k.xy_px + self.rng.normal(0.0, self.sigma_px, 2) if k.found else None,
                         k.confidence) for k in out]


def new_figure(figsize: tuple[float, float]):
    """A matplotlib figure on the non-interactive Agg backend (cases run in worker processes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize)


def label_axes_3d_mm(ax, title: str) -> None:
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.set_title(title, fontsize=9)


def save_figure(fig, path, title: str | None = None) -> None:
    """Title, lay out, write (100 dpi) and release a figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
