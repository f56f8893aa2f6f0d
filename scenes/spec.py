"""Typed scene description: what is where, in SI units, loaded from TOML.

A scene file (``scenes/default.toml`` is the default) places the arm, the drill, the head
holder and skull, the MSCS cameras, the lighting and the sensors. ``SceneFile`` (pydantic) is
the file's schema: every field once, with its unit in the name, bounds and description;
``load_scene`` validates a file against it, reports all problems at once (``ConfigError``) and
builds the SI ``SceneSpec``; ``overrides`` (dotted keys, e.g. ``{"skull.seed": 3}``) let
scenario suites vary any field of the schema before validation.
Sensors declare their rate, delay and noise in ``SensorsSpec`` and nowhere else. The
``[milling]`` table (bone-removal model, ``scenes.milling_params``) is optional: a scene
without it gets ``MillingParams``' defaults; its burr radius is the drill's. So do ``[safety]``
and ``[backends.*]`` (``scenes.hw_config``): the hardware side's settings, all optional, and
``[controllers]`` (``controllers.settings.ControllerSettings``, SI names): the controllers'
settings, e.g. ``[controllers.milling] traverse_speed_m_s = 4e-3``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo
from scipy.spatial.transform import Rotation

from controllers.settings import ControllerSettings
from scenes.fields import FROZEN, Int, Name, Real, cross_field_error, order_validator, resolve
from scenes.frames import make_transform
from scenes.hw_config import BackendsSpec, SafetyFile, SafetySpec
from scenes.milling_params import MillingParams
from scenes.schema import ConfigError, load_toml, validate
from scenes.skull_params import SkullParams

SCENES_DIR = Path(__file__).parent
DEFAULT_SCENE = SCENES_DIR / "default.toml"
MM, DEG = 1e-3, math.pi / 180

#: skull fields as written in scene files: (key in [skull], SkullParams field, metres per file unit)
SKULL_FIELDS_IN_FILE = [
    ("thickness_min_mm", "thickness_min_m", MM), ("thickness_max_mm", "thickness_max_m", MM),
    ("unevenness_amplitude_mm", "unevenness_amplitude_m", MM), ("dome_radius_ml_mm", "dome_radius_ml_m", MM),
    ("dome_radius_ap_mm", "dome_radius_ap_m", MM), ("bregma_lambda_mm", "bregma_lambda_m", MM),
    ("suture_width_mm", "suture_width_m", MM), ("suture_waviness_mm", "suture_waviness_m", MM),
    ("grid_cell_um", "grid_cell_m", 1e-6),
]

#: milling fields as written in scene files: (key in [milling], MillingParams field, SI per file unit)
MILLING_FIELDS_IN_FILE = [
    ("cut_rate_um_s", "cut_rate_m_s", 1e-6), ("hardness_min", "hardness_min", 1.0),
    ("hardness_max", "hardness_max", 1.0), ("nominal_speed_rpm", "nominal_speed_rpm", 1.0),
    ("skull_stiffness_n_per_mm", "skull_stiffness_n_per_m", 1e3), ("max_deflection_um", "max_deflection_m", 1e-6),
    ("breach_tolerance_um", "breach_tolerance_m", 1e-6), ("break_threshold_um", "break_threshold_m", 1e-6),
    ("crack_thickness_um", "crack_thickness_m", 1e-6),
]


@dataclass(frozen=True)
class RobotSpec:
    description_path: Path
    home_q: np.ndarray                 # (8,) rad / m
    servo_time_constant_s: float


@dataclass(frozen=True)
class DrillSpec:
    burr_radius_m: float
    neck_radius_m: float
    neck_length_m: float
    shank_radius_m: float
    shank_length_m: float
    max_speed_rpm: float


@dataclass(frozen=True)
class SkullSpec:
    """Skull parameters (see ``twin.skull.SkullParams``) and its pose on the head holder."""

    params: dict                       # SkullParams keyword arguments (SI)
    T_s_to_holder: np.ndarray


@dataclass(frozen=True)
class CameraSpec:
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    distortion: np.ndarray
    mount_error_rad: np.ndarray


@dataclass(frozen=True)
class MSCSSpec:
    target_r: np.ndarray
    working_distance_m: float
    vergence_half_angle_rad: float
    baseline_azimuth_rad: float
    width_px: int
    height_px: int
    aperture_diameter_m: float
    left: CameraSpec
    right: CameraSpec


@dataclass(frozen=True)
class LightingSpec:
    direction_s: tuple[float, float, float]
    intensity: float
    ambient: float


@dataclass(frozen=True)
class JointStateSensorSpec:
    rate_hz: float
    delay_s: float
    noise_std: float                   # rad or m, per joint unit


@dataclass(frozen=True)
class CameraSensorSpec:
    rate_hz: float
    delay_s: float
    read_noise_dn: float
    shot_noise_gain: float


@dataclass(frozen=True)
class SensorsSpec:
    """Every sensor's rate, delay and noise, in one place (dm_control style)."""

    joint_states: JointStateSensorSpec
    cameras: CameraSensorSpec


