"""Parameters of the parametric skull: names, SI defaults, bounds and descriptions, in one place.

``twin.skull.Skull`` builds the skull from them; the scene loader (``scenes.spec``) derives
the ``[skull]`` table's mm-valued fields, defaults and bounds from ``SkullParams`` so the two
cannot drift. Bounds cover adult mice and sensible twins.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from scenes.fields import Int, Real, order_validator, raise_construction_errors_as


class SkullParameterError(ValueError):
    """A skull parameter is outside its allowed range."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SkullParams:
    """Parameters of the skull (SI units), checked at construction (``SkullParameterError``)."""

    seed: Int = Field(0, ge=0, le=2**63 - 1, description="seeds the skull's random shape and hardness field")
    thickness_min_m: Real = Field(0.27e-3, ge=0.05e-3, le=1.0e-3, description="thinnest bone")
    thickness_max_m: Real = Field(0.51e-3, ge=0.05e-3, le=1.0e-3, description="thickest bone")
    unevenness_amplitude_m: Real = Field(0.05e-3, ge=0.0, le=0.3e-3, description="amplitude of the surface's bumps")
    dome_radius_ml_m: Real = Field(7.0e-3, ge=4e-3, le=40e-3, description="dome radius, medio-lateral")
    dome_radius_ap_m: Real = Field(14.0e-3, ge=4e-3, le=60e-3, description="dome radius, antero-posterior")
    bregma_lambda_m: Real = Field(4.2e-3, ge=3.0e-3, le=5.5e-3, description="bregma to lambda distance")
    suture_width_m: Real = Field(40e-6, ge=5e-6, le=200e-6, description="width of the sutures")
    suture_waviness_m: Real = Field(60e-6, ge=0.0, le=300e-6, description="amplitude of the sutures' waviness")
    grid_cell_m: Real = Field(10e-6, ge=2e-6, le=10e-6, description="cell size of the bone grid")
    milling_half_width_m: Real = Field(5.0e-3, ge=2e-3, le=8e-3, description="half width of the milling region")
    milling_half_length_m: Real = Field(6.0e-3, ge=3e-3, le=10e-3, description="half length of the milling region")

    #: (lower, upper) field pairs that must be ordered
    ORDER: ClassVar[tuple[tuple[str, str], ...]] = (("thickness_min_m", "thickness_max_m"),)

    _ordered = order_validator(ORDER)

    def validate(self) -> None:
        """Raise SkullParameterError listing every field outside its range (construction already
        checks; kept for callers that re-check)."""
        try:
            TypeAdapter(SkullParams).validate_python(dataclasses.asdict(self))
        except ValidationError as exc:
            raise _error(exc) from None


#: construction errors name skull.<field>, the value and its bounds
_error = raise_construction_errors_as(SkullParams, SkullParameterError, "skull")
