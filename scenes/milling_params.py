"""Parameters of the bone-removal model: names, SI defaults and allowed ranges, in one place.

``twin.milling.BoneMill`` runs the model; the scene loader (``scenes.spec``) derives the
``[milling]`` fields' defaults and bounds from ``MillingParams`` so the two cannot drift.
The burr radius is the drill's (``[drill] burr_radius_mm`` of the scene).

Where the defaults come from (see ``../shared/reference/README.md`` section 2):
- ``cut_rate_m_s`` = 600 um/s is an ASSUMPTION, chosen so that at the milling loop's default
  feed (4 mm/s around the circle) one pass of the 1 mm burr can take about the 10-50 um depth
  of cut at which cortical bone shears cleanly: a cell lies under the burr's ~0.45 mm wide
  footprint for ~0.11 s per pass, 600 um/s x 0.11 s = 67 um at hardness 1, 42 um at the
  hardest 1.6 the suites draw. For scale, the Craniobot CNC craniotomy robot mills 50 um
  passes at 10 mm/min (0.17 mm/s), ~8-18 um/s of vertical penetration per cell; the paper's
  38000 rpm burr finishes a window in ~2 min, which needs the faster figure. A first choice
  of 100 um/s left the bone uncut under the paper's descent speeds and the head deflected to
  the 0.3 mm limit (measured on the twin). We found no measurement of the real rate.
- ``hardness_min``/``hardness_max`` (0.8/1.4): the spread of a smooth random hardness field
  (relative; mouse skull is not uniform: sutures, diploe), an assumption.
- ``skull_stiffness_n_per_m`` = 5000 N/m (5 N/mm) is an ASSUMPTION: a mouse head in ear bars
  and a tooth bar gives way by a fraction of a millimetre under ~1 N of push.
- ``max_deflection_m`` = 0.3 mm: beyond it the head holder is taken as solid (a fault).
- ``breach_tolerance_m`` = 20 um: the burr may dent the membrane by this much unharmed.
- ``break_threshold_m`` = 20 um: bone bridges thinner than this break when the flap is lifted.
"""
from __future__ import annotations

from dataclasses import dataclass

from scenes.schema import range_errors


class MillingParameterError(ValueError):
    """A milling parameter is outside its allowed range."""


@dataclass(frozen=True)
class MillingParams:
    """Parameters of the material-removal model (SI units), checked at construction.

    ``burr_radius_m``: radius of the spherical burr (m).
    ``cut_rate_m_s``: largest vertical penetration rate into bone of nominal hardness (1.0) at
    full drill speed (m/s); a cell's rate is ``cut_rate_m_s / hardness * min(speed_rpm /
    nominal_speed_rpm, 1)``.
    ``hardness_min``, ``hardness_max``: range of the relative hardness field (dimensionless).
    ``nominal_speed_rpm``: drill speed (rpm) at and above which the full cut rate applies.
    ``skull_stiffness_n_per_m``: stiffness of the head in its holder (N/m).
    ``max_deflection_m``: deflection (m) beyond which the holder is solid (overload fault).
    ``breach_tolerance_m``: how far (m) the burr may press below the membrane without damage.
    ``break_threshold_m``: bridges thinner than this (m) break when the flap is lifted.
    """

    burr_radius_m: float = 0.5e-3
    cut_rate_m_s: float = 600e-6
    hardness_min: float = 0.8
    hardness_max: float = 1.4
    nominal_speed_rpm: float = 30000.0
    skull_stiffness_n_per_m: float = 5000.0
    max_deflection_m: float = 0.3e-3
    breach_tolerance_m: float = 20e-6
    break_threshold_m: float = 20e-6

    # (lower, upper) for each field, inclusive.
    RANGES = {
        "burr_radius_m": (0.1e-3, 3.0e-3),
        "cut_rate_m_s": (1e-6, 5e-3),
        "hardness_min": (0.1, 10.0),
        "hardness_max": (0.1, 10.0),
        "nominal_speed_rpm": (100.0, 1e5),
        "skull_stiffness_n_per_m": (10.0, 1e7),
        "max_deflection_m": (1e-6, 5e-3),
        "breach_tolerance_m": (0.0, 0.2e-3),
        "break_threshold_m": (0.0, 0.2e-3),
    }

    def __post_init__(self) -> None:
        errors = range_errors("milling", self, self.RANGES)
        if not errors and self.hardness_min > self.hardness_max:
            errors.append(f"milling.hardness_min={self.hardness_min!r} exceeds "
                          f"milling.hardness_max={self.hardness_max!r}")
        if errors:
            raise MillingParameterError("; ".join(errors))