@dataclass(frozen=True)
class SceneSpec:
    source: str
    robot: RobotSpec
    drill: DrillSpec
    T_holder_to_r: np.ndarray
    skull: SkullSpec
    mscs: MSCSSpec
    lighting: LightingSpec
    sensors: SensorsSpec
    control_period_s: float
    calibration_origin_r: np.ndarray
    calibration_setpoints_r: np.ndarray   # (k, 3) offsets from the origin (m), paper's {R} setpoints
    milling: MillingParams                # bone-removal model (burr radius = the drill's)
    safety: SafetySpec                    # what hw_bridge's safety layer enforces (scenes.hw_config)
    backends: BackendsSpec                # per-backend settings ([backends.*] tables)
    controllers: ControllerSettings = ControllerSettings()   # [controllers] table (controllers.settings)

    @property
    def T_s_to_r(self) -> np.ndarray:
        """Pose of the skull frame {S} in {R}."""
        return self.T_holder_to_r @ self.skull.T_s_to_holder

    def calibration_targets_r(self) -> np.ndarray:
        """Absolute calibration targets (k, 3) in {R} (m)."""
        return self.calibration_origin_r + self.calibration_setpoints_r


# ----- the file's schema (units as written in the file) ------------------------------------

class _Table(BaseModel):
    model_config = FROZEN


def _bounded(lo: float, hi: float) -> Any:
    return Annotated[Real, Field(ge=lo, le=hi)]


def _vec(n: int, lo: float, hi: float) -> Any:
    return tuple[(_bounded(lo, hi),) * n]


def _g(x: float) -> float:
    """A bound or default converted to file units, without float noise (0.05e-3 / 1e-3 = 0.05)."""
    return float(f"{x:.12g}")


def _scaled(model: Any, name: str, scale: float, required: bool = False) -> tuple[Any, FieldInfo]:
    """The field ``name`` of the SI ``model`` in file units (SI value / ``scale``): same type,
    bounds and description, so the file's bounds cannot drift from the model's. ``required``:
    no default in the file."""
    info: FieldInfo = model.__pydantic_fields__[name]
    is_int = info.annotation is int
    kwargs: dict[str, Any] = {"description": info.description}
    for m in info.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if hasattr(m, attr):
                kwargs[attr] = getattr(m, attr) if is_int else _g(getattr(m, attr) / scale)
    default = ... if required else info.default if is_int else _g(info.default / scale)
    return (Int if is_int else Real), Field(default, **kwargs)


def _derived(name: str, model: Any, table: list[tuple[str, str, float]], doc: str, **extra: Any) -> type:
    """A file table whose fields are ``model``'s (``table``: file key, SI field, SI per file
    unit), with ``model.ORDER``'s rules under the file names."""
    fields = {key: _scaled(model, si, scale) for key, si, scale in table}
    file_name = {si: key for key, si, _ in table}
    order = order_validator((file_name[a], file_name[b]) for a, b in model.ORDER)
    return create_model(name, __base__=_Table, __doc__=doc, __validators__={"_ordered": order}, **extra, **fields)


class RobotFile(_Table):
    """``[robot]``: the arm description and its home pose."""

    description: Name = Field(description="robot description JSON, relative to scenes/ or absolute")
    home_rail_deg: Real = Field(ge=-180.0, le=180.0, description="home position of the rail joint")
    home_stage_m: Real = Field(ge=-1.0, le=1.0, description="home position of the linear stage")
    home_arm_deg: _vec(6, -360.0, 360.0) = Field(description="home positions of the six arm joints")
    servo_time_constant_s: Real = Field(0.005, ge=1e-4, le=1.0, description="first-order joint servo lag")

    @field_validator("description")
    @classmethod
    def _exists(cls, v: str) -> str:
        if not description_path(v).is_file():
            raise ValueError(f"file not found ({description_path(v)})")
        return v


