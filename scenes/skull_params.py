"""Parameters of the parametric skull: names, SI defaults and allowed ranges, in one place.

``twin.skull.Skull`` builds the skull from them; the scene loader (``scenes.spec``) derives
its mm-valued fields, defaults and bounds from ``SkullParams`` so the two cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenes.schema import range_errors


class SkullParameterError(ValueError):
    """A skull parameter is outside its allowed range."""


@dataclass(frozen=True)
class SkullParams:
    """Parameters of the skull (SI units). ``validate()`` checks every range."""

    seed: int = 0
    thickness_min_m: float = 0.27e-3
    thickness_max_m: float = 0.51e-3
    unevenness_amplitude_m: float = 0.05e-3
    dome_radius_ml_m: float = 7.0e-3
    dome_radius_ap_m: float = 14.0e-3
    bregma_lambda_m: float = 4.2e-3
    suture_width_m: float = 40e-6
    suture_waviness_m: float = 60e-6
    grid_cell_m: float = 10e-6
    milling_half_width_m: float = 5.0e-3
    milling_half_length_m: float = 6.0e-3

    # (lower, upper) for each numeric field, inclusive. Ranges cover adult mice and sensible twins.
    RANGES = {
        "seed": (0, 2**63 - 1),
        "thickness_min_m": (0.05e-3, 1.0e-3),
        "thickness_max_m": (0.05e-3, 1.0e-3),
        "unevenness_amplitude_m": (0.0, 0.3e-3),
        "dome_radius_ml_m": (4e-3, 40e-3),
        "dome_radius_ap_m": (4e-3, 60e-3),
        "bregma_lambda_m": (3.0e-3, 5.5e-3),
        "suture_width_m": (5e-6, 200e-6),
        "suture_waviness_m": (0.0, 300e-6),
        "grid_cell_m": (2e-6, 10e-6),
        "milling_half_width_m": (2e-3, 8e-3),
        "milling_half_length_m": (3e-3, 10e-3),
    }

    def validate(self) -> None:
        """Raise SkullParameterError listing every field outside its range."""
        errors = range_errors("skull", self, self.RANGES)
        if not errors and self.thickness_min_m > self.thickness_max_m:
            errors.append(f"skull.thickness_min_m={self.thickness_min_m!r} exceeds "
                          f"skull.thickness_max_m={self.thickness_max_m!r}")
        if not isinstance(self.seed, (int, np.integer)):
            errors.append(f"skull.seed={self.seed!r} must be an integer")
        if errors:
            raise SkullParameterError("; ".join(errors))
