"""Typed scene description: what is where, in SI units, loaded from TOML.

A scene file (``scenes/default.toml`` is the default) places the arm, the drill, the head
holder and skull, the MSCS cameras, the lighting and the sensors. ``load_scene`` checks
every field and reports all problems at once (``ConfigError``); ``overrides`` (dotted keys,
e.g. ``{"skull.seed": 3}``) let scenario suites vary any field before validation.
Sensors declare their rate, delay and noise in ``SensorsSpec`` and nowhere else. The
``[milling]`` table (bone-removal model, ``scenes.milling_params``) is optional: a scene
without it gets ``MillingParams``' defaults; its burr radius is the drill's. So do ``[safety]``
and ``[backends.*]`` (``scenes.hw_config``): the hardware side's settings, all optional.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from scenes.frames import make_transform
from scenes.hw_config import BackendsSpec, SafetySpec, read_backends, read_safety
from scenes.milling_params import MillingParams
from scenes.schema import ConfigError, Reader, load_toml
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

    @property
    def T_s_to_r(self) -> np.ndarray:
        """Pose of the skull frame {S} in {R}."""
        return self.T_holder_to_r @ self.skull.T_s_to_holder

    def calibration_targets_r(self) -> np.ndarray:
        """Absolute calibration targets (k, 3) in {R} (m)."""
        return self.calibration_origin_r + self.calibration_setpoints_r


def _apply_overrides(raw: dict, overrides: dict[str, Any], errors: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        parts = key.split(".")
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                errors.append(f"override {key!r}: {p!r} is not a table of the scene")
                break
            node = node[p]
        else:
            if parts[-1] not in node:
                errors.append(f"override {key!r}: the scene has no field {parts[-1]!r} there")
            else:
                node[parts[-1]] = value
    return raw


def _camera(r: Reader) -> CameraSpec:
    spec = CameraSpec(
        fx_px=r.number("fx_px", 100.0, 1e6), fy_px=r.number("fy_px", 100.0, 1e6),
        cx_px=r.number("cx_px", 0.0, 1e4), cy_px=r.number("cy_px", 0.0, 1e4),
        distortion=np.array(r.vector("distortion", 5, -100.0, 100.0)),
        mount_error_rad=np.array(r.vector("mount_error_deg", 3, -5.0, 5.0, [0.0, 0.0, 0.0])) * DEG)
    r.finish()
    return spec


def scene_from_dict(raw: dict, source: str = "<dict>", overrides: dict[str, Any] | None = None) -> SceneSpec:
    """Validate a parsed scene table and build the SceneSpec (raises ConfigError)."""
    errors: list[str] = []
    if overrides:
        raw = _apply_overrides(raw, overrides, errors)
    top = Reader(raw, "", errors)

    r = top.sub("robot", required=True)
    desc = r.string("description")
    desc_path = Path(desc) if Path(desc).is_absolute() else SCENES_DIR / desc
    if desc and not desc_path.is_file():
        errors.append(f"robot.description={desc!r}: file not found ({desc_path})")
    home_q = np.array([r.number("home_rail_deg", -180.0, 180.0) * DEG, r.number("home_stage_m", -1.0, 1.0),
                       *(np.array(r.vector("home_arm_deg", 6, -360.0, 360.0)) * DEG)])
    robot = RobotSpec(desc_path, home_q, r.number("servo_time_constant_s", 1e-4, 1.0, 0.005))
    r.finish()

    d = top.sub("drill", required=True)
    drill = DrillSpec(d.number("burr_radius_mm", 0.1, 3.0) * MM, d.number("neck_radius_mm", 0.05, 3.0) * MM,
                      d.number("neck_length_mm", 0.0, 50.0) * MM, d.number("shank_radius_mm", 0.1, 5.0) * MM,
                      d.number("shank_length_mm", 1.0, 100.0) * MM, d.number("max_speed_rpm", 1.0, 1e5))
    d.finish()

    h = top.sub("head_holder", required=True)
    T_holder = make_transform(Rotation.from_euler("z", h.number("yaw_deg", -180.0, 180.0) * DEG).as_matrix(),
                              np.array(h.vector("position_mm", 3, -5e3, 5e3)) * MM)
    h.finish()

    s = top.sub("skull", required=True)
    rpy = [s.number(k, -45.0, 45.0, 0.0) * DEG for k in ("roll_deg", "pitch_deg")] + \
          [s.number("yaw_deg", -180.0, 180.0, 0.0) * DEG]
    T_s_holder = make_transform(Rotation.from_euler("xyz", rpy).as_matrix(),
                                np.array(s.vector("offset_mm", 3, -100.0, 100.0, [0.0, 0.0, 0.0])) * MM)
    defaults = SkullParams()
    params = {"seed": s.integer("seed", *SkullParams.RANGES["seed"], defaults.seed)}
    for key, field_name, scale in SKULL_FIELDS_IN_FILE:
        lo, hi = SkullParams.RANGES[field_name]
        value = s.number(key, lo / scale, hi / scale, getattr(defaults, field_name) / scale)
        params[field_name] = value * scale
    if params["thickness_min_m"] > params["thickness_max_m"]:
        errors.append(f"skull.thickness_min_mm={params['thickness_min_m'] / MM:g} exceeds "
                      f"skull.thickness_max_mm={params['thickness_max_m'] / MM:g}")
    skull = SkullSpec(params, T_s_holder)
    s.finish()

    m = top.sub("mscs", required=True)
    mscs = MSCSSpec(
        target_r=np.array(m.vector("target_mm", 3, -5e3, 5e3)) * MM,
        working_distance_m=m.number("working_distance_mm", 50.0, 2000.0) * MM,
        vergence_half_angle_rad=m.number("vergence_half_angle_deg", 0.5, 30.0) * DEG,
        baseline_azimuth_rad=m.number("baseline_azimuth_deg", -360.0, 360.0) * DEG,
        width_px=m.integer("width_px", 16, 8192), height_px=m.integer("height_px", 16, 8192),
        aperture_diameter_m=m.number("aperture_diameter_mm", 0.1, 100.0) * MM,
        left=_camera(m.sub("left", required=True)), right=_camera(m.sub("right", required=True)))
    m.finish()

    li = top.sub("lighting", required=True)
    lighting = LightingSpec(tuple(li.vector("direction_s", 3, -1.0, 1.0)), li.number("intensity", 0.0, 5.0),
                            li.number("ambient", 0.0, 2.0))
    if lighting.direction_s[2] <= 0:
        errors.append(f"lighting.direction_s={list(lighting.direction_s)} must point upwards (z > 0)")
    li.finish()

    se = top.sub("sensors", required=True)
    js = se.sub("joint_states", required=True)
    joint_states = JointStateSensorSpec(js.number("rate_hz", 1.0, 1e5), js.number("delay_s", 0.0, 1.0),
                                        js.number("noise_std", 0.0, 1e-2))
    js.finish()
    cs = se.sub("cameras", required=True)
    cameras = CameraSensorSpec(cs.number("rate_hz", 0.1, 1000.0), cs.number("delay_s", 0.0, 2.0),
                               cs.number("read_noise_dn", 0.0, 50.0), cs.number("shot_noise_gain", 0.0, 10.0))
    cs.finish()
    se.finish()

    mi = top.sub("milling")
    milling_defaults = MillingParams()
    milling = {"burr_radius_m": drill.burr_radius_m}
    for key, field_name, scale in MILLING_FIELDS_IN_FILE:
        lo, hi = MillingParams.RANGES[field_name]
        default = getattr(milling_defaults, field_name) / scale
        milling[field_name] = mi.number(key, lo / scale, hi / scale, default) * scale
    if milling["hardness_min"] > milling["hardness_max"]:
        errors.append(f"milling.hardness_min={milling['hardness_min']:g} exceeds "
                      f"milling.hardness_max={milling['hardness_max']:g}")
    mi.finish()

    c = top.sub("control", required=True)
    period = c.number("period_s", 1e-4, 0.1)
    c.finish()
    if math.isfinite(period) and math.isfinite(joint_states.rate_hz) and joint_states.rate_hz * period < 0.999:
        errors.append(f"sensors.joint_states.rate_hz={joint_states.rate_hz:g} is slower than the control "
                      f"rate 1/control.period_s={1 / period:g} Hz")

    cal = top.sub("calibration", required=True)
    origin = np.array(cal.vector("origin_mm", 3, -5e3, 5e3)) * MM
    sp = cal.raw("setpoints_mm")
    setpoints = np.zeros((0, 3))
    if (not isinstance(sp, list) or not sp
            or any(not isinstance(p, list) or len(p) != 3
                   or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in p)
                   for p in sp)):
        errors.append(f"calibration.setpoints_mm={sp!r} must be a non-empty list of [x, y, z] numbers")
    else:
        setpoints = np.array(sp, dtype=float) * MM
    cal.finish()
    safety = read_safety(top, errors)
    backends = read_backends(top, errors)
    top.finish()

    if errors:
        raise ConfigError(source, errors)
    return SceneSpec(source, robot, drill, T_holder, skull, mscs, lighting,
                     SensorsSpec(joint_states, cameras), period, origin, setpoints, MillingParams(**milling),
                     safety, backends)


def load_scene(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> SceneSpec:
    """Load and validate a scene TOML file (default: ``scenes/default.toml``)."""
    path = Path(path) if path is not None else DEFAULT_SCENE
    if not path.suffix and not path.exists():
        path = SCENES_DIR / f"{path}.toml"     # a bare name such as "default"
    return scene_from_dict(load_toml(path), str(path), overrides)