_BURR_TYPE, _BURR_FIELD = _scaled(MillingParams, "burr_radius_m", MM, required=True)


class DrillFile(_Table):
    """``[drill]``: burr, neck and shank (a sphere on two cylinders) and the motor."""

    burr_radius_mm: _BURR_TYPE = _BURR_FIELD
    neck_radius_mm: Real = Field(ge=0.05, le=3.0, description="radius of the neck behind the burr")
    neck_length_mm: Real = Field(ge=0.0, le=50.0, description="length of the neck")
    shank_radius_mm: Real = Field(ge=0.1, le=5.0, description="radius of the shank")
    shank_length_mm: Real = Field(ge=1.0, le=100.0, description="length of the shank")
    max_speed_rpm: Real = Field(ge=1.0, le=1e5, description="the drill's top speed")


class HeadHolderFile(_Table):
    """``[head_holder]``: pose of the head holder in {R}."""

    position_mm: _vec(3, -5e3, 5e3) = Field(description="origin of the holder in {R}")
    yaw_deg: Real = Field(ge=-180.0, le=180.0, description="rotation about {R} z")


SkullFile = _derived(
    "SkullFile", SkullParams, SKULL_FIELDS_IN_FILE,
    "``[skull]``: the parametric skull (``SkullParams``, in mm/um) and its pose on the holder.",
    seed=_scaled(SkullParams, "seed", 1.0),
    offset_mm=(_vec(3, -100.0, 100.0), Field((0.0, 0.0, 0.0), description="origin of {S} (bregma) on the holder")),
    roll_deg=(_bounded(-45.0, 45.0), Field(0.0, description="skull roll on the holder")),
    pitch_deg=(_bounded(-45.0, 45.0), Field(0.0, description="skull pitch on the holder")),
    yaw_deg=(_bounded(-180.0, 180.0), Field(0.0, description="skull yaw on the holder")))

MillingFile = _derived(
    "MillingFile", MillingParams, MILLING_FIELDS_IN_FILE,
    "``[milling]``: the bone-removal model (``MillingParams``; the burr radius is the drill's).")


class CameraFile(_Table):
    """``[mscs.left]`` / ``[mscs.right]``: one camera's intrinsics."""

    fx_px: Real = Field(ge=100.0, le=1e6, description="focal length, x")
    fy_px: Real = Field(ge=100.0, le=1e6, description="focal length, y")
    cx_px: Real = Field(ge=0.0, le=1e4, description="principal point, x")
    cy_px: Real = Field(ge=0.0, le=1e4, description="principal point, y")
    distortion: _vec(5, -100.0, 100.0) = Field(description="OpenCV k1, k2, p1, p2, k3")
    mount_error_deg: _vec(3, -5.0, 5.0) = Field((0.0, 0.0, 0.0), description="small rotation of the mount (x, y, z)")


class MSCSFile(_Table):
    """``[mscs]``: two cameras verged on ``target_mm`` from ``working_distance_mm``."""

    target_mm: _vec(3, -5e3, 5e3) = Field(description="point both cameras look at, in {R}")
    working_distance_mm: Real = Field(ge=50.0, le=2000.0, description="distance from the target")
    vergence_half_angle_deg: Real = Field(ge=0.5, le=30.0, description="half the angle between the optical axes")
    baseline_azimuth_deg: Real = Field(ge=-360.0, le=360.0, description="baseline direction in the {R} xy plane")
    width_px: Int = Field(ge=16, le=8192, description="image width")
    height_px: Int = Field(ge=16, le=8192, description="image height")
    aperture_diameter_mm: Real = Field(ge=0.1, le=100.0, description="lens aperture (depth of field)")
    left: CameraFile = Field(description="left camera")
    right: CameraFile = Field(description="right camera")


class LightingFile(_Table):
    """``[lighting]``."""

    direction_s: _vec(3, -1.0, 1.0) = Field(description="towards the light, in {S} (z > 0: from above)")
    intensity: Real = Field(ge=0.0, le=5.0, description="directional light intensity")
    ambient: Real = Field(ge=0.0, le=2.0, description="ambient light")

    @model_validator(mode="after")
    def _upwards(self) -> "LightingFile":
        if self.direction_s[2] <= 0:
            raise cross_field_error("direction_s", list(self.direction_s), "pointing upwards (z > 0)")
        return self


