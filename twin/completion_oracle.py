"""SIM-ONLY completion "sensor": the twin's true completion levels with a chosen error.

It has the interface of ``controllers.completion_sensing.CompletionSensor`` so that the milling
loop can be studied with perception errors of known size, but it reads ground truth (the bone
state of the twin) and so cannot exist on the real robot. Scenario files select it with
``perception = "oracle"``; it is never a fallback for a missing CNN.

Two error models per reading and point (seeded), both clipped to [0, 1] and missing (NaN)
with probability ``dropout``:

- ``kind = "absolute"``: ``c_hat = c + bias + sigma * eta``, ``sigma = mae * sqrt(pi / 2)`` so
  that the mean absolute error before clipping equals ``mae`` (completion units).
- ``kind = "relative"`` (the paper's error read as what it is, a mean absolute *percentage*
  error, ``mean |c_hat - c| / c``): ``c_hat = c + bias + c * s(c) * eta`` with the relative sd
  ``s(c) = s0 * (1 - c) ** end_exponent``: the percentage error falls from ``s0`` at c = 0 to 0
  at c = 1, the faster the larger ``end_exponent`` (0: a uniform percentage error, +-24 % at
  c = 1, which latches points as done early). The paper's error structure near c = 1 is not
  published; ``end_exponent`` is inferred by calibration (docs/paper_fidelity.md).
  ASSUMPTION: the paper's test set holds completion levels spread uniformly over [0, 1]; ``s0``
  is then chosen so that the mean over such a set of ``E|c_hat - c| / c`` equals ``mape``
  (before clipping): ``s0 = mape * sqrt(pi / 2) * (1 + end_exponent)``.

``eta`` is a standard normal per point, white (``rho = 0``) or correlated from one reading to
the next as AR(1), ``eta_t = rho * eta_{t-1} + sqrt(1 - rho^2) * w_t``: a CNN looking at
consecutive frames of the same groove makes similar errors (``rho`` per reading; 0.2 s apart
in the milling loop). Points are independent of each other. Clipping at 0 and 1 lowers the
realised error near the ends; suites report the realised value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenes.frames import apply, invert

PAPER_COMPLETION_MAE = 0.2432


ERROR_KINDS = ("absolute", "relative")


@dataclass(frozen=True)
class OracleErrorModel:
    """The oracle's reading error (see the module docstring). ``mae``: mean absolute error
    (``kind = "absolute"``, completion units) or mean absolute percentage error (``"relative"``,
    as a fraction: 0.2432 = 24.32 %); ``end_exponent``: how fast the relative error falls
    towards c = 1 (``"relative"`` only); ``rho``: correlation of one point's error from one reading to the
    next; ``bias`` (completion units); ``dropout``: probability that a reading is missing."""

    mae: float = PAPER_COMPLETION_MAE
    bias: float = 0.0
    dropout: float = 0.0
    kind: str = "absolute"
    end_exponent: float = 0.0
    rho: float = 0.0

    def __post_init__(self):
        for name, lo, hi in (("mae", 0.0, 1.0), ("bias", -1.0, 1.0), ("dropout", 0.0, 1.0),
                             ("end_exponent", 0.0, 8.0), ("rho", 0.0, 0.999)):
            v = getattr(self, name)
            if not np.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"OracleErrorModel.{name}={v!r}: must be finite and within [{lo:g}, {hi:g}]")
        if self.kind not in ERROR_KINDS:
            raise ValueError(f"OracleErrorModel.kind={self.kind!r}: allowed {', '.join(ERROR_KINDS)}")

    @property
    def sigma(self) -> float:
        """``"absolute"``: the sd (completion units); ``"relative"``: ``s0``, the relative sd at c = 0."""
        s = self.mae * float(np.sqrt(np.pi / 2))
        return s if self.kind == "absolute" else s * (1.0 + self.end_exponent)

    def sd(self, c: np.ndarray) -> np.ndarray:
        """Error sd (completion units) at true levels ``c``."""
        if self.kind == "absolute":
            return np.full(np.shape(c), self.sigma)
        return c * self.sigma * (1.0 - c) ** self.end_exponent


def true_cross_section_completion(world, probes_r: np.ndarray) -> np.ndarray:
    """GROUND TRUTH: per sampling point, the highest true level among its probes (n, k, 3) in {R}."""
    n, k = probes_r.shape[:2]
    p_s = apply(invert(world.T_s_to_r), np.asarray(probes_r, float).reshape(-1, 3))
    return np.asarray(world.mill.true_completion(p_s[:, 0], p_s[:, 1]), dtype=float).reshape(n, k).max(axis=1)


class OracleCompletionSensor:
    """SIM-ONLY: the true cross-section completion at the points (``world.mill``) plus the error model."""

    uses_images = False
    last_thickness_m = None       # reads completion only: no settle (DamperParams.settle_below_m) with the oracle

    def __init__(self, world, error: OracleErrorModel, rng: np.random.Generator):
        self.world = world
        self.error = error
        self.rng = rng
        self._eta: np.ndarray | None = None      # per point, the standard normal error of the last reading

    def estimate(self, frame, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        c = true_cross_section_completion(self.world, probes_r)
        e = self.error
        w = self.rng.normal(0.0, 1.0, c.shape)
        self._eta = w if self._eta is None else e.rho * self._eta + np.sqrt(1.0 - e.rho ** 2) * w
        out = np.clip(c + e.bias + e.sd(c) * self._eta, 0.0, 1.0)
        out[self.rng.random(c.shape) < e.dropout] = np.nan
        return out
