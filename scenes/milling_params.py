"""Parameters of the bone-removal model: names, SI defaults and allowed ranges, in one place.

``twin.milling.BoneMill`` runs the model; the scene loader (``scenes.spec``) derives the
``[milling]`` fields' defaults, bounds and descriptions from ``MillingParams`` so the two
cannot drift.
The burr radius is the drill's (``[drill] burr_radius_mm`` of the scene).

Every parameter's default, plausible range, source or assumption (the published figures, the
derivations of the cut-rate range, of the quasi-static head and of thin-bone cracking) and its
measured effect on the outcome: ``docs/bone_model.md``. In short: the cut rate, the hardness
spread, the head stiffness, the breach tolerance and the break threshold are assumptions; the
head stiffness only sets the contact force (deflection = the overlap), never the outcome.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from scenes.fields import Real, order_validator, raise_construction_errors_as


class MillingParameterError(ValueError):
    """A milling parameter is outside its allowed range."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MillingParams:
    """Parameters of the material-removal model (SI units), checked at construction
    (``MillingParameterError``). A cell's cut rate along the burr's surface normal is
    ``cut_rate_m_s / hardness * min(speed_rpm / nominal_speed_rpm, 1)``; docs/bone_model.md gives each
    parameter's default, plausible range and source."""

    burr_radius_m: Real = Field(0.5e-3, ge=0.1e-3, le=3.0e-3, description="radius of the spherical burr")
    cut_rate_m_s: Real = Field(600e-6, ge=1e-6, le=5e-3,
                               description="largest depth of cut per second (along the burr's surface normal) "
                                           "into bone of hardness 1 at full drill speed (see docs/bone_model.md)")
    hardness_min: Real = Field(0.8, ge=0.1, le=10.0, description="lowest relative hardness of the hardness field")
    hardness_max: Real = Field(1.4, ge=0.1, le=10.0, description="highest relative hardness of the hardness field")
    nominal_speed_rpm: Real = Field(30000.0, ge=100.0, le=1e5,
                                    description="drill speed at and above which the full cut rate applies")
    skull_stiffness_n_per_m: Real = Field(5000.0, ge=10.0, le=1e7, description="stiffness of the head in its holder")
    max_deflection_m: Real = Field(0.3e-3, ge=1e-6, le=5e-3,
                                   description="deflection beyond which the holder is solid (overload fault)")
    breach_tolerance_m: Real = Field(20e-6, ge=0.0, le=0.2e-3,
                                     description="how far the burr may press below the membrane without damage")
    break_threshold_m: Real = Field(20e-6, ge=0.0, le=0.2e-3,
                                    description="bridges thinner than this break when the flap is lifted")
    crack_thickness_m: Real = Field(10e-6, ge=0.0, le=0.1e-3,
                                    description="bone the burr cuts to less than this cracks through (thin bone "
                                                "flexes and fractures instead of being cut)")

    #: (lower, upper) field pairs that must be ordered
    ORDER: ClassVar[tuple[tuple[str, str], ...]] = (("hardness_min", "hardness_max"),)

    _ordered = order_validator(ORDER)


raise_construction_errors_as(MillingParams, MillingParameterError, "milling")   # errors name milling.<field>