class JointStatesFile(_Table):
    """``[sensors.joint_states]``."""

    rate_hz: Real = Field(ge=1.0, le=1e5, description="joint-state rate (at least the control rate)")
    delay_s: Real = Field(ge=0.0, le=1.0, description="delay of each reading")
    noise_std: Real = Field(ge=0.0, le=1e-2, description="encoder noise, in each joint's unit (rad or m)")


class CamerasSensorFile(_Table):
    """``[sensors.cameras]``."""

    rate_hz: Real = Field(ge=0.1, le=1000.0, description="frame rate")
    delay_s: Real = Field(ge=0.0, le=2.0, description="delay of each frame")
    read_noise_dn: Real = Field(ge=0.0, le=50.0, description="read noise (digital numbers)")
    shot_noise_gain: Real = Field(ge=0.0, le=10.0, description="shot noise gain")


class SensorsFile(_Table):
    """``[sensors]``: every sensor's rate, delay and noise, in one place."""

    joint_states: JointStatesFile = Field(description="joint encoders")
    cameras: CamerasSensorFile = Field(description="the MSCS cameras")


class ControlFile(_Table):
    """``[control]``."""

    period_s: Real = Field(ge=1e-4, le=0.1, description="control period of the hardware loop")


class CalibrationFile(_Table):
    """``[calibration]``: the paper's calibration setpoints, relative to ``origin_mm``."""

    origin_mm: _vec(3, -5e3, 5e3) = Field(description="origin of the setpoints in {R}")
    setpoints_mm: list[_vec(3, -1e3, 1e3)] = Field(min_length=1, max_length=1000,
                                                   description="setpoints (x, y, z) from the origin")


class SceneFile(_Table):
    """A scene file."""

    robot: RobotFile
    drill: DrillFile
    head_holder: HeadHolderFile
    skull: SkullFile
    mscs: MSCSFile
    lighting: LightingFile
    sensors: SensorsFile
    milling: MillingFile = Field(default_factory=MillingFile)
    control: ControlFile
    calibration: CalibrationFile
    safety: SafetyFile = Field(default_factory=SafetyFile)
    backends: BackendsSpec = Field(default_factory=BackendsSpec)
    controllers: ControllerSettings = Field(default_factory=ControllerSettings)

    @model_validator(mode="after")
    def _camera_model_loads(self) -> "SceneFile":
        """``controllers.premeasurement.camera_model`` is "estimate" or a model that loads (checked at
        load time: a bad name would otherwise fail every case at run time)."""
        name = self.controllers.premeasurement.camera_model
        if name == "estimate":
            return self
        from controllers.reconstruction import load_camera_model    # (heavy: only when a model is named)

        try:
            load_camera_model(name)
        except ConfigError as exc:
            why = "; ".join(exc.errors)
        except (OSError, ValueError) as exc:
            why = str(exc)
        else:
            return self
        raise cross_field_error("controllers.premeasurement.camera_model", name,
                                f'"estimate", a preset (controllers/camera_models) or a readable camera-model file '
                                f"({why})")

    @model_validator(mode="after")
    def _sensors_keep_up(self) -> "SceneFile":
        rate, period = self.sensors.joint_states.rate_hz, self.control.period_s
        if rate * period < 0.999:
            raise cross_field_error("sensors.joint_states.rate_hz", rate,
                                    f"at least the control rate 1/control.period_s = {1 / period:g} Hz")
        return self


def description_path(desc: str) -> Path:
    return Path(desc) if Path(desc).is_absolute() else SCENES_DIR / desc


# ----- loading -----------------------------------------------------------------------------

def _apply_overrides(raw: Any, overrides: dict[str, Any], errors: list[str]) -> Any:
    """``raw`` with each dotted key of ``overrides`` set; keys must name fields of ``SceneFile``
    (a table the file leaves out, such as ``[controllers]``, is created)."""
    if not isinstance(raw, dict):
        return raw
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        parts = key.split(".") if isinstance(key, str) else [repr(key)]
        node = raw
        for i, p in enumerate(parts[:-1]):
            tp, _, _ = resolve(SceneFile, tuple(parts[:i + 1]))
            if tp is None or not (isinstance(tp, type) and issubclass(tp, BaseModel)):
                errors.append(f"override {key!r}: {p!r} is not a table of the scene")
                break
            if p not in node:
                node[p] = {}
            if not isinstance(node[p], dict):
                errors.append(f"override {key!r}: {p!r} is not a table of the scene")
                break
            node = node[p]
        else:
            tp, _, _ = resolve(SceneFile, tuple(parts))
            if tp is None or not parts[-1]:
                errors.append(f"override {key!r}: the scene has no field {parts[-1]!r} there")
            else:
                node[parts[-1]] = value
    return raw


