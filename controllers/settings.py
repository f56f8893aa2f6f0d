"""The controllers' settings, typed and bounded in one place (pydantic v2; the field types and
error messages every configuration model shares are in ``scenes.fields``).

Models: ``PremeasurementSettings`` (calibrate -> fit), ``MillingSettings`` (the milling loop;
it nests the velocity damper ``DamperParams`` as ``damper`` and the QP motion controller's
``MillingControlParams`` as ``control``, as before) and ``ControllerSettings`` (the
``[controllers]`` table of a scene file: ``premeasurement`` and ``milling``; the damper and the
motion controller are set under ``[controllers.milling.damper]`` and
``[controllers.milling.control]``, so each value has exactly one path). All are frozen; units
are SI and every name says its unit. Each field is defined once, with its bounds and
description; the scene loader and the docs (``docs/configuration.md``) read them from here.

Constructing a model with bad values raises the model's own error type, naming the field,
the value and what is allowed (``DamperParams``: ``PlanningParameterError``;
``MillingSettings``: ``MillingSetupError``; the others: ``SettingsError``, a ``ValueError``).
Validating a whole table (``ControllerSettings.model_validate(dict)``) raises pydantic's
``ValidationError``, which ``field_problems`` turns into one message per field.

Layer rule: this module imports nothing from ``twin``, ``scenarios`` or ``hw_bridge``; from
``scenes`` only ``scenes.fields`` (scene files embed these models as their ``[controllers]``
table).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from scenes.fields import FROZEN, Bool, FieldProblem, Int, Name, Real, cross_field_error, field_problems

class SettingsError(ValueError):
    """Settings with bad values; ``problems`` lists each (field, value, allowed, message)."""

    def __init__(self, problems: list["FieldProblem"], what: str = "settings"):
        self.problems = list(problems)
        super().__init__(f"{what}: " + "; ".join(p.message for p in self.problems))


class MillingSetupError(ValueError):
    """The milling cannot start (bad settings or trajectory); nothing has moved.

    Defined here (``MillingSettings`` raises it) and re-exported by ``controllers.milling``,
    which raises it for the run-time checks that need the hardware.
    """


# ----- base model --------------------------------------------------------------------------

class _SettingsMeta(type(BaseModel)):
    """Direct construction (``DamperParams(v_cut_min_m_s=0.0)``) raises the model's ``_error``;
    validating a table (``model_validate``, a nested table) keeps pydantic's ``ValidationError``
    with the full path, for ``field_problems``. (A custom ``__init__`` would not do: pydantic
    calls it for nested tables too.)"""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise cls._error(field_problems(exc, cls)) from None


class _Settings(BaseModel, metaclass=_SettingsMeta):
    """Frozen, unknown keys refused; construction errors become ``_error(problems)``."""

    model_config = FROZEN

    @classmethod
    def _error(cls, problems: list[FieldProblem]) -> Exception:
        return SettingsError(problems, cls.__name__)


# ----- the controllers' settings -----------------------------------------------------------

class PremeasurementSettings(_Settings):
    """Calibration and 3D surface fitting (paper section III). Lengths in m."""

    camera_model: Name = Field(
        "estimate", description='"estimate" (characterise the rig on a grid first) or a camera-model '
                                'file / preset name (e.g. "paper", see controllers/camera_models)')
    grid_half_extent_m: tuple[Annotated[Real, Field(gt=0, le=0.05)], Annotated[Real, Field(gt=0, le=0.05)],
                              Annotated[Real, Field(gt=0, le=0.05)]] = Field(
        (6e-3, 10e-3, 2.5e-3), description="half size (x, y, z) of the rig-characterisation grid of tip positions")
    grid_points_per_axis: tuple[Annotated[Int, Field(ge=2, le=15)], Annotated[Int, Field(ge=2, le=15)],
                                Annotated[Int, Field(ge=2, le=15)]] = Field(
        (3, 3, 3), description="grid points per axis (x, y, z) of the characterisation grid")
    grid_lift_m: Real = Field(2.5e-3, ge=0.0, le=0.02,
                              description="grid centre above the calibration setpoints' centre")
    radius_m: Real = Field(2e-3, ge=1e-3, le=4e-3,
                           description="r: radius of the circular window (the paper mills 2-4 mm; 1 mm "
                                       "is allowed for small windows, it must stay well above the burr)")
    n_points: Int = Field(32, ge=3, le=256, description="n: sampling points around the window")
    safety_offset_m: Real = Field(0.5e-3, ge=0.0, le=5e-3,
                                  description="dd: start height above the fitted surface, beyond the burr radius")
    centre_ratio: Real = Field(1.0 / 3.0, gt=0.0, lt=1.0,
                               description="l: window centre along bregma -> lambda")
    park_offset_r_m: tuple[Annotated[Real, Field(ge=-0.2, le=0.2)], Annotated[Real, Field(ge=-0.2, le=0.2)],
                           Annotated[Real, Field(ge=-0.2, le=0.2)]] = Field(
        (25e-3, 0.0, 15e-3), description="drill out of view: offset from the setpoints' centre, in {R}")
    roi_margin_m: Real = Field(1.8e-3, ge=0.0, le=0.01,
                               description="dense stereo region: circle radius + this, around the centre")
    local_refinement: Bool = Field(
        True, description="beyond the paper: re-characterise the rig on a small grid just above the window "
                          "before the final fit (the affine stereo model is ~0.1 mm off at the skull when "
                          "fitted over the whole space, ~0.04 mm locally)")
    local_grid_half_extent_m: tuple[Annotated[Real, Field(gt=0, le=0.02)], Annotated[Real, Field(gt=0, le=0.02)],
                                    Annotated[Real, Field(gt=0, le=0.02)]] = Field(
        (3e-3, 3e-3, 1e-3), description="half size (x, y, z) of the local refinement grid")
    local_grid_clearance_m: Real = Field(1e-3, ge=0.0, le=0.01,
                                         description="lowest local grid layer above the provisional surface")


class DamperParams(_Settings):
    """The multimodal velocity damper: descent speed (m/s) of each point from its completion c.

    Mode 1, approach (c < ``contact_level``): ``v_approach_m_s`` for the first
    ``approach_depth_m`` below the point's starting height, then ``v_cut_max_m_s``. The fitted
    start is rd + dd = 1 mm above the fitted surface, i.e. dd = 0.5 mm of air above first
    contact; the fast part covers that air less a 0.15 mm margin for the fit's error (measured
    RMS 0.08 mm), so the burr meets the bone at the cutting speed instead of ramming it at ~190 um
    per lap (which deflects the skull by the excess, see ``twin/milling.py``). Measured on the
    twin with perfect perception: without this mode the skull deflected 130-300 um and sprang
    back through the membrane.
    Mode 2, cutting (``contact_level`` <= c < ``through_level``): the speed falls linearly with c
    from ``v_cut_max_m_s`` to ``v_cut_min_m_s`` (> 0, so that every point finishes), so the burr
    slows as the bone thins over the dura. The depth added per lap is v times the lap period
    (3.1 s at the default 4 mm/s around r = 2 mm): 31 um at the top speed, inside the 10-50 um
    depth of cut at which cortical bone shears cleanly, and 13 um at the minimum, under the 20 um
    membrane tolerance. (15 um/s, 47 um per lap, pushed the head down by 50-75 um; where that
    push was still on when the bone gave way, the head sprang back and the burr breached.)
    Mode 3, through (c >= ``through_level``): the point cuts on at ``v_cut_min_m_s`` down to its
    over-cut below its planned height at the first through reading (or its floor), then speed 0:
    the point is done. The over-cut (issue 13; thickness sensor only, else 0, the paper's rule)
    is the bone read before the through reading less the planned descent since, less
    ``overcut_margin_m``, at most ``overcut_m``: the bone that went faster than the burr could
    cut it, i.e. that cracked away below the burr (``crack_thickness_um`` up to 25 um), leaving the
    burr that far above the membrane. The groove between two such points keeps a strip just over
    the crack thickness, 20-26 um (the flap holds above 20 um), which the over-cut takes down; a
    point the burr cut through itself read thin before and gets little or none, and a point its
    last settle found behind its plan gets none (the lag presses the head down: the burr is
    closer to the membrane than the reading says). The margin is wide because the readings
    just before a cut-through over-read by up to ~10 um (the exposed membrane is a sliver on the
    groove's uphill wall).
    ``through_level`` is below 1 because
    readings rarely saturate at exactly 1. Chosen on the twin: 0.95 left 21 um bridges (the flap
    breaks free below 20 um) even with perfect perception; with the completion CNN 0.98 declared
    points through early (22-29 um bridges) and 0.995 late (a membrane breach in a suite case);
    0.99 left 11-16 um bridges and no breach. The window between a bridge and a breach is only
    ~40 um: this threshold is the most perception-sensitive number in the loop.
    Synchronised finish (``sync_level``, issue 13): a point that is not done and reads
    c >= ``sync_level`` waits (speed 0) while any other point that is not done is still below
    ``sync_level``; once every point has reached it, all descend together through the last of
    the bone. Skilled operators bring every point of the circle to the same remaining thickness
    at the same time (seed 004, introduction); without it, a point finished early is cut again
    for many laps by the 1 mm burr while a neighbour with thicker bone below it is still
    descending 40-70 um lower, and the path between them breached the membrane 0.16-0.21 mm from
    the finished point (7 of the 22 failures of the 200-skull suite before this rule). A
    ``sync_level`` at or above ``through_level`` switches the rule off (the paper's planner).
    The hold costs a little time (milling ends when the slowest point is through in any case,
    but the points that waited still have their last bone to cut): 1.53 against 1.49 min a
    window on the 200-skull suite.
    Settle (``settle_below_m``, issue 13, with a sensor that reads the remaining thickness): the
    burr cuts at most a depth of cut per second (the bone's cut rate over its hardness), and
    where the plan descends faster than that, the uncut bone presses the head down; the excess
    (the planned height below the groove really cut) springs back into the membrane when the
    point's last bone gives way. At the low end of the plausible cut rates (150-250 um/s) the
    burr cuts ~5 um/s at a point, against the damper's 4-10 um/s, and the head was pushed down
    40-185 um. The thickness classifier cannot see that while the bone is thick (it saturates
    above ~300 um), so each point, the first time its remaining thickness reads at most
    ``settle_below_m``, holds (speed 0) until one pass of the burr over it (once a lap) has
    thinned it by at most ``settle_drop_m``: the burr has caught up with the plan while there is
    still bone below it; or for at most ``settle_max_s``. A point a pass thinned by more than
    ``resettle_drop_m`` was behind its plan and settles once more at ``resettle_below_m``, where
    the reading is precise enough to judge by ``resettle_drop_m`` (over ~100 um the reading
    drifts ~12 um a pass as the neighbouring grooves deepen). (The loop leaves out the readings
    right after a pass, ``MillingSettings.skip_after_pass_readings``.) A point that keeps up
    holds about one lap (3.1 s) per settle. ``settle_below_m = 0`` switches it off (the paper's
    planner); the completion-only sensors (the regression CNN, the oracle) never settle.
    Speed scale (``lag_target_m``, issue 13, with the settle): the settle shows how far a point
    lagged behind its plan (the thinning its first settle's judged passes measured). At the low
    end of the plausible cut rates the damper's 4-10 um/s is faster than the burr cuts, and a
    lag of 20-30 um left at a point when it went through was cut down to its plan over the next
    few laps, beside it, 20 um into the membrane. The burr's cut per pass grows as the square
    root of the lag (its chord through the bone above its path), so the lag a plan settles at
    grows as the square of its speed: once 3 points have measured their lag (the scale is
    recomputed at each further one), every cutting speed is scaled by
    sqrt(``lag_target_m`` / the upper quartile of the lags), clipped to [``min_speed_scale``, 1]
    (1: the lags are within the target). The readings' drift reads as ~5-20 um of lag where
    there is none, so fast bone is slowed to ~0.6-0.9 too. ``lag_target_m = 0`` switches it
    off.
    Required: v_approach_m_s >= v_cut_max_m_s >= v_cut_min_m_s > 0 (the speed never increases
    with c), contact_level < through_level and contact_level < sync_level.

    ``latch_done``: a point once read at c >= ``through_level`` stays done even if a later, noisy
    reading says less. A breach of the dura is worse than an unfinished point (the timeout
    catches that one and it can be finished by hand). False: "done" follows the last reading.
    Bad values raise ``PlanningParameterError`` naming the first bad field.
    """

    v_approach_m_s: Real = Field(60e-6, gt=0.0, le=0.02, description="mode 1 descent speed over the approach depth")
    approach_depth_m: Real = Field(0.35e-3, ge=0.0, le=5e-3,
                                   description="depth below the start covered at the approach speed")
    v_cut_max_m_s: Real = Field(10e-6, gt=0.0, le=2e-3, description="cutting speed at c = contact_level")
    v_cut_min_m_s: Real = Field(4e-6, gt=0.0, le=2e-3, description="cutting speed at c -> through_level (> 0)")
    contact_level: Real = Field(0.05, ge=0.0, lt=1.0, description="completion at which cutting starts")
    through_level: Real = Field(0.99, gt=0.0, le=1.0, description="completion at which a point is done")
    latch_done: Bool = Field(True, description="a point once through stays done")
    sync_level: Real = Field(0.9, gt=0.0, le=1.0,
                             description="a point at or above this completion waits (speed 0) while any point "
                                         "that is not done is below it; >= through_level: never waits")
    settle_below_m: Real = Field(150e-6, ge=0.0, le=1e-3,
                                 description="thickness sensor only: a point holds once its remaining bone first "
                                             "reads at most this, until a pass of the burr no longer thins it "
                                             "(0: never)")
    settle_drop_m: Real = Field(15e-6, ge=0.0, le=100e-6,
                                description="first settle: thinning by one pass of the burr that still counts as "
                                            "settled (the median of the readings before the pass minus that of "
                                            "the first settle_readings after it)")
    resettle_drop_m: Real = Field(8e-6, ge=0.0, le=100e-6,
                                  description="the same for the second settle, where the reading is more precise; "
                                              "a pass thinning a point by more than this marks it as behind its plan")
    resettle_below_m: Real = Field(80e-6, ge=0.0, le=1e-3,
                                   description="a point a pass thinned by more than resettle_drop_m settles again when its "
                                               "thickness first reads at most this (0: never; below settle_below_m)")
    overcut_m: Real = Field(10e-6, ge=0.0, le=50e-6,
                            description="thickness sensor only: the most a point read through descends further, at "
                                        "v_cut_min_m_s, before it is done (0: done at the first through reading, the "
                                        "paper's rule)")
    overcut_margin_m: Real = Field(10e-6, ge=0.0, le=100e-6,
                                   description="the over-cut is the bone read before the through reading, less the "
                                               "descent since, less this margin (clipped to [0, overcut_m])")
    lag_target_m: Real = Field(8e-6, ge=0.0, le=200e-6,
                               description="thickness sensor only: once 3 points have measured their lag in their first "
                                           "settle, every cutting speed is scaled by sqrt(this / the upper quartile "
                                           "of the lags), at most 1 (0: never scaled)")
    min_speed_scale: Real = Field(0.25, gt=0.0, le=1.0, description="the smallest such scale")
    settle_readings: Int = Field(3, ge=1, le=50, description="readings after a pass whose median is compared")
    settle_max_s: Real = Field(20.0, gt=0.0, le=120.0, description="longest settle of one point")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "DamperParams":
        if self.v_cut_max_m_s < self.v_cut_min_m_s:
            raise cross_field_error("v_cut_max_m_s", self.v_cut_max_m_s, ">= {sibling:v_cut_min_m_s}")
        if self.v_approach_m_s < self.v_cut_max_m_s:
            raise cross_field_error("v_approach_m_s", self.v_approach_m_s, ">= {sibling:v_cut_max_m_s}")
        if not self.contact_level < self.through_level:
            raise cross_field_error("through_level", self.through_level, "> {sibling:contact_level}")
        if not self.contact_level < self.sync_level:
            raise cross_field_error("sync_level", self.sync_level, "> {sibling:contact_level}")
        if self.settle_below_m > 0.0 and self.resettle_below_m > 0.0 and not self.resettle_below_m < self.settle_below_m:
            raise cross_field_error("resettle_below_m", self.resettle_below_m, "< {sibling:settle_below_m} or 0")
        return self

    @classmethod
    def _error(cls, problems: list[FieldProblem]) -> Exception:
        from controllers.planning.validation import PlanningParameterError  # not at import: planning imports us

        p = problems[0]
        return PlanningParameterError(p.field, p.value, p.allowed)

    @property
    def settle_levels_m(self) -> tuple[float, ...]:
        """The thicknesses (m, decreasing) at which a point settles, in order; () for none."""
        if self.settle_below_m <= 0.0:
            return ()
        return (self.settle_below_m,) + ((self.resettle_below_m,) if self.resettle_below_m > 0.0 else ())

    def speed_m_s(self, completion, descended_m=0.0, scale=1.0):
        """Descent speed (m/s, >= 0) for completion levels in [0, 1] (array of c's shape), at
        points that have descended ``descended_m`` (m) from their starting height; ``scale``
        (the planner's speed scale, ``lag_target_m``) multiplies every speed in bone, not the
        approach through air."""
        from controllers.planning.validation import PlanningParameterError

        c = np.asarray(completion, dtype=float)
        outside = ~((c >= 0.0) & (c <= 1.0))
        if np.any(outside):
            bad = np.flatnonzero(outside.ravel())[0]
            raise PlanningParameterError(f"completion[{bad}]", float(c.ravel()[bad]), "in [0, 1]")
        # interp can round an ulp outside its end values just below through_level: keep the law's range
        cutting = np.clip(np.interp(c, [self.contact_level, self.through_level],
                                    [self.v_cut_max_m_s, self.v_cut_min_m_s]), self.v_cut_min_m_s, self.v_cut_max_m_s)
        approach = np.where(np.asarray(descended_m) < self.approach_depth_m, self.v_approach_m_s,
                            self.v_cut_max_m_s * scale)
        return np.select([c < self.contact_level, c < self.through_level], [approach, cutting * scale], default=0.0)


class MillingControlParams(_Settings):
    """The QP motion controller of the milling loop."""

    gain: Real = Field(12.0, ge=0.0, le=1000.0, description="pose error feedback gain (1/s)")
    damping: Real = Field(1e-4, ge=0.0, le=10.0, description="QP damping of the joint velocities")
    velocity_scale: Real = Field(0.9, gt=0.0, le=1.0,
                                 description="fraction of each joint's velocity limit the QP may use")
    limit_margin: Real = Field(1e-3, ge=0.0, le=0.1,
                               description="rad | m kept away from the joint position limits")


class MillingSettings(_Settings):
    """The milling loop, SI units. ``initialisation``: "fitted" (each point from the 3D-fitted
    trajectory) or "equal_height" (the prior system: every point at the highest fitted start).
    Bad values raise ``MillingSetupError``."""

    initialisation: Literal["fitted", "equal_height"] = Field("fitted", description="initial height of each point")
    traverse_speed_m_s: Real = Field(4e-3, gt=0.0, le=0.05, description="burr speed around the circle")
    drill_speed_rpm: Real = Field(30000.0, gt=0.0, le=1e6,
                                  description="drill speed while milling (the drill's own maximum is checked "
                                              "at run time against the hardware)")
    perception_period_s: Real = Field(0.2, gt=0.0, le=10.0, description="time between completion readings")
    filter_window: Int = Field(3, ge=1, le=100, description="readings in each point's completion filter")
    skip_after_pass_readings: Int = Field(
        3, ge=0, le=50, description="valid readings of a point left out after each pass of the burr over it (the "
                                    "thickness classifier reads them ~15 um thin on the twin, recovering within 0.6 s)")
    cross_section_half_width_m: Real = Field(0.15e-3, ge=0.0, lt=0.5e-3,
                                             description="c_i = highest level across the groove within this "
                                                         "(inside the burr's groove)")
    cross_section_probes: Int = Field(5, ge=1, le=101, description="probes across the groove")
    stop_thickness_m: Real = Field(10e-6, ge=0.0, le=60e-6,
                                   description='thickness sensor only (completion_sensor = "thickness"): a point '
                                               'is through (c = 1) once its remaining bone reads at most this; '
                                               'below the 20 um at which a bridge no longer breaks and leaving '
                                               'margin to the 20 um the burr may go into the membrane')
    max_plausible_thickness_m: Real = Field(0.65e-3, gt=0.0, le=5e-3,
                                            description="mouse skull above cortex: 0.1-0.65 mm (reference sec. 2)")
    floor_fit_margin_m: Real = Field(0.3e-3, ge=0.0, le=5e-3,
                                     description="the virtual floor lies this much further below the fitted surface, "
                                                 "for the fit's own error: the stereo fit is off by up to ~0.3 mm at a "
                                                 "point (RMS up to 0.14 mm over a skull on the tuning seed); with the "
                                                 "floor at the fitted surface less the thickness alone, a point whose "
                                                 "surface was fitted too high could never reach the bone's bottom")
    approach_clearance_m: Real = Field(0.2e-3, ge=0.0, le=0.01,
                                       description="start this far above point 0's initial height")
    timeout_s: Real = Field(300.0, gt=0.0, le=86400.0, description="the milling stops after this long")
    perception_timeout_s: Real = Field(3.0, gt=0.0, le=600.0,
                                       description="no completion reading for this long stops the milling")
    retract_m: Real = Field(3e-3, gt=0.0, le=0.05, description="lift after the stop")
    damper: DamperParams = Field(default_factory=DamperParams, description="the velocity damper")
    control: MillingControlParams = Field(default_factory=MillingControlParams,
                                          description="the QP motion controller")

    @classmethod
    def _error(cls, problems: list[FieldProblem]) -> Exception:
        return MillingSetupError("; ".join(p.message.replace(p.field, f"MillingSettings.{p.field}", 1)
                                           for p in problems))


class PerceptionSettings(_Settings):
    """Which weights the CNNs load (``controllers.perception.weights_io.weights_path``): a shipped
    name, or the path of a ``.pt`` file, e.g. one written by ``micromill train keypoints --data``
    (fine-tuned on a lab's own images, docs/training_on_your_images.md). A relative path is taken
    from the current directory. Checked at scene load (the file exists) and fully before any
    hardware is opened (``read_weights``: format, finite values)."""

    drill_tip_weights: Name = Field("drill_tip", description='drill-tip keypoint detector: "drill_tip" (shipped) '
                                                             'or a .pt path')
    cranial_weights: Name = Field("cranial", description='bregma/lambda keypoint detector: "cranial" (shipped) '
                                                         'or a .pt path')
    completion_weights: Name = Field("completion", description='completion estimator: "completion" (shipped) or '
                                                               'a .pt path')
    completion_sensor: Literal["regression", "thickness"] = Field(
        "thickness", description='what reads c_i while milling: "thickness" (the remaining-thickness classifier on '
                                 'both cameras, stopping a point at controllers.milling.stop_thickness_m; issues 15 '
                                 'and 13) or "regression" (the completion CNN, the default before issue 13)')
    thickness_weights: Name = Field("thickness_loop", description='thickness classifier: "thickness_loop" (shipped, '
                                    'fine-tuned on the milling loop\'s own crops, issue 13), "thickness" (shipped, '
                                    'issue 15, rendered grooves only) or a .pt path; checked only when '
                                    'completion_sensor = "thickness"')

    @field_validator("drill_tip_weights", "cranial_weights", "completion_weights")
    @classmethod
    def _exists(cls, value: str) -> str:
        return _existing_weights(value)

    @model_validator(mode="after")
    def _thickness_weights_exist(self) -> "PerceptionSettings":
        if self.completion_sensor == "thickness":
            from controllers.perception.weights_io import weights_path

            path = weights_path(self.thickness_weights)
            if not path.is_file():
                raise cross_field_error("thickness_weights", self.thickness_weights,
                                        f"a weights file when {{sibling:completion_sensor}} = \"thickness\" (none "
                                        f"at {path}; a shipped name: thickness_loop or thickness, or the path of a .pt file)")
        return self


def _existing_weights(value: str) -> str:
    """``value`` when it names an existing weights file (``weights_io.weights_path``), else ValueError."""
    from controllers.perception.weights_io import weights_path

    path = weights_path(value)
    if not path.is_file():
        raise ValueError(f"no weights file at {path} (a shipped name: drill_tip, cranial, completion; or the "
                         f"path of a .pt file)")
    return value


class ControllerSettings(_Settings):
    """The ``[controllers]`` table of a scene: every controller setting, defaults as above."""

    premeasurement: PremeasurementSettings = Field(default_factory=PremeasurementSettings,
                                                   description="calibration and surface fit")
    milling: MillingSettings = Field(default_factory=MillingSettings,
                                     description="the milling loop (with .damper and .control)")
    perception: PerceptionSettings = Field(default_factory=PerceptionSettings,
                                           description="the CNNs' weights (shipped or fine-tuned)")


__all__ = ["ControllerSettings", "DamperParams", "MillingControlParams", "MillingSettings",
           "MillingSetupError", "PerceptionSettings", "PremeasurementSettings", "SettingsError"]
