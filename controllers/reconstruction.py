"""3D reconstruction from a stereo keypoint pair: the paper's orthogonal projection model, extended.

Zhao et al. (seed 004), eq. (2)-(3), the "streamlined orthogonal projection model"::

    x = Prx (xl - cx),   y = Pry (yl - cy),   z = (xl - xr) / h + de

with (xl, yl) the keypoint in the left image and xr its column in the right image (px), Prx,
Pry in m per px in code (the paper writes pixel/mm; its numbers are mm per px), h in px of disparity
per m of depth and de an offset (m). Here it is written as

    p_mi = U @ [xl - cx, yl - cy, xl - xr] + [0, 0, de],
    U = [[prx, sxy, sxd], [0, pry, syd], [0, 0, 1/h]].

The paper's model is sxy = sxd = syd = 0. The three shear terms are our extension: with verged
cameras the left image's x moves with depth (by about sin(vergence) ~ 0.13 of it on the
paper's rig), so the paper's x is sheared against z, and no rigid transform can absorb a
shear; an estimated sxd removes it (``estimate_camera_model``).

Handedness. {Mi} is oriented like an OpenCV camera frame: x right, y down, z away from the
cameras. It must be right-handed so that a proper rotation maps it to {R} (landmark
calibration, ``controllers.calibration``). On a rig where disparity xl - xr grows towards the
cameras (the paper's and the twin's verged rigs), z growing away from the cameras means
h < 0. The paper prints h = +6.4 px/mm; the ``paper`` preset keeps the magnitude and uses
h = -6.4 px/mm. In pixel space this gives det(U) < 0, which is right: (xl, yl, xl - xr) is
itself a left-handed set of coordinates on such a rig.

Camera-model files are TOML in readable units (mm, px); a bare name such as ``"paper"`` loads
``controllers/camera_models/<name>.toml``::

    [camera_model]
    name = "paper"
    cx_px = 480.0
    cy_px = 270.0
    prx_mm_per_px = 0.03947
    pry_mm_per_px = 0.03894
    h_px_per_mm = -6.4
    de_mm = 0.0                 # optional, default 0
    shear_xy_mm_per_px = 0.0    # optional, default 0 (also shear_xd_mm_per_px, shear_yd_mm_per_px)

    [provenance]                # optional, free-form strings and numbers
    source = "..."

SI units (m, rad) in code; arrays of points are (N, 2) pixels or (N, 3) metres, and single
points of shape (2,) / (3,) are accepted and returned as such.
"""
from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.linalg import lstsq, qr, solve_triangular
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from scenes.frames import apply, make_transform
from scenes.schema import ConfigError, Reader, load_toml

MODEL_DIR = Path(__file__).parent / "camera_models"
"""Where ``load_camera_model`` looks for a camera model given by bare name."""

MIN_FIT_POINTS = 6
"""Fewest keypoint pairs ``estimate_camera_model`` accepts (12 unknowns, 3 equations each)."""

SPAN_REL_TOL = 1e-3
"""Point sets whose smallest centred singular value is below this fraction of the largest do
not span 3D well enough to estimate a camera model."""

_MM = 1e-3  # m per mm


class CameraModelError(ValueError):
    """Invalid camera-model parameters, or input from which no model can be estimated."""


