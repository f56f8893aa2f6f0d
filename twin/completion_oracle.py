"""SIM-ONLY completion "sensor": the twin's true completion levels with a chosen error.

It has the interface of ``controllers.completion_sensing.CompletionSensor`` so that the milling
loop can be studied with perception errors of known size, but it reads ground truth (the bone
state of the twin) and so cannot exist on the real robot. Scenario files select it with
``perception = "oracle"``; it is never a fallback for a missing CNN.

Error model per reading and point (seeded): ``c_hat = clip(c + bias + N(0, sigma), 0, 1)``,
missing (NaN) with probability ``dropout``. ``sigma = mae * sqrt(pi / 2)`` so that the mean
absolute error before clipping equals ``mae``; the default ``mae = 0.2432`` is the paper's
24.32 % MAPE of its completion CNN (read as a mean absolute error in completion units, the
only reading that makes sense for levels that are often 0). Clipping at 0 and 1 lowers the
realised error near the ends; suites report the realised value. Errors are independent
between readings and points (white): the paper does not describe their correlation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenes.frames import apply, invert

PAPER_COMPLETION_MAE = 0.2432


@dataclass(frozen=True)
class OracleErrorModel:
    mae: float = PAPER_COMPLETION_MAE     # mean absolute error before clipping (completion units)
    bias: float = 0.0                     # added to every reading (completion units)
    dropout: float = 0.0                  # probability that a reading is missing (NaN)

    def __post_init__(self):
        for name, lo, hi in (("mae", 0.0, 1.0), ("bias", -1.0, 1.0), ("dropout", 0.0, 1.0)):
            v = getattr(self, name)
            if not np.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"OracleErrorModel.{name}={v!r}: must be finite and within [{lo:g}, {hi:g}]")

    @property
    def sigma(self) -> float:
        return self.mae * float(np.sqrt(np.pi / 2))


def true_cross_section_completion(world, probes_r: np.ndarray) -> np.ndarray:
    """GROUND TRUTH: per sampling point, the highest true level among its probes (n, k, 3) in {R}."""
    n, k = probes_r.shape[:2]
    p_s = apply(invert(world.T_s_to_r), np.asarray(probes_r, float).reshape(-1, 3))
    return np.asarray(world.mill.true_completion(p_s[:, 0], p_s[:, 1]), dtype=float).reshape(n, k).max(axis=1)


class OracleCompletionSensor:
    """SIM-ONLY: the true cross-section completion at the points (``world.mill``) plus the error model."""

    uses_images = False

    def __init__(self, world, error: OracleErrorModel, rng: np.random.Generator):
        self.world = world
        self.error = error
        self.rng = rng

    def estimate(self, frame, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        c = true_cross_section_completion(self.world, probes_r)
        e = self.error
        out = np.clip(c + e.bias + self.rng.normal(0.0, e.sigma, c.shape), 0.0, 1.0)
        out[self.rng.random(c.shape) < e.dropout] = np.nan
        return out
