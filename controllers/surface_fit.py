"""3D surface fitting of the initial milling trajectory (Zhao et al., seed 004, section III-B).

Pipeline:

1. ``controllers.dense_stereo.dense_point_cloud``: the {Mi} point cloud of the bone from one
   stereo pair (SGBM, no rectification; see that module).
2. ``trajectory_centre_px``: the centre of the window in the left image,
   c = bregma + l (lambda - bregma), l = 1/3 in the paper.
3. ``fit_initial_trajectory``: the centre's 3D position from a local surface fit of the cloud;
   n points on a circle of radius r around it in the {Mi} x-y plane (eq. 5); each point's
   height z_i and unit normal n_i from a local least-squares quadric z = f(x, y) of the cloud
   (robust: one round of residual trimming); the safety offset
   p_ini,i = p_fit,i + (rd + dd) n_i (eq. 6); the points and normals mapped to {R} (eq. 7).

Frames and units: {Mi} as in ``controllers.reconstruction`` (x right, y down, z away from the
cameras), metres; pixels (u, v) with (0, 0) at the centre of the top-left pixel. This module
runs on the real robot: it never imports ``twin``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from controllers.dense_stereo import PointCloud
from controllers.reconstruction import OrthoStereoModel
from scenes.frames import apply

__all__ = ["FittedTrajectory", "SurfaceFitError", "fit_initial_trajectory", "trajectory_centre_px"]

_MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian sample -> its standard deviation


class SurfaceFitError(ValueError):
    """The point cloud cannot support the requested fit.

    ``point_index``: index of the trajectory point that failed (None for the centre or a
    problem with the input as a whole); ``reason``: what went wrong, in words.
    """

    def __init__(self, message: str, point_index: int | None = None, reason: str = ""):
        super().__init__(message)
        self.point_index = point_index
        self.reason = reason or message


@dataclass(frozen=True)
class FittedTrajectory:
    """The initial milling trajectory (eq. 5-7).

    In {Mi} (m): ``centre_mi`` (3,) the surface point under the centre pixel; ``points_fit_mi``
    (n, 3) the circle points on the fitted surface; ``normals_mi`` (n, 3) unit surface normals
    pointing towards the cameras; ``points_ini_mi`` = points_fit_mi + ``offset_m`` * normals_mi
    with offset_m = rd + dd (burr radius + safety distance): the burr centre's start positions.
    In {R}: ``points_fit_r``, ``points_ini_r``, ``normals_r`` (eq. 7, via ``T_mi_to_r``).
    Per point diagnostics: ``n_points_used`` (cloud points in the final local fit) and
    ``residual_rms_m`` (RMS of their residuals, m). ``centre_left_px``, ``radius_m``: the inputs.
    """

    centre_left_px: np.ndarray
    centre_mi: np.ndarray
    radius_m: float
    offset_m: float
    points_fit_mi: np.ndarray
    normals_mi: np.ndarray
    points_ini_mi: np.ndarray
    points_fit_r: np.ndarray
    points_ini_r: np.ndarray
    normals_r: np.ndarray
    n_points_used: np.ndarray
    residual_rms_m: np.ndarray
    T_mi_to_r: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.points_fit_mi)


def trajectory_centre_px(bregma_px, lambda_px, l: float = 1.0 / 3.0) -> np.ndarray:
    """Window centre in the image: bregma + l (lambda - bregma) (px; (2,) or (N, 2) arrays)."""
    b = np.asarray(bregma_px, dtype=float)
    lam = np.asarray(lambda_px, dtype=float)
    return b + l * (lam - b)


@dataclass(frozen=True)
class _LocalFit:
    """z = f(x, y) around (x0, y0) in {Mi}: f = z0 + c . [1, X, Y, X^2, XY, Y^2], X = (x - x0) / s."""

    x0: float
    y0: float
    scale: float
    z0: float
    coef: np.ndarray       # 6 (quadric) or 3 (plane)
    n_used: int
    rms_m: float

    def height(self, x: float, y: float) -> float:
        X, Y = (x - self.x0) / self.scale, (y - self.y0) / self.scale
        return self.z0 + float(self.coef @ _design(np.array([X]), np.array([Y]), len(self.coef))[0])

    def gradient(self, x: float, y: float) -> np.ndarray:
        X, Y = (x - self.x0) / self.scale, (y - self.y0) / self.scale
        c = self.coef
        gx, gy = c[1], c[2]
        if len(c) == 6:
            gx, gy = gx + 2 * c[3] * X + c[4] * Y, gy + c[4] * X + 2 * c[5] * Y
        return np.array([gx, gy]) / self.scale


def _design(X: np.ndarray, Y: np.ndarray, n_coef: int) -> np.ndarray:
    cols = [np.ones_like(X), X, Y]
    if n_coef == 6:
        cols += [X * X, X * Y, Y * Y]
    return np.column_stack(cols)


class _SurfaceSampler:
    """Local least-squares fits of z = f(x, y) to a {Mi} cloud, neighbourhoods by cKDTree on x, y."""

    def __init__(self, points_mi: np.ndarray, neighbourhood_m: float, surface: str, min_points: int,
                 trim_sigma: float, trim_floor_m: float, max_centroid_offset: float):
        self.xyz = points_mi
        self.tree = cKDTree(points_mi[:, :2])
        self.radius = neighbourhood_m
        self.n_coef = {"quadric": 6, "plane": 3}[surface]
        self.min_points = min_points
        self.trim_sigma = trim_sigma
        self.trim_floor = trim_floor_m
        self.max_centroid_offset = max_centroid_offset

    def fit(self, xy: np.ndarray, what: str, index: int | None) -> _LocalFit:
        """Fit around ``xy``; raises ``SurfaceFitError`` naming ``what`` (e.g. "trajectory point 3")."""
        def fail(reason: str):
            raise SurfaceFitError(f"{what} at {{Mi}} (x, y) = ({xy[0] * 1e3:.3f}, {xy[1] * 1e3:.3f}) mm: "
                                  f"{reason}", point_index=index, reason=reason)

        idx = np.asarray(self.tree.query_ball_point(xy, self.radius), dtype=np.intp)
        need = max(self.min_points, self.n_coef + 1)
        if len(idx) < need:
            fail(f"only {len(idx)} cloud points within {self.radius * 1e3:.3f} mm, need {need} "
                 "(a hole in the disparity map, or the point is outside the reconstructed region)")
        p = self.xyz[idx]
        s = self.radius
        X, Y = (p[:, 0] - xy[0]) / s, (p[:, 1] - xy[1]) / s
        off = np.hypot(X.mean(), Y.mean())
        if off > self.max_centroid_offset:
            fail(f"the {len(idx)} cloud points within {self.radius * 1e3:.3f} mm lie to one side "
                 f"(centroid {off * s * 1e3:.3f} mm away): the point is at the edge of the "
                 "reconstructed region, its height would be extrapolated")
        z0 = float(np.median(p[:, 2]))
        z = p[:, 2] - z0
        A = _design(X, Y, self.n_coef)
        keep = np.ones(len(z), bool)
        for round_ in range(2):          # fit, trim once by residual, refit
            coef, _, rank, _ = np.linalg.lstsq(A[keep], z[keep], rcond=None)
            if rank < self.n_coef:
                fail(f"the {int(keep.sum())} cloud points do not determine a {self.n_coef}-term "
                     "surface (degenerate layout)")
            res = z - A @ coef
            if round_ == 0:
                r_keep = res[keep]
                sigma = _MAD_TO_SIGMA * np.median(np.abs(r_keep - np.median(r_keep)))
                keep = np.abs(res) <= max(self.trim_sigma * sigma, self.trim_floor)
                if keep.sum() < need:
                    fail(f"only {int(keep.sum())} of {len(idx)} cloud points survive outlier "
                         f"trimming, need {need}")
        if not np.all(np.isfinite(coef)):
            fail("the local fit is not finite")
        rms = float(np.sqrt(np.mean(res[keep] ** 2)))
        return _LocalFit(float(xy[0]), float(xy[1]), s, z0, coef, int(keep.sum()), rms)


def _surface_normal(gradient: np.ndarray, towards: np.ndarray) -> np.ndarray:
    n = np.array([-gradient[0], -gradient[1], 1.0])
    n /= np.linalg.norm(n)
    return n if n @ towards >= 0 else -n


def _line_surface_parameter(local: _LocalFit, p0: np.ndarray, direction: np.ndarray) -> float:
    """t where p0 + t direction meets z = f(x, y) (Newton; exact in a few steps for a quadric)."""
    t = 0.0
    for _ in range(30):
        p = p0 + t * direction
        g = local.gradient(p[0], p[1])
        dr = direction[2] - g @ direction[:2]
        if abs(dr) < 1e-12 * np.linalg.norm(direction):
            break
        step = (p[2] - local.height(p[0], p[1])) / dr
        t -= step
        if abs(step) * np.linalg.norm(direction) < 1e-14:
            return t
    raise SurfaceFitError("the centre pixel's line of sight does not meet the fitted surface "
                          "(grazing or no intersection)", reason="degenerate centre")


def fit_initial_trajectory(cloud: PointCloud, centre_left_px, model: OrthoStereoModel,
                           T_mi_to_r: np.ndarray, radius_m: float = 2e-3, n: int = 32,
                           burr_radius_m: float = 0.5e-3, offset_m: float = 0.5e-3,
                           neighbourhood_m: float = 0.8e-3, surface: str = "quadric",
                           min_points: int = 30, centre_search_px: float = 4.0,
                           trim_sigma: float = 3.0, trim_floor_m: float = 1e-7,
                           max_centroid_offset: float = 0.4) -> FittedTrajectory:
    """The paper's initial trajectory (eq. 5-7) from a {Mi} point cloud.

    ``centre_left_px`` (2,): the window centre in the left image (``trajectory_centre_px``).
    Its 3D position is where the line of {Mi} points seen at that left pixel (all disparities)
    meets a local fit of the surface (solved by Newton's method, exact for a quadric surface).
    The ``n`` circle points x_i = r cos(2 pi i / n) + xc, y_i = r sin(2 pi i / n) + yc
    (eq. 5, r = ``radius_m``) get their height z_i and unit normal n_i (towards the cameras,
    ``model.towards_cameras_mi``) from a least-squares ``surface`` ("quadric" or "plane")
    z = f(x, y) of the cloud points within ``neighbourhood_m`` of (x_i, y_i) in x-y: fitted,
    trimmed once of residuals beyond max(``trim_sigma`` robust sigmas, ``trim_floor_m``), refitted.
    The default 0.8 mm neighbourhood (~1300 points at 0.04 mm/px) is a compromise measured on
    the twin: with sensor noise, SGBM's disparity errors are correlated over ~10 px and a 0.5 mm
    neighbourhood gave normals up to ~18 deg off (0.8 mm: ~9 deg; without noise 3 vs 2 deg);
    the quadric keeps the height unbiased on the curved skull where a plane would not.
    Offsets (eq. 6): p_ini = p_fit + (``burr_radius_m`` + ``offset_m``) n_i; eq. 7 maps points
    and normals to {R} with ``T_mi_to_r``.

    Raises ``SurfaceFitError`` (a ValueError; ``point_index`` names the trajectory point, None
    for the centre) when a neighbourhood has fewer than ``min_points`` points (before or after
    trimming), lies to one side of the point (centroid more than ``max_centroid_offset`` x
    ``neighbourhood_m`` away: extrapolation at the edge of the cloud), or is degenerate, and
    when no cloud point lies within ``centre_search_px`` of the centre pixel.
    """
    c_px = np.asarray(centre_left_px, dtype=float).reshape(-1)
    if c_px.shape != (2,) or not np.all(np.isfinite(c_px)):
        raise ValueError(f"centre_left_px={centre_left_px!r} must be a finite (2,) pixel")
    if not (np.isfinite(radius_m) and radius_m > 0):
        raise ValueError(f"radius_m={radius_m!r} must be > 0")
    if int(n) != n or n < 3:
        raise ValueError(f"n={n!r} must be an integer >= 3")
    if not (neighbourhood_m > 0 and burr_radius_m >= 0 and offset_m >= 0):
        raise ValueError(f"neighbourhood_m={neighbourhood_m!r} must be > 0, burr_radius_m="
                         f"{burr_radius_m!r} and offset_m={offset_m!r} >= 0")
    T_mi_to_r = np.asarray(T_mi_to_r, dtype=float)
    if T_mi_to_r.shape != (4, 4):
        raise ValueError(f"T_mi_to_r has shape {T_mi_to_r.shape}, expected (4, 4)")
    n = int(n)
    if surface not in ("quadric", "plane"):
        raise ValueError(f"surface={surface!r} must be 'quadric' or 'plane'")
    if len(cloud) == 0:
        raise SurfaceFitError("the point cloud is empty", reason="empty cloud")

    sampler = _SurfaceSampler(np.asarray(cloud.points_mi, float), neighbourhood_m, surface, min_points,
                              trim_sigma, trim_floor_m, max_centroid_offset)
    towards = np.asarray(model.towards_cameras_mi, float)

    # Centre: the line p(d) = reconstruct(c_px, d) meets the local surface z = f(x, y).
    near = np.linalg.norm(cloud.pixels_left - c_px, axis=1) <= centre_search_px
    if not np.any(near):
        raise SurfaceFitError(f"no cloud point within {centre_search_px} px of the centre pixel "
                              f"{c_px.tolist()}: the disparity map has a hole there or the region "
                              "of interest misses it", point_index=None, reason="no points near the centre")
    d = float(np.median(cloud.disparity_px[near]))
    p0 = model.reconstruct_disparity(c_px, d)
    direction = model.reconstruct_disparity(c_px, d + 1.0) - p0        # exact: linear in d
    xy_fit = p0[:2]
    for _ in range(4):                      # refit where the line meets the surface, if it moved
        local = sampler.fit(xy_fit, "the trajectory centre", None)
        centre = p0 + _line_surface_parameter(local, p0, direction) * direction
        moved = np.linalg.norm(centre[:2] - xy_fit)
        xy_fit = centre[:2]
        if moved <= 0.25 * neighbourhood_m:
            break
    else:
        raise SurfaceFitError("the centre's line of sight did not settle on the fitted surface "
                              f"(still moving by {moved * 1e3:.3f} mm)", reason="centre did not converge")

    ang = 2 * np.pi * np.arange(n) / n
    xy = np.column_stack([radius_m * np.cos(ang) + centre[0], radius_m * np.sin(ang) + centre[1]])
    pts, nrm = np.empty((n, 3)), np.empty((n, 3))
    used, rms = np.empty(n, int), np.empty(n)
    for i in range(n):
        f = sampler.fit(xy[i], f"trajectory point {i}", i)
        pts[i] = [xy[i, 0], xy[i, 1], f.height(*xy[i])]
        nrm[i] = _surface_normal(f.gradient(*xy[i]), towards)
        used[i], rms[i] = f.n_used, f.rms_m
    total = burr_radius_m + offset_m
    ini = pts + total * nrm
    R = T_mi_to_r[:3, :3]
    return FittedTrajectory(
        centre_left_px=c_px, centre_mi=centre, radius_m=float(radius_m), offset_m=float(total),
        points_fit_mi=pts, normals_mi=nrm, points_ini_mi=ini,
        points_fit_r=apply(T_mi_to_r, pts), points_ini_r=apply(T_mi_to_r, ini), normals_r=nrm @ R.T,
        n_points_used=used, residual_rms_m=rms, T_mi_to_r=T_mi_to_r)