@dataclass(frozen=True)
class OrthoStereoModel:
    """The orthogonal projection stereo model, p_mi = U @ [xl - cx, yl - cy, xl - xr] + [0, 0, de].

    ``cx_px``, ``cy_px``: image point (px) that maps to x = y = 0 of {Mi}; ``prx_m_per_px``,
    ``pry_m_per_px`` (> 0): size of a pixel in {Mi} (m/px); ``h_px_per_m`` (non-zero): px of
    disparity per m of z, negative when disparity grows towards the cameras (module docstring);
    ``de_m``: z offset (m); ``shear_*_m_per_px``: the upper off-diagonal terms of U (m/px), zero
    in the paper's model.
    """

    cx_px: float
    cy_px: float
    prx_m_per_px: float
    pry_m_per_px: float
    h_px_per_m: float
    de_m: float = 0.0
    shear_xy_m_per_px: float = 0.0
    shear_xd_m_per_px: float = 0.0
    shear_yd_m_per_px: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        for key in ("cx_px", "cy_px", "prx_m_per_px", "pry_m_per_px", "h_px_per_m", "de_m",
                    "shear_xy_m_per_px", "shear_xd_m_per_px", "shear_yd_m_per_px"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise CameraModelError(f"{key}={value!r} must be a finite number")
        for key in ("prx_m_per_px", "pry_m_per_px"):
            if getattr(self, key) <= 0:
                raise CameraModelError(f"{key}={getattr(self, key)!r} must be > 0 (m per px)")
        if self.h_px_per_m == 0:
            raise CameraModelError("h_px_per_m=0 must be non-zero (px of disparity per m of depth; "
                                   "negative when disparity grows towards the cameras)")

    @property
    def U(self) -> np.ndarray:
        """The upper-triangular 3x3 matrix mapping [xl - cx, yl - cy, xl - xr] (px) to {Mi} (m)."""
        return np.array([[self.prx_m_per_px, self.shear_xy_m_per_px, self.shear_xd_m_per_px],
                         [0.0, self.pry_m_per_px, self.shear_yd_m_per_px],
                         [0.0, 0.0, 1.0 / self.h_px_per_m]])

    @property
    def towards_cameras_mi(self) -> np.ndarray:
        """Unit vector in {Mi} along which disparity xl - xr grows with xl, yl fixed.

        On rigs whose disparity grows towards the cameras (the paper's, the twin's) this is the
        direction towards the cameras; (0, 0, -1) for a model without shear and with h < 0.
        """
        column = self.U[:, 2]
        return column / np.linalg.norm(column)

    def reconstruct(self, uv_left: np.ndarray, uv_right: np.ndarray) -> np.ndarray:
        """{Mi} positions (m), (N, 3) or (3,), of keypoints at ``uv_left``, ``uv_right`` (px, (N, 2) or (2,))."""
        left, single = _as_points(uv_left, 2, "uv_left")
        right, _ = _as_points(uv_right, 2, "uv_right")
        if left.shape != right.shape:
            raise CameraModelError(f"uv_left has shape {np.shape(uv_left)} and uv_right "
                                   f"{np.shape(uv_right)}: they must match")
        p = self._reconstruct(left, left[:, 0] - right[:, 0])
        return p[0] if single else p

    def reconstruct_disparity(self, uv_left: np.ndarray, disparity_px: np.ndarray) -> np.ndarray:
        """{Mi} positions (m) from left-image keypoints (px) and disparities xl - xr (px, (N,) or scalar).

        The disparity convention is OpenCV StereoSGBM's (left column minus right column).
        """
        left, single = _as_points(uv_left, 2, "uv_left")
        disparity = np.atleast_1d(np.asarray(disparity_px, dtype=float))
        if disparity.shape != (len(left),):
            raise CameraModelError(f"disparity_px has shape {np.shape(disparity_px)}, expected one "
                                   f"value per keypoint ({len(left)})")
        p = self._reconstruct(left, disparity)
        return p[0] if single else p

    def project(self, p_mi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left and right keypoints (px) of {Mi} positions (m); the exact inverse of ``reconstruct``.

        The model has no vertical disparity, so the right keypoint's row equals the left one's.
        """
        p, single = _as_points(p_mi, 3, "p_mi")
        d = solve_triangular(self.U, (p - [0.0, 0.0, self.de_m]).T).T
        xl, yl = d[:, 0] + self.cx_px, d[:, 1] + self.cy_px
        left, right = np.column_stack([xl, yl]), np.column_stack([xl - d[:, 2], yl])
        return (left[0], right[0]) if single else (left, right)

    def _reconstruct(self, left: np.ndarray, disparity: np.ndarray) -> np.ndarray:
        d = np.column_stack([left[:, 0] - self.cx_px, left[:, 1] - self.cy_px, disparity])
        return d @ self.U.T + [0.0, 0.0, self.de_m]


@dataclass(frozen=True)
class CameraModelFit:
    """Result of ``estimate_camera_model``.

    ``T_mi_to_r``: the rigid pose of {Mi} in {R} found with the model; ``residuals_m``: per point,
    the distance (m) between the mapped reconstruction and the commanded position;
    ``rms_m``: their RMS; ``n_points``: number of keypoint pairs used.
    """

    model: OrthoStereoModel
    T_mi_to_r: np.ndarray = field(repr=False)
    residuals_m: np.ndarray = field(repr=False)
    rms_m: float
    n_points: int


def estimate_camera_model(uv_left: np.ndarray, uv_right: np.ndarray, p_r: np.ndarray,
                          image_size_px: tuple[int, int] = (960, 540), paper_form: bool = False,
                          name: str = "estimated") -> CameraModelFit:
    """Estimate the model of uncalibrated cameras from drill-tip keypoints at known {R} positions.

    ``p_r`` (N, 3, m): commanded tip positions in {R}, N >= 6, spread in 3D; ``uv_left``,
    ``uv_right`` (N, 2, px): the tip's keypoints. Fits p_r = A @ [xl - cx, yl - cy, xl - xr] + b
    by linear least squares and splits A = Q @ U (QR decomposition) with Q a proper rotation and
    U upper triangular with prx, pry > 0; the sign of 1/h = U[2, 2] follows from det(A).
    cx, cy only move the origin of {Mi}, which the translation absorbs, so they are fixed at the
    image centre (W/2, H/2, as in the paper) and de = 0; b becomes the translation of T_mi_to_r.

    ``paper_form=True`` fits the paper's diagonal U (no shear) instead, with a rotation and a
    translation, by nonlinear least squares started from the linear fit: it shows what the
    paper's model can do on a given rig.
    """
    uv_left, uv_right, p_r = _check_fit_input(uv_left, uv_right, p_r)
    if len(image_size_px) != 2 or min(image_size_px) <= 0:
        raise CameraModelError(f"image_size_px={image_size_px!r} must be (width, height) > 0")
    cx, cy = image_size_px[0] / 2.0, image_size_px[1] / 2.0
    d = np.column_stack([uv_left[:, 0] - cx, uv_left[:, 1] - cy, uv_left[:, 0] - uv_right[:, 0]])
    A, b = _fit_affine(d, p_r)
    Q, U = _rotation_times_upper(A)
    if paper_form:
        Q, U, b = _fit_diagonal(d, p_r, Q, U, b)
    model = OrthoStereoModel(cx_px=cx, cy_px=cy, prx_m_per_px=float(U[0, 0]), pry_m_per_px=float(U[1, 1]),
                             h_px_per_m=float(1.0 / U[2, 2]), shear_xy_m_per_px=float(U[0, 1]),
                             shear_xd_m_per_px=float(U[0, 2]), shear_yd_m_per_px=float(U[1, 2]), name=name)
    T = make_transform(Q, b)
    residuals = model_error(model, T, uv_left, uv_right, p_r)
    return CameraModelFit(model, T, residuals, float(np.sqrt(np.mean(residuals ** 2))), len(p_r))


def model_error(model: OrthoStereoModel, T_mi_to_r: np.ndarray, uv_left: np.ndarray,
                uv_right: np.ndarray, p_r: np.ndarray) -> np.ndarray:
    """Per-point distance (m) between T_mi_to_r applied to the reconstruction and ``p_r`` ({R}, m)."""
    return np.linalg.norm(apply(T_mi_to_r, model.reconstruct(uv_left, uv_right)) - p_r, axis=-1)


def load_camera_model(path_or_name: str | Path) -> OrthoStereoModel:
    """Read a camera-model TOML file (module docstring); a bare name loads a preset from ``MODEL_DIR``.

    Raises ``scenes.schema.ConfigError`` naming every bad field (value and allowed range), an
    unknown key, invalid TOML or a missing file.
    """
    path = _model_path(path_or_name)
    data = load_toml(path)
    errors: list[str] = []
    top = Reader(data, "", errors)
    values = _read_model_table(top.sub("camera_model"), default_name=path.stem)
    errors.extend(_provenance_errors(top.raw("provenance", default={})))
    top.finish()
    if errors:
        raise ConfigError(str(path), errors)
    return OrthoStereoModel(**values)


def save_camera_model(model: OrthoStereoModel, path: str | Path,
                      provenance: dict[str, str | int | float] | None = None) -> None:
    """Write ``model`` (and free-form ``provenance``: strings and finite numbers) as TOML at ``path``.

    The format is flat, so it is written directly rather than with a TOML writer dependency.
    """
    provenance = provenance or {}
    problems = _provenance_errors(provenance)
    if problems:
        raise CameraModelError("; ".join(problems))
    fields = {"cx_px": model.cx_px, "cy_px": model.cy_px,
              "prx_mm_per_px": model.prx_m_per_px / _MM, "pry_mm_per_px": model.pry_m_per_px / _MM,
              "h_px_per_mm": model.h_px_per_m * _MM, "de_mm": model.de_m / _MM,
              "shear_xy_mm_per_px": model.shear_xy_m_per_px / _MM,
              "shear_xd_mm_per_px": model.shear_xd_m_per_px / _MM,
              "shear_yd_mm_per_px": model.shear_yd_m_per_px / _MM}
    lines = ["# Orthogonal projection stereo camera model (controllers/reconstruction.py).",
             "[camera_model]", f"name = {_toml_value(model.name)}"]
    lines += [f"{key} = {_toml_value(float(value))}" for key, value in fields.items()]
    if provenance:
        lines += ["", "[provenance]"]
        lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in provenance.items()]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _as_points(a: np.ndarray, dim: int, name: str) -> tuple[np.ndarray, bool]:
    """``a`` as a float (N, dim) array, and whether it was a single point of shape (dim,)."""
    arr = np.asarray(a, dtype=float)
    if arr.shape == (dim,):
        return arr[None, :], True
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise CameraModelError(f"{name} has shape {arr.shape}, expected ({dim},) or (N, {dim})")
    return arr, False


def _check_finite(a: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if bad.size:
        raise CameraModelError(f"{name}[{bad[0]}]={a[bad[0]].tolist()} is not finite")


def _check_spans_3d(a: np.ndarray, name: str) -> None:
    s = np.linalg.svd(a - a.mean(axis=0), compute_uv=False)
    if s[-1] <= SPAN_REL_TOL * s[0]:
        raise CameraModelError(f"{name} does not span 3D (centred singular values {s.tolist()}, the "
                               f"smallest must exceed {SPAN_REL_TOL:g} x the largest): spread the "
                               "calibration positions in depth as well as across the image")


def _check_fit_input(uv_left, uv_right, p_r) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uv_left, uv_right, p_r = (np.asarray(a, dtype=float) for a in (uv_left, uv_right, p_r))
    n = len(p_r) if p_r.ndim else 0
    if p_r.shape != (n, 3) or uv_left.shape != (n, 2) or uv_right.shape != (n, 2):
        raise CameraModelError(f"shapes uv_left {uv_left.shape}, uv_right {uv_right.shape}, p_r "
                               f"{p_r.shape}: expected (N, 2), (N, 2), (N, 3) with the same N")
    if n < MIN_FIT_POINTS:
        raise CameraModelError(f"need at least {MIN_FIT_POINTS} keypoint pairs, got {n}")
    for a, name in ((uv_left, "uv_left"), (uv_right, "uv_right"), (p_r, "p_r")):
        _check_finite(a, name)
    _check_spans_3d(p_r, "p_r")
    _check_spans_3d(np.column_stack([uv_left, uv_left[:, 0] - uv_right[:, 0]]),
                    "the keypoints (xl, yl, xl - xr)")
    return uv_left, uv_right, p_r


def _fit_affine(d: np.ndarray, p_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares A (3x3), b (3,) with p_r ~ A @ d + b."""
    coef, *_ = lstsq(np.column_stack([d, np.ones(len(d))]), p_r)
    return coef[:3].T, coef[3]


def _rotation_times_upper(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A = Q @ U with det(Q) = +1 and U upper triangular, U[0, 0] > 0, U[1, 1] > 0."""
    Q, U = qr(A)
    signs = np.sign(np.diag(U))
    signs[2] = 1.0
    Q, U = Q * signs, signs[:, None] * U
    if np.linalg.det(Q) < 0:
        Q[:, 2], U[2] = -Q[:, 2], -U[2]
    return Q, U


def _fit_diagonal(d: np.ndarray, p_r: np.ndarray, Q: np.ndarray, U: np.ndarray,
                  b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best Q, diagonal U, b for p_r ~ Q @ U @ d + b, started from the linear fit's Q, diag(U), b.

    Parameters: rotation vector, translation, log |scales|; the sign of U[2, 2] is kept.
    """
    sign_z = np.array([1.0, 1.0, np.sign(U[2, 2])])

    def residuals(x: np.ndarray) -> np.ndarray:
        scaled = d * (sign_z * np.exp(x[6:]))
        return (Rotation.from_rotvec(x[:3]).apply(scaled) + x[3:6] - p_r).ravel()

    x0 = np.concatenate([Rotation.from_matrix(Q).as_rotvec(), b, np.log(np.abs(np.diag(U)))])
    x = least_squares(residuals, x0, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    return Rotation.from_rotvec(x[:3]).as_matrix(), np.diag(sign_z * np.exp(x[6:])), x[3:6]


def _model_path(path_or_name: str | Path) -> Path:
    if isinstance(path_or_name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", path_or_name) \
            and not path_or_name.endswith(".toml"):
        path = MODEL_DIR / f"{path_or_name}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in MODEL_DIR.glob("*.toml"))
            raise ConfigError(path_or_name, [f"no camera model named {path_or_name!r} (known: {known})"])
        return path
    return Path(path_or_name)


def _read_model_table(r: Reader, default_name: str) -> dict:
    """OrthoStereoModel keyword arguments (SI) from a ``[camera_model]`` table in mm / px."""
    h = r.number("h_px_per_mm", -1e9, 1e9)
    if h == 0:
        r.errors.append(f"{r.name('h_px_per_mm')}=0 must be non-zero (px of disparity per mm of depth; "
                        "negative when disparity grows towards the cameras)")
    values = {"name": r.string("name", default=default_name),
              "cx_px": r.number("cx_px", -1e5, 1e5), "cy_px": r.number("cy_px", -1e5, 1e5),
              "prx_m_per_px": r.number("prx_mm_per_px", 1e-9, 1e3) * _MM,
              "pry_m_per_px": r.number("pry_mm_per_px", 1e-9, 1e3) * _MM,
              "h_px_per_m": h / _MM,
              "de_m": r.number("de_mm", -1e4, 1e4, default=0.0) * _MM}
    for key in ("xy", "xd", "yd"):
        values[f"shear_{key}_m_per_px"] = r.number(f"shear_{key}_mm_per_px", -1e3, 1e3, default=0.0) * _MM
    r.finish()
    return values


def _provenance_errors(table: object) -> list[str]:
    """Messages for a provenance that is not a table of strings and finite numbers."""
    if not isinstance(table, dict):
        return [f"provenance must be a table, got {table!r}"]
    return [f"provenance.{key}={value!r} must be a string or a finite number"
            for key, value in table.items()
            if isinstance(value, bool) or not isinstance(value, (str, int, float))
            or (isinstance(value, float) and not math.isfinite(value))]


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: str | int | float) -> str:
    """TOML literal of a string or finite number (JSON string escapes are valid TOML, but DEL is not
    escaped by JSON and must be in TOML)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return str(value) if isinstance(value, int) else repr(float(value))