def _camera(c: CameraFile) -> CameraSpec:
    return CameraSpec(fx_px=c.fx_px, fy_px=c.fy_px, cx_px=c.cx_px, cy_px=c.cy_px,
                      distortion=np.array(c.distortion), mount_error_rad=np.array(c.mount_error_deg) * DEG)


def scene_from_dict(raw: dict, source: str = "<dict>", overrides: dict[str, Any] | None = None) -> SceneSpec:
    """Validate a parsed scene table and build the SceneSpec (raises ConfigError)."""
    errors: list[str] = []
    if overrides:
        raw = _apply_overrides(raw, overrides, errors)
    try:
        f = validate(SceneFile, raw, source)
    except ConfigError as exc:
        raise ConfigError(source, errors + exc.errors) from None
    if errors:
        raise ConfigError(source, errors)

    r = f.robot
    robot = RobotSpec(description_path(r.description),
                      np.array([r.home_rail_deg * DEG, r.home_stage_m, *(np.array(r.home_arm_deg) * DEG)]),
                      r.servo_time_constant_s)
    d = f.drill
    drill = DrillSpec(d.burr_radius_mm * MM, d.neck_radius_mm * MM, d.neck_length_mm * MM, d.shank_radius_mm * MM,
                      d.shank_length_mm * MM, d.max_speed_rpm)
    T_holder = make_transform(Rotation.from_euler("z", f.head_holder.yaw_deg * DEG).as_matrix(),
                              np.array(f.head_holder.position_mm) * MM)
    s = f.skull
    rpy = [s.roll_deg * DEG, s.pitch_deg * DEG, s.yaw_deg * DEG]
    T_s_holder = make_transform(Rotation.from_euler("xyz", rpy).as_matrix(), np.array(s.offset_mm) * MM)
    params = {"seed": s.seed}
    for key, field_name, scale in SKULL_FIELDS_IN_FILE:
        params[field_name] = getattr(s, key) * scale
    skull = SkullSpec(params, T_s_holder)
    m = f.mscs
    mscs = MSCSSpec(target_r=np.array(m.target_mm) * MM, working_distance_m=m.working_distance_mm * MM,
                    vergence_half_angle_rad=m.vergence_half_angle_deg * DEG,
                    baseline_azimuth_rad=m.baseline_azimuth_deg * DEG, width_px=m.width_px, height_px=m.height_px,
                    aperture_diameter_m=m.aperture_diameter_mm * MM, left=_camera(m.left), right=_camera(m.right))
    li = f.lighting
    lighting = LightingSpec(tuple(li.direction_s), li.intensity, li.ambient)
    js, cs = f.sensors.joint_states, f.sensors.cameras
    sensors = SensorsSpec(JointStateSensorSpec(js.rate_hz, js.delay_s, js.noise_std),
                          CameraSensorSpec(cs.rate_hz, cs.delay_s, cs.read_noise_dn, cs.shot_noise_gain))
    milling = {"burr_radius_m": drill.burr_radius_m}
    for key, field_name, scale in MILLING_FIELDS_IN_FILE:
        milling[field_name] = getattr(f.milling, key) * scale
    try:     # (the SI product of a file value at its bound could round past the SI bound)
        SkullParams(**params)
        milling_params = MillingParams(**milling)
    except ValueError as exc:
        raise ConfigError(source, [str(exc)]) from None
    return SceneSpec(source, robot, drill, T_holder, skull, mscs, lighting, sensors, f.control.period_s,
                     np.array(f.calibration.origin_mm) * MM, np.array(f.calibration.setpoints_mm, dtype=float) * MM,
                     milling_params, SafetySpec.from_file(f.safety), f.backends, f.controllers)


def load_scene(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> SceneSpec:
    """Load and validate a scene TOML file (default: ``scenes/default.toml``)."""
    path = Path(path) if path is not None else DEFAULT_SCENE
    if not path.suffix and not path.exists():
        path = SCENES_DIR / f"{path}.toml"     # a bare name such as "default"
    return scene_from_dict(load_toml(path), str(path), overrides)
